"""Checkpoint conversions behind ``tools/convert_checkpoint.py`` and ``tools/extract_student.py``.

``convert_checkpoint`` reads a ViT checkpoint of any format ``tinymim.models.vit_weights``
accepts and writes it in ours or timm's; the weights are checked by loading them strictly
into a ViT of the checkpoint's shape (or ``arch``), so a file that converts also loads.
``extract_student`` takes the student of a distillation checkpoint.
"""
import logging
import os
import os.path as osp
from typing import Optional, Sequence, Union

import torch
from mmengine.logging import print_log

from ..models.vit import ARCH_ZOO, VisionTransformer
from ..models.vit_weights import (
    checkpoint_grid,
    load_vit_checkpoint,
    num_blocks,
    read_checkpoint,
    to_timm_state_dict,
)
from ..version import __version__


def infer_arch(state: dict) -> Optional[str]:
    """The ``ARCH_ZOO`` name matching timm-keyed weights' width, depth and patch size, else None."""
    dims, patch = state['patch_embed.proj.weight'].shape[0], state['patch_embed.proj.weight'].shape[-1]
    for name, arch in ARCH_ZOO.items():
        if (arch['embed_dims'], arch['num_layers'], arch.get('patch_size', 16)) == (dims, num_blocks(state), patch):
            return name
    return None


def checkpoint_arch(checkpoint: str) -> str:
    """The ``ARCH_ZOO`` name of a ViT checkpoint file; raises, naming its shape, if it is none of them."""
    state = to_timm_state_dict(read_checkpoint(checkpoint)).state_dict
    if 'cls_token' not in state or 'patch_embed.proj.weight' not in state:
        raise ValueError(f'{checkpoint} has no cls_token: not a ViT checkpoint tinymim can use as a teacher')
    arch = infer_arch(state)
    if arch is None:
        width, depth = state['cls_token'].shape[-1], num_blocks(state)
        raise ValueError(f'{checkpoint} is a ViT of width {width} and depth {depth}, none of the standard sizes '
                         f'{ {n: (a["embed_dims"], a["num_layers"]) for n, a in ARCH_ZOO.items()} }')
    return arch


def build_matching_vit(state: dict, arch, img_size, grid) -> VisionTransformer:
    """A ViT with the options the weights imply (layer scale, relative bias, final norm,
    TinyMIM*-T's distillation token and last-block projection)."""
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


def convert_checkpoint(src: str, dst: str, to: str = 'tinymim', arch: Union[str, dict, None] = None,
                       img_size: Optional[Sequence[int]] = None, prefix: Optional[str] = None,
                       grid: Optional[Sequence[int]] = None) -> dict:
    """Write the ViT weights of ``src`` to ``dst`` and return what was written.

    ``to='tinymim'``: ``{'state_dict': timm keys, 'meta': {...}}``; ``to='timm'``: a plain state
    dict. ``img_size`` (H [W]) resizes the position embedding and relative-bias tables; ``grid``
    (rows, columns) names the token grid of a checkpoint trained on non-square inputs that records none.
    """
    from mmengine.runner.checkpoint import save_checkpoint

    if osp.abspath(src) == osp.abspath(dst):
        raise ValueError(f'refusing to overwrite the source checkpoint {src}')
    print_log(f'Reading {src}', logger='current')
    checkpoint = read_checkpoint(src)
    if grid is not None:  # recorded where the loader reads it
        checkpoint = dict(checkpoint, meta=dict(checkpoint.get('meta') or {}, grid_size=list(grid)))
    conv = to_timm_state_dict(checkpoint, prefix)
    arch = arch or infer_arch(conv.state_dict)
    if img_size is not None and len(img_size) == 1:
        img_size = list(img_size) * 2
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
    elif to == 'tinymim':
        output = dict(state_dict=state, meta=dict(
            format='tinymim-vit', source=osp.basename(src), source_format=str(conv.format),
            arch=arch if isinstance(arch, str) else None, embed_dims=model.embed_dims,
            num_layers=model.num_layers, patch_size=model.patch_size, grid_size=list(model.grid_size),
            tinymim_version=__version__))
    else:
        raise ValueError(f"to must be 'tinymim' or 'timm', got {to!r}")
    save_checkpoint(output, dst)
    size_mb = sum(v.numel() * v.element_size() for v in state.values()) / 2**20
    print_log(f'Wrote {dst} ({to} format, {len(state)} tensors, {size_mb:.1f} MiB)', logger='current')
    return output


def extract_student(checkpoint: dict) -> dict:
    """The ``student.`` weights of a distillation checkpoint, prefix stripped."""
    return to_timm_state_dict(checkpoint, prefix='student.').state_dict


def save_student(checkpoint: str, out: str, wrap: str = 'state_dict') -> dict:
    """Write the student of the distillation checkpoint file ``checkpoint`` to ``out``.

    ``wrap``: the container key (``'state_dict'``; ``'model'`` as MAE writes; ``'none'`` for a plain
    state dict). Returns the weights.
    """
    if wrap not in ('state_dict', 'model', 'none'):
        raise ValueError(f"wrap must be 'state_dict', 'model' or 'none', got {wrap!r}")
    weights = extract_student(read_checkpoint(checkpoint))
    if osp.dirname(out):
        os.makedirs(osp.dirname(out), exist_ok=True)
    torch.save(weights if wrap == 'none' else {wrap: weights}, out)
    params = sum(v.numel() for v in weights.values())
    print_log(f'wrote {len(weights)} student tensors ({params / 1e6:.2f} M values) to {out}', logger='current')
    return weights
