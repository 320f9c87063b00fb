"""What ``tools/train.py`` and ``tools/test.py`` share: checking a checkpoint
path, loading a config from the command line and building its runner, as
mmseg's tools do."""
import argparse
import os
import os.path as osp
from typing import Optional, Sequence

from mmengine.config import Config


def parse_tool_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Add ``--launcher`` and ``--local_rank`` (also ``--local-rank``), as
    mmseg's tools take them, and parse the command line; export
    ``LOCAL_RANK`` when a launcher passed only ``--local_rank``
    (``torch.distributed.launch``)."""
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def check_checkpoint_path(path: str, what: str) -> None:
    """Fail early, naming ``what``, when a local checkpoint file is missing.
    URLs pass: mmengine's loader fetches them."""
    if '://' not in path and not osp.isfile(path):
        raise FileNotFoundError(f'{what} {path} does not exist')


def load_tool_config(path: str, launcher: str = 'none', cfg_options: Optional[dict] = None,
                     work_dir: Optional[str] = None) -> Config:
    """The config with ``--cfg-options`` merged and a work_dir chosen
    (``--work-dir``, else the config's, else ``work_dirs/<config name>``)."""
    cfg = Config.fromfile(path)
    cfg.launcher = launcher
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(path))[0])
    return cfg


def build_runner(cfg: Config):
    """The config's ``runner_type`` (tinymim configs: ``TinyMIMRunner``) or mmengine's ``Runner``."""
    if 'runner_type' in cfg:
        from mmseg.registry import RUNNERS
        return RUNNERS.build(cfg)
    from mmengine.runner import Runner
    return Runner.from_cfg(cfg)
