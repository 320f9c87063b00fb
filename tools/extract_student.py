"""Write the bare student weights (timm keys) of a TinyMIM distillation checkpoint.

    python tools/extract_student.py work_dirs/RUN/epoch_300.pth tinymim_vit-small.pth

The output is ``{'state_dict': weights}`` (``--wrap model`` for MAE's
``{'model': ...}``, ``--wrap none`` for a plain state dict). tinymim loads the
training checkpoint itself just as well (as a teacher or a backbone); this is
for other tools (timm, mmpretrain) and for a smaller file without optimizer state.
"""
import argparse
import os
import os.path as osp
import sys

import torch
from mmengine.logging import print_log

import tinymim  # noqa: F401  (safe globals for weights-only loading of mmengine checkpoints)
from tinymim.models.vit_weights import read_checkpoint, to_timm_state_dict


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Extract the student ViT from a TinyMIM distillation checkpoint')
    parser.add_argument('checkpoint', help='distillation checkpoint written by the Runner')
    parser.add_argument('out', help='output file')
    parser.add_argument('--wrap', choices=['state_dict', 'model', 'none'], default='state_dict',
                        help="container key of the output (default state_dict; 'none' for a plain state dict)")
    return parser.parse_args(argv)


def extract_student(checkpoint: dict) -> dict:
    """The ``student.`` weights of a distillation checkpoint, prefix stripped."""
    return to_timm_state_dict(checkpoint, prefix='student.').state_dict


def main(argv=None):
    args = parse_args(argv)
    weights = extract_student(read_checkpoint(args.checkpoint))
    out = weights if args.wrap == 'none' else {args.wrap: weights}
    if osp.dirname(args.out):
        os.makedirs(osp.dirname(args.out), exist_ok=True)
    torch.save(out, args.out)
    params = sum(v.numel() for v in weights.values())
    print_log(f'wrote {len(weights)} student tensors ({params / 1e6:.2f} M values) to {args.out}', logger='current')


if __name__ == '__main__':
    sys.exit(main())
