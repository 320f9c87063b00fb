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
checkpoint's shape (or ``--arch``), so a file that converts also loads.
"""
import argparse
import logging
import os.path as osp
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


def infer_arch(state: dict):
    """The ``ARCH_ZOO`` name matching the weights' width, depth and patch, else None."""
    from tinymim.models.vit import ARCH_ZOO
    from tinymim.models.vit_weights import num_blocks

    dims, patch = state['patch_embed.proj.weight'].shape[0], state['patch_embed.proj.weight'].shape[-1]
    for name, arch in ARCH_ZOO.items():
        if (arch['embed_dims'], arch['num_layers'], arch.get('patch_size', 16)) == (dims, num_blocks(state), patch):
            return name
    return None


def build_matching_vit(state: dict, arch, img_size, grid):
    """A ViT with the options the weights imply (layer scale, relative bias, final norm,
    TinyMIM*-T's distillation token and last-block projection)."""
    from tinymim.models.vit import VisionTransformer
    from tinymim.models.vit_weights import num_blocks

    proj = state['patch_embed.proj.weight']
    table = state.get('blocks.0.attn.relative_position_bias_table')
    if arch is None:
        # Not a zoo arch: the head count changes no weight shape, so any divisor checks the shapes;
        # a relative-bias table tells the real one.
        arch = dict(embed_dims=proj.shape[0], num_layers=num_blocks(state),
                    num_heads=table.shape[1] if table is not None else 1)
    patch = proj.shape[-1]
    return VisionTransformer(
        arch=arch, patch_size=patch, img_size=img_size or (grid[0] * patch, grid[1] * patch),
        mlp_ratio=state['blocks.0.mlp.fc1.weight'].shape[0] / proj.shape[0],
        qkv_bias='blocks.0.attn.qkv.bias' in state, use_rel_pos_bias=table is not None,
        layer_scale_init_value=1.0 if 'blocks.0.ls1.gamma' in state else None,
        final_norm='norm.weight' in state, dist_token='dist_token' in state,
        last_proj_dims=state['conv1x1.1.weight'].shape[0] if 'conv1x1.1.weight' in state else None)


def convert(src: str, dst: str, to: str = 'tinymim', arch=None, img_size=None, prefix=None, grid=None) -> dict:
    from mmengine.logging import print_log
    from mmengine.runner.checkpoint import save_checkpoint

    from tinymim import __version__
    from tinymim.models.vit_weights import checkpoint_grid, load_vit_checkpoint, read_checkpoint, to_timm_state_dict

    if osp.abspath(src) == osp.abspath(dst):
        raise ValueError(f'refusing to overwrite the source checkpoint {src}')
    print_log(f'Reading {src}', logger='current')
    checkpoint = read_checkpoint(src)
    if grid is not None:  # recorded where the loader reads it
        checkpoint = dict(checkpoint, meta=dict(checkpoint.get('meta') or {}, grid_size=list(grid)))
    conv = to_timm_state_dict(checkpoint, prefix)
    arch = arch or infer_arch(conv.state_dict)
    if img_size is not None and len(img_size) == 1:
        img_size = img_size * 2
    prefix_tokens = 2 if 'dist_token' in conv.state_dict else 1  # CLS, and TinyMIM*-T's distillation token
    grid = checkpoint_grid(conv.state_dict, conv.grid, src, prefix_tokens)
    model = build_matching_vit(conv.state_dict, arch, img_size, grid)
    load_vit_checkpoint(model, checkpoint, prefix=prefix)
    dtype = conv.state_dict['patch_embed.proj.weight'].dtype  # keep fp16 files fp16
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    if to == 'timm':
        if model.blocks[0].attn.window:
            print_log("timm's VisionTransformer has no relative position bias: load these weights into "
                      'a model with one (or into tinymim)', logger='current', level=logging.WARNING)
        output = state
    else:
        output = dict(state_dict=state, meta=dict(
            format='tinymim-vit', source=osp.basename(src), source_format=str(conv.format),
            arch=arch if isinstance(arch, str) else None, embed_dims=model.embed_dims,
            num_layers=model.num_layers, patch_size=model.patch_size, grid_size=list(model.grid_size),
            tinymim_version=__version__))
    save_checkpoint(output, dst)
    size_mb = sum(v.numel() * v.element_size() for v in state.values()) / 2**20
    print_log(f'Wrote {dst} ({to} format, {len(state)} tensors, {size_mb:.1f} MiB)', logger='current')
    return output


def main(argv=None):
    args = parse_args(argv)
    convert(args.src, args.dst, args.to, args.arch, args.img_size, args.prefix, args.grid)


if __name__ == '__main__':
    sys.exit(main())
