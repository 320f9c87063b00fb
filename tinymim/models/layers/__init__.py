"""Building blocks of the ViT (timm's ``layers`` split): attention, the MLP,
and the autograd functions that keep fewer activations for backward."""
from .attention import ATTN_IMPLS, Attention, LayerScale, PatchEmbed, add_residual, check_heads
from .chunked_relpos_attention import chunked_relpos_attention
from .layernorm_linear import layernorm_linear
from .mlp import Mlp
from .recompute_linear import recompute_linear

__all__ = ['ATTN_IMPLS', 'Attention', 'LayerScale', 'Mlp', 'PatchEmbed', 'add_residual', 'check_heads',
           'chunked_relpos_attention', 'layernorm_linear', 'recompute_linear']
