"""The pieces of a ViT block other than the MLP: patch embedding, multi-head
self-attention with an optional BEiT relative position bias, and the
residual connection with drop path.

``LayerScale`` is timm's (same ``gamma`` key); ``PatchEmbed``, ``Attention``
and ``add_residual`` are our own where timm's differ on purpose, as each
docstring says.
"""
from typing import Callable, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, LayerScale

from ..pos_embed import relative_bias_table_size, relative_position_index, resize_relative_bias_table
from .chunked_relpos_attention import chunked_relpos_attention
from .layernorm_linear import layernorm_linear
from .recompute_linear import recompute_linear

ATTN_IMPLS = ('auto', 'chunked', 'sdpa')

__all__ = ['ATTN_IMPLS', 'Attention', 'LayerScale', 'PatchEmbed', 'add_residual', 'check_heads']


def check_heads(embed_dims: int, num_heads: int, what: str = 'num_heads') -> None:
    """A clear error when ``num_heads`` does not split the width evenly."""
    if num_heads <= 0 or embed_dims % num_heads:
        raise ValueError(f'{what}={num_heads} does not divide the width embed_dims={embed_dims}')


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens; any input size divisible by the patch.

    Ours rather than timm's: it takes any divisible size without a fixed
    ``img_size``, returns the token grid the blocks' relative bias needs, and
    names the padding fix when the size does not divide.
    """

    def __init__(self, patch_size: int, in_channels: int, embed_dims: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, embed_dims, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        h, w = x.shape[-2:]
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f'input size {h}x{w} is not divisible by the patch size {p}; '
                             'resize or pad the image (mmseg data preprocessors pad with size_divisor)')
        x = self.proj(x)
        return x.flatten(2).transpose(1, 2), (h // p, w // p)


class Attention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention``.

    Ours rather than timm's: it takes the block's norm and layer scale to fuse
    them with its projections, splits Q/K/V into any head count for
    relations, and runs BEiT's bias with a bias gradient on the CPU.

    With ``window`` set, a BEiT relative position bias (zero-initialised) is
    added as the attention mask; it is bicubically resized when the token
    grid differs from the window it was built for.

    ``attn_impl`` chooses how attention runs while the bias table trains:
    ``'chunked'`` (``chunked_relpos_attention.py``: no B×H×N×N maps kept for
    backward), ``'sdpa'``, or ``'auto'``: chunked on CPU, where SDPA has no
    fused kernel with a bias gradient, and SDPA on other devices. Without a
    bias gradient (inference, a frozen table), attention dropout or fp16/bf16
    inputs, SDPA always runs.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.,
                 proj_drop: float = 0., window: Optional[Tuple[int, int]] = None, attn_impl: str = 'auto',
                 num_prefix_tokens: int = 1):
        super().__init__()
        check_heads(dim, num_heads)
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f'attn_impl must be one of {ATTN_IMPLS}, got {attn_impl!r}')
        self.attn_impl = attn_impl
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.window = tuple(window) if window else None
        self.num_prefix_tokens = num_prefix_tokens
        if self.window:
            self.relative_position_bias_table = nn.Parameter(
                torch.zeros(relative_bias_table_size(self.window, num_prefix_tokens), num_heads))
            self.register_buffer('relative_position_index', relative_position_index(self.window, num_prefix_tokens),
                                 persistent=False)

    def split_heads(self, x: torch.Tensor, num_heads: Optional[int] = None, norm: Optional[nn.LayerNorm] = None):
        """Q, K, V of ``x`` (of ``norm(x)`` when given) as (B, heads, N, dim/heads) each.

        ``num_heads`` may differ from the block's own: splitting has no
        parameters, so any divisor of the width gives valid relations.
        """
        b, n, c = x.shape
        heads = num_heads or self.num_heads
        if heads != self.num_heads:
            check_heads(c, heads, 'relation heads')
        qkv = self.qkv(x) if norm is None else layernorm_linear(x, norm, self.qkv)
        qkv = qkv.reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        return qkv.unbind(0)

    def relative_bias(self, grid: Tuple[int, int]) -> torch.Tensor:
        """The (heads, N, N) bias, contiguous.

        Gathering rows of the transposed table gives the heads-first layout
        directly; ``table[index].permute(2, 0, 1)`` would be a strided view
        that SDPA copies on every call (docs/performance.md). Without autograd (inference, sliding
        windows) the bias is cached until the table's values change. They
        are compared with a copy of the table (a few thousand numbers per
        block), not by the tensor's version counter: fused AdamW and
        ``param.data`` updates (EMA weight swaps) change values without
        bumping it. Compiled code builds the bias in the graph instead: the
        cache check cannot be traced, and would break the graph per block.
        """
        if torch.compiler.is_compiling():
            return self.gather_bias(grid)
        table = self.relative_position_bias_table.detach()
        key = (tuple(grid), table.dtype, table.device, torch.is_inference_mode_enabled())
        cache = getattr(self, '_bias_cache', None)
        if torch.is_grad_enabled():
            self._bias_cache = None
            return self.gather_bias(grid)
        if cache is not None and cache[0] == key and torch.equal(cache[1], table):
            return cache[2]
        bias = self.gather_bias(grid)
        self._bias_cache = (key, table.clone(), bias)
        return bias

    def gather_bias(self, grid: Tuple[int, int]) -> torch.Tensor:
        table_t, index = self.bias_table_and_index(grid)
        n = index.shape[0]
        return table_t.index_select(1, index.view(-1)).view(-1, n, n)

    def bias_table_and_index(self, grid: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """The heads-first (heads, T) table, resized to ``grid``, and the
        (N, N) index into it."""
        table = self.relative_position_bias_table
        if tuple(grid) == self.window:
            index = self.relative_position_index
        else:
            table = resize_relative_bias_table(table, grid, self.window, self.num_prefix_tokens)
            index = relative_position_index(grid, self.num_prefix_tokens).to(table.device)
        return table.t().contiguous(), index

    def use_chunked(self, q: torch.Tensor) -> bool:
        """Whether the chunked bias-gradient attention runs (see the class doc)."""
        if self.attn_impl == 'sdpa' or (self.attn_impl == 'auto' and q.device.type != 'cpu'):
            return False
        return (torch.is_grad_enabled() and self.relative_position_bias_table.requires_grad
                and not (self.training and self.attn_drop) and q.dtype in (torch.float32, torch.float64))

    def forward(self, x: torch.Tensor, grid: Tuple[int, int], norm: Optional[nn.LayerNorm] = None,
                gamma: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Attention over ``x`` (over ``norm(x)`` when given: the block's LN1,
        fused with the qkv projection, see ``layernorm_linear``), times the layer
        scale ``gamma`` when given (inside the projection's recomputing backward
        while autograd records, see ``recompute_linear``)."""
        b, n, c = x.shape
        q, k, v = self.split_heads(x, norm=norm)
        if self.window and n != grid[0] * grid[1] + self.num_prefix_tokens:
            raise ValueError('relative position bias needs the full token grid plus the prefix tokens '
                             f'({grid[0]}x{grid[1]}+{self.num_prefix_tokens}), got {n} tokens (masked input?)')
        if self.window and self.use_chunked(q):
            x = chunked_relpos_attention(q, k, v, *self.bias_table_and_index(grid))
        else:
            mask = self.relative_bias(grid).unsqueeze(0).to(q.dtype) if self.window else None
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                               dropout_p=self.attn_drop if self.training else 0.)
        x = x.transpose(1, 2).reshape(b, n, c)
        if gamma is not None and torch.is_grad_enabled():  # dropout commutes with the per-channel scale
            return self.proj_drop(recompute_linear(x, self.proj.weight, self.proj.bias, gamma))
        x = self.proj_drop(self.proj(x))
        return x if gamma is None else x * gamma


