"""timm models with our ViT's shape and weights: the independent references of the model tests."""
import torch
import torch.nn as nn
from timm.layers import RelPosBias
from timm.models.vision_transformer import VisionTransformer as TimmViT
from timm.models.vision_transformer_relpos import RelPosBlock

from tinymim.models import VisionTransformer

TABLE = 'attn.relative_position_bias_table'


def perturb_(model: nn.Module, std: float = 0.02) -> nn.Module:
    """Random biases, norms, layer scales and tokens too (Linear/conv weights are random already)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() < 2 or name in ('cls_token', 'pos_embed'):
                p.add_(torch.randn_like(p) * std)
    return model.eval()


def relpos_block_fn(window):
    """timm's ``VisionTransformer`` ``block_fn`` for timm's BEiT-style relative-bias block
    (``RelPosBlock`` with ``RelPosBias``, CLS entries included) over ``window``."""
    def block_fn(dim, num_heads, mlp_ratio, qkv_bias, init_values, drop_path, norm_layer, act_layer,
                 device=None, dtype=None, **_):
        return RelPosBlock(dim, num_heads, mlp_ratio, qkv_bias, init_values=init_values, drop_path=drop_path,
                           norm_layer=norm_layer, act_layer=act_layer, device=device, dtype=dtype,
                           rel_pos_cls=lambda **kw: RelPosBias(window_size=window, prefix_tokens=1, **kw))
    return block_fn


def twin_name(name: str) -> str:
    """Our parameter name -> the relative-bias twin's (the bias table sits in ``attn.rel_pos``)."""
    return name.replace(TABLE, 'attn.rel_pos.relative_position_bias_table')


def timm_twin(model: VisionTransformer, img_size, rel_pos_bias: bool = False, **kwargs) -> TimmViT:
    """timm's ViT with the same shape and weights (timm accepts our state dict as is).

    Without ``rel_pos_bias`` it is timm's plain ViT, our relative-bias tables
    left out, built on the meta device and given our tensors, so timm's own
    init costs nothing. With it, each block is timm's ``RelPosBlock`` and
    gets our tables.
    """
    common = dict(img_size=img_size, patch_size=model.patch_size, embed_dim=model.embed_dims,
                  depth=model.num_layers, num_heads=model.num_heads, num_classes=0,
                  final_norm=model.norm is not None, **kwargs)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if rel_pos_bias:
        twin = TimmViT(block_fn=relpos_block_fn(model.blocks[0].attn.window), **common)
        twin.to(model.pos_embed.dtype).load_state_dict({twin_name(k): v for k, v in state.items()})
        return twin.eval()
    twin = TimmViT(weight_init='skip', device='meta', **common)
    twin.load_state_dict({k: v for k, v in state.items() if 'relative_position' not in k}, assign=True)
    return twin.eval()


def timm_block_outputs(twin: TimmViT, x: torch.Tensor) -> list:
    tokens = twin.norm_pre(twin._pos_embed(twin.patch_embed(x)))
    outs = []
    for blk in twin.blocks:
        tokens = blk(tokens)
        outs.append(tokens)
    return outs
