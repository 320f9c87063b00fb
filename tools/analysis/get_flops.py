"""Parameters and FLOPs of segmentors with mmengine's ``get_model_complexity_info``.

    python tools/analysis/get_flops.py CONFIG [--shape 512 512]
    python tools/analysis/get_flops.py --all [--shape 512 512]   # every config in mmseg_configs/upernet

Counted for inference on one image: backbone, neck and decode head (the
auxiliary head only trains). FLOPs follow mmengine/fvcore: one multiply-add
counts as one FLOP. mmengine has no rule for ``scaled_dot_product_attention``
(the ViT's attention), so this tool adds one: Q@K^T and attn@V, B*H*N*M*(d + d_v).
"""
import argparse
import glob
import os.path as osp

import torch
from mmengine.analysis import complexity_analysis, get_model_complexity_info
from mmengine.analysis.jit_handles import get_shape
from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope

TOOLS_DIR = osp.dirname(osp.dirname(osp.abspath(__file__)))
# repository layout, then the layout mim installs (tinymim/.mim/{tools,configs})
CONFIG_DIRS = [osp.join(TOOLS_DIR, '..', 'mmseg_configs', 'upernet'), osp.join(TOOLS_DIR, '..', 'configs', 'upernet')]


def sdpa_flop_jit(inputs, outputs) -> int:
    """MACs of ``scaled_dot_product_attention``: Q@K^T plus attn@V."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    *batch, n, d = q
    m, dv = k[-2], v[-1]
    return int(torch.Size(batch).numel()) * n * m * (d + dv)


complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS.setdefault('aten::scaled_dot_product_attention', sdpa_flop_jit)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Parameters and FLOPs of a segmentor')
    parser.add_argument('config', nargs='?', help='config file (omit with --all)')
    parser.add_argument('--all', nargs='?', const='', metavar='DIR',
                        help='a table for every config in DIR (default: the upernet configs)')
    parser.add_argument('--shape', type=int, nargs='+', default=[512, 512], help='input H [W]')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override settings in the config')
    args = parser.parse_args(argv)
    if (args.config is None) == (args.all is None):
        parser.error('give either CONFIG or --all')
    if len(args.shape) not in (1, 2):
        parser.error(f'--shape takes H or H W, got {args.shape}')
    return args


def complexity(config: str, shape, cfg_options=None) -> dict:
    from mmseg.registry import MODELS
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    model.auxiliary_head = None  # inference cost; mmseg's get_flops does the same
    model.eval()
    inputs = torch.rand(1, 3, *shape)
    # no_grad: with autograd on, the ViT takes its training paths (custom autograd functions for
    # attention with a trainable bias and for the MLP), which the counter cannot see into.
    with torch.no_grad():
        info = get_model_complexity_info(model, inputs=(inputs,), show_table=False, show_arch=False)
    backbone = sum(p.numel() for p in model.backbone.parameters())
    return dict(config=osp.splitext(osp.basename(config))[0], params=info['params'], backbone_params=backbone,
                flops=info['flops'])


def format_table(rows, shape) -> str:
    lines = [f'| config | params (M) | backbone params (M) | GFLOPs at {shape[0]}x{shape[1]} |', '|---|---|---|---|']
    lines += [f'| {r["config"]} | {r["params"] / 1e6:.1f} | {r["backbone_params"] / 1e6:.1f} | '
              f'{r["flops"] / 1e9:.1f} |' for r in rows]
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    shape = args.shape * 2 if len(args.shape) == 1 else args.shape
    if args.all is not None:
        folder = args.all or next((d for d in CONFIG_DIRS if osp.isdir(d)), CONFIG_DIRS[0])
        configs = sorted(glob.glob(osp.join(folder, '*.py')))
        if not configs:
            raise FileNotFoundError(f'no configs in {folder}')
    else:
        configs = [args.config]
    rows = []
    for config in configs:
        rows.append(complexity(config, shape, args.cfg_options))
        print_log(f'{rows[-1]["config"]}: {rows[-1]["params"] / 1e6:.2f} M params, '
                  f'{rows[-1]["flops"] / 1e9:.2f} GFLOPs', logger='current')
    print(format_table(rows, shape))
    return rows


if __name__ == '__main__':
    main()
