"""Convert a ViT checkpoint of any supported format to ours or to timm's.

Supported inputs are those of ``tinymim.models.vit_weights``: official MAE /
TinyMIM files (``TinyMIM-FT-Tstar.pth`` included: the ViT keeps its
distillation token and ``conv1x1``), timm state dicts, mmseg MAE / BEiT /
VisionTransformer checkpoints and the reference's mmseg 0.x segmentation
checkpoints (the backbone of a whole segmentor; its pyramid and heads are
not ViT weights), our distillation checkpoints (the student's weights) and
files with ``module.``/``backbone.``/``student.``/``encoder.`` prefixes.

    python tools/convert_checkpoint.py mae_pretrain_vit_base.pth vit-b.pth
    python tools/convert_checkpoint.py upernet_beit.pth beit-timm.pth --to timm
    python tools/convert_checkpoint.py distill.pth vit-s-512.pth --arch small --img-size 512

The weights are checked by loading them strictly into a ViT of the
checkpoint's shape (or ``--arch``), so a file that converts also loads
(``tinymim.apis.convert_checkpoint``).
"""
import argparse
import sys

# Heavy imports (torch, mmseg) wait until the arguments are parsed, so --help is instant.


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert a ViT checkpoint (official MAE/TinyMIM, timm, mmseg MAE/BEiT/ViT, mmengine, '
                    'our distiller) to the tinymim format or to a plain timm state dict.')
    parser.add_argument('src', help='checkpoint to convert (local path or any mmengine fileio URI)')
    parser.add_argument('dst', help='where to write the converted checkpoint')
    parser.add_argument('--to', choices=['tinymim', 'timm'], default='tinymim',
                        help="'tinymim': {'state_dict': timm keys, 'meta': {...}} (default); "
                             "'timm': a plain state dict for timm's VisionTransformer")
    parser.add_argument('--arch', help='check against this arch (tiny/small/base/large/huge); default: inferred '
                                       'from the weights, recorded in the meta when it matches the zoo')
    parser.add_argument('--img-size', type=int, nargs='+', metavar='SIZE',
                        help='resize pos_embed and relative-bias tables for this input size (H [W]); '
                             "default: keep the checkpoint's grid")
    parser.add_argument('--prefix', help="take the weights under this prefix (e.g. 'student.'); "
                                         'default: detected')
    parser.add_argument('--grid', type=int, nargs=2, metavar=('H', 'W'),
                        help='the token grid (patch rows, columns) the checkpoint was trained for, when it was '
                             'trained on non-square inputs and records no meta.grid_size; default: its '
                             'meta.grid_size, else square')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from tinymim.apis import convert_checkpoint
    convert_checkpoint(args.src, args.dst, args.to, args.arch, args.img_size, args.prefix, args.grid)


if __name__ == '__main__':
    sys.exit(main())