def add_residual(x: torch.Tensor, branch: Callable[[torch.Tensor], torch.Tensor],
                 drop_path: nn.Module) -> torch.Tensor:
    """``x + drop_path(branch(x))``, running the branch only on the samples
    that drop path keeps.

    timm's ``DropPath`` computes the branch for the whole batch and then
    multiplies the dropped samples by zero: with rate 0.1 that is a tenth of
    the branch's work, forward and backward, for nothing. The mask is drawn
    as timm draws it (one Bernoulli(1 - rate) per sample, kept samples
    scaled by 1 / (1 - rate)), only before the branch instead of after: the
    same masks whenever the branch itself draws no random numbers.
    """
    if (not isinstance(drop_path, DropPath) or not drop_path.training or drop_path.drop_prob == 0
            or torch.compiler.is_compiling()):
        # Compiled code takes timm's path: the kept-sample index has a
        # data-dependent size, which would break the graph in every block.
        return x + drop_path(branch(x))
    keep_prob = 1 - drop_path.drop_prob
    scale = 1 / keep_prob if keep_prob > 0 and drop_path.scale_by_keep else 1
    kept = x.new_empty((x.shape[0],)).bernoulli_(keep_prob).nonzero().flatten()
    if kept.numel() == x.shape[0]:
        return x + branch(x) * scale
    if kept.numel() == 0:
        # Rare (rate^batch): run the branch and zero it, as timm does, so its
        # parameters get zero gradients rather than none, which DDP
        # (find_unused_parameters=False) and the optimizer expect.
        return x + branch(x) * 0
    out = branch(x.index_select(0, kept))
    # Under autocast the branch returns bf16/fp16; the residual stream keeps x's dtype, as ``x + out`` would.
    return x.index_add(0, kept, (out * scale).to(x.dtype))
