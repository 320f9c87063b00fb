"""Process-group setup for distributed runs without a GPU (gloo; torchrun or Slurm launchers).

mmengine's ``init_dist`` calls ``torch.cuda.set_device`` and defaults to nccl, both of
which fail on a CPU-only machine; ``TinyMIMRunner.setup_env`` calls ``setup_cpu_dist``
there instead.
"""
import datetime
import logging
import os
import subprocess

import torch
import torch.distributed as torch_dist
from mmengine.logging import print_log


def cuda_usable() -> bool:
    return torch.cuda.is_available() and torch.cuda.device_count() > 0


def _slurm_to_torchrun_env() -> None:
    """Set the variables torchrun would set, from srun's."""
    os.environ.setdefault('RANK', os.environ['SLURM_PROCID'])
    os.environ.setdefault('WORLD_SIZE', os.environ['SLURM_NTASKS'])
    os.environ.setdefault('LOCAL_RANK', os.environ.get('SLURM_LOCALID', '0'))
    os.environ.setdefault('MASTER_PORT', '29500')
    if 'MASTER_ADDR' not in os.environ:
        nodes = subprocess.getoutput(f'scontrol show hostname {os.environ["SLURM_NODELIST"]}')
        os.environ['MASTER_ADDR'] = nodes.splitlines()[0]


def init_cpu_process_group(launcher: str, dist_cfg: dict) -> None:
    """Start a gloo process group for the ``pytorch`` (torchrun) or ``slurm`` launcher."""
    if launcher == 'slurm':
        _slurm_to_torchrun_env()
    elif launcher != 'pytorch':
        raise ValueError(f'launcher {launcher!r} is not supported without a GPU; use pytorch or slurm')
    kwargs = {}
    if dist_cfg.get('timeout') is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=dist_cfg['timeout'])
    torch_dist.init_process_group(backend='gloo', rank=int(os.environ['RANK']),
                                  world_size=int(os.environ['WORLD_SIZE']), **kwargs)


def setup_cpu_dist(launcher: str, env_cfg: dict) -> None:
    """Start the gloo process group (once), warning when the config asked for another backend."""
    dist_cfg = env_cfg.get('dist_cfg', {})
    backend = dist_cfg.get('backend', 'nccl')
    if backend != 'gloo':
        print_log(f'No GPU: using the gloo backend instead of {backend}.', logger='current', level=logging.WARNING)
    if not torch_dist.is_initialized():
        init_cpu_process_group(launcher, dist_cfg)
