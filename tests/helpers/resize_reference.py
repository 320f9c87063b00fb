"""Bicubic resizing of position tables written out plainly: the references of the resize tests.

Each table is reshaped by hand into the row-major grid it stores and passed
to ``F.interpolate`` (bicubic, ``align_corners=False``, as MAE, BEiT and
timm resize), whatever the code under test does.
"""
import torch
import torch.nn.functional as F


def _bicubic(grid_hwc: torch.Tensor, size) -> torch.Tensor:
    out = F.interpolate(grid_hwc.permute(2, 0, 1)[None], size=tuple(size), mode='bicubic', align_corners=False)
    return out[0].permute(1, 2, 0)


def resize_pos_embed_reference(pos_embed: torch.Tensor, old_grid, new_grid) -> torch.Tensor:
    """(1, 1 + H*W, C): token 1 + i*W + j is patch row i, column j; the CLS row is kept."""
    (h, w), c = old_grid, pos_embed.shape[-1]
    grid = _bicubic(pos_embed[0, 1:].reshape(h, w, c), new_grid)
    return torch.cat([pos_embed[:, :1], grid.reshape(1, -1, c)], dim=1)


def resize_bias_table_reference(table: torch.Tensor, old_window, new_window) -> torch.Tensor:
    """((2H-1)(2W-1) + 3, heads): row (dy + H-1)(2W-1) + dx + W-1 holds the offset (dy, dx);
    the last three rows (the CLS pairs) are kept."""
    (h, w), heads = old_window, table.shape[1]
    grid = _bicubic(table[:-3].reshape(2 * h - 1, 2 * w - 1, heads),
                    (2 * new_window[0] - 1, 2 * new_window[1] - 1))
    return torch.cat([grid.reshape(-1, heads), table[-3:]], dim=0)
