"""Position embeddings: fixed 2-D sin-cos tables, BEiT's relative-bias index
and bicubic resizing.

Resizing follows MAE's ``interpolate_pos_embed`` and timm's
``resample_abs_pos_embed``: bicubic, ``align_corners=False``, prefix (CLS)
tokens kept as they are.
"""
import math
from typing import Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from timm.layers import gen_relative_position_index


def _sincos_1d(embed_dim: int, pos: np.ndarray) -> np.ndarray:
    omega = np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega
    out = np.einsum('m,d->md', pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d_pos_embed(embed_dim: int, grid_size: Tuple[int, int], cls_token: bool = True) -> torch.Tensor:
    """MAE's fixed 2-D sin-cos table, shape (1, [1 +] H*W, embed_dim).

    Half the channels encode the row, half the column; the CLS entry is zero.
    """
    if embed_dim % 4:
        raise ValueError(f'sin-cos position embedding needs embed_dim divisible by 4, got {embed_dim}')
    gh, gw = grid_size
    grid_w, grid_h = np.meshgrid(np.arange(gw, dtype=np.float64), np.arange(gh, dtype=np.float64))
    # MAE builds meshgrid(w, h) and encodes grid[0] (w) first, then grid[1] (h).
    emb = np.concatenate([_sincos_1d(embed_dim // 2, grid_w), _sincos_1d(embed_dim // 2, grid_h)], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros([1, embed_dim]), emb], axis=0)
    return torch.from_numpy(emb).float().unsqueeze(0)


def resize_pos_embed(pos_embed: torch.Tensor, new_size: Sequence[int], old_size: Sequence[int] = None,
                     num_prefix_tokens: int = 1) -> torch.Tensor:
    """Bicubically resize a (1, prefix + H*W, C) table to the grid ``new_size``."""
    num_grid = pos_embed.shape[1] - num_prefix_tokens
    if old_size is None:
        side = int(math.isqrt(num_grid))
        if side * side != num_grid:
            raise ValueError(f'cannot infer the grid of a position embedding with {num_grid} '
                             'patch entries; pass old_size')
        old_size = (side, side)
    old_size, new_size = tuple(old_size), tuple(new_size)
    if old_size == new_size:
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dtype = grid.dtype
    grid = grid.reshape(1, old_size[0], old_size[1], -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=new_size, mode='bicubic', align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_size[0] * new_size[1], -1).to(dtype)
    return torch.cat([prefix, grid], dim=1)


def relative_position_index(window: Tuple[int, int], num_prefix_tokens: int = 1) -> torch.Tensor:
    """BEiT's index into the relative-bias table for (prefix + H*W)^2 token pairs.

    Each prefix token owns three rows after the (2H-1)(2W-1) grid rows:
    prefix->token, token->prefix and prefix->itself. With one prefix token
    (CLS) these are BEiT's last three rows: timm's
    ``gen_relative_position_index``. With two (CLS and the TinyMIM*-T
    distillation token), which timm does not build, the distillation token's
    three come first and the CLS token's last, and the CLS rows also cover
    CLS<->distillation pairs, as in the reference TinyMIM*-T segmentation
    backbone.
    """
    window = tuple(window)
    if num_prefix_tokens == 1:
        return gen_relative_position_index(window, class_token=True)
    p = num_prefix_tokens
    num_rel = (2 * window[0] - 1) * (2 * window[1] - 1)
    index = F.pad(gen_relative_position_index(window), [p, 0, p, 0])
    for token in reversed(range(p)):  # the CLS token (0) last: its rows win on prefix<->prefix pairs
        row = num_rel + 3 * (p - 1 - token)
        index[token, :] = row
        index[:, token] = row + 1
        index[token, token] = row + 2
    return index


def relative_bias_table_size(window: Tuple[int, int], num_prefix_tokens: int = 1) -> int:
    return (2 * window[0] - 1) * (2 * window[1] - 1) + 3 * num_prefix_tokens


def resize_relative_bias_table(table: torch.Tensor, new_window: Sequence[int],
                               old_window: Sequence[int] = None, num_prefix_tokens: int = 1) -> torch.Tensor:
    """Bicubically resize a BEiT relative-bias table ((2H-1)(2W-1) + 3 per prefix token, heads).

    The prefix-token entries are kept; the (2H-1, 2W-1) grid is interpolated
    as timm's ``resize_rel_pos_bias_table`` does.
    """
    num_rel = table.shape[0] - 3 * num_prefix_tokens
    if old_window is None:
        side = int(math.isqrt(max(num_rel, 0)))
        if side * side != num_rel or side % 2 == 0:
            raise ValueError(f'cannot infer the window of a relative-bias table with {table.shape[0]} rows '
                             f'({num_prefix_tokens} prefix token(s))')
        old_window = ((side + 1) // 2, (side + 1) // 2)
    old_grid = (2 * old_window[0] - 1, 2 * old_window[1] - 1)
    new_grid = (2 * new_window[0] - 1, 2 * new_window[1] - 1)
    if old_grid == new_grid:
        return table
    grid, extra = table[:num_rel], table[num_rel:]
    grid = grid.T.reshape(1, -1, *old_grid).float()
    grid = F.interpolate(grid, size=new_grid, mode='bicubic', align_corners=False)
    grid = grid.reshape(-1, new_grid[0] * new_grid[1]).T.to(table.dtype)
    return torch.cat([grid, extra], dim=0)
