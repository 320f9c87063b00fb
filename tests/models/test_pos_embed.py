"""Position embeddings against the reference code they must reproduce."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmseg.models.backbones.beit import BEiTAttention
from timm.layers import resample_abs_pos_embed
from timm.layers.pos_embed_rel import resize_rel_pos_bias_table_simple

from tests.helpers.resize_reference import resize_bias_table_reference, resize_pos_embed_reference
from tinymim.models.pos_embed import (
    relative_bias_table_size,
    relative_position_index,
    resize_pos_embed,
    resize_relative_bias_table,
    sincos_2d_pos_embed,
)


# MAE's util/pos_embed.py (the reference implementation), as written there.
def mae_get_2d_sincos_pos_embed(embed_dim, grid_size, cls_token=False):
    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.meshgrid(grid_w, grid_h)  # here w goes first
    grid = np.stack(grid, axis=0)
    grid = grid.reshape([2, 1, grid_size, grid_size])
    emb_h = mae_get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[0])
    emb_w = mae_get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[1])
    pos_embed = np.concatenate([emb_h, emb_w], axis=1)
    if cls_token:
        pos_embed = np.concatenate([np.zeros([1, embed_dim]), pos_embed], axis=0)
    return pos_embed


def mae_get_1d_sincos_pos_embed_from_grid(embed_dim, pos):
    omega = np.arange(embed_dim // 2, dtype=np.float64)
    omega /= embed_dim / 2.
    omega = 1. / 10000**omega
    pos = pos.reshape(-1)
    out = np.einsum('m,d->md', pos, omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


# MAE's interpolate_pos_embed, on a table instead of a model.
def mae_interpolate_pos_embed(pos_embed_checkpoint, num_patches, num_extra_tokens=1):
    embedding_size = pos_embed_checkpoint.shape[-1]
    orig_size = int((pos_embed_checkpoint.shape[-2] - num_extra_tokens) ** 0.5)
    new_size = int(num_patches ** 0.5)
    extra_tokens = pos_embed_checkpoint[:, :num_extra_tokens]
    pos_tokens = pos_embed_checkpoint[:, num_extra_tokens:]
    pos_tokens = pos_tokens.reshape(-1, orig_size, orig_size, embedding_size).permute(0, 3, 1, 2)
    pos_tokens = F.interpolate(pos_tokens, size=(new_size, new_size), mode='bicubic', align_corners=False)
    pos_tokens = pos_tokens.permute(0, 2, 3, 1).flatten(1, 2)
    return torch.cat((extra_tokens, pos_tokens), dim=1)


@pytest.mark.parametrize('embed_dim,grid', [(192, 14), (768, 14), (384, 32)])
def test_sincos_matches_mae(embed_dim, grid):
    ours = sincos_2d_pos_embed(embed_dim, (grid, grid))
    ref = torch.from_numpy(mae_get_2d_sincos_pos_embed(embed_dim, grid, cls_token=True)).float().unsqueeze(0)
    assert ours.shape == (1, grid * grid + 1, embed_dim)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)


def test_sincos_rejects_width_not_divisible_by_4():
    with pytest.raises(ValueError, match='divisible by 4'):
        sincos_2d_pos_embed(66, (4, 4))


def test_resize_14_to_32_matches_mae_and_timm():
    table = torch.randn(1, 1 + 14 * 14, 64)
    ours = resize_pos_embed(table, (32, 32))
    torch.testing.assert_close(ours, mae_interpolate_pos_embed(table, 32 * 32), rtol=0, atol=1e-6)
    # timm antialiases by default; MAE and mmseg do not, and neither do we.
    timm_ref = resample_abs_pos_embed(table, [32, 32], num_prefix_tokens=1, antialias=False)
    torch.testing.assert_close(ours, timm_ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours[:, :1], table[:, :1], rtol=0, atol=0)


def test_resize_non_square_and_identity():
    table = torch.randn(1, 1 + 4 * 6, 16)
    out = resize_pos_embed(table, (3, 8), old_size=(4, 6))
    ref = resample_abs_pos_embed(table, [3, 8], old_size=[4, 6], num_prefix_tokens=1, antialias=False)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    assert resize_pos_embed(table, (4, 6), old_size=(4, 6)) is table
    with pytest.raises(ValueError, match='pass old_size'):
        resize_pos_embed(table, (8, 8))


def test_relative_position_index_matches_mmseg_beit():
    window = (4, 5)
    attn = BEiTAttention(embed_dims=16, num_heads=2, window_size=window)
    torch.testing.assert_close(relative_position_index(window), attn.relative_position_index, rtol=0, atol=0)
    assert attn.relative_position_bias_table.shape[0] == relative_bias_table_size(window)


def test_relative_bias_table_resize_matches_timm():
    table = torch.randn(relative_bias_table_size((14, 14)), 4)
    new_window = (32, 32)
    ours = resize_relative_bias_table(table, new_window)
    ref = resize_rel_pos_bias_table_simple(table, new_window, (relative_bias_table_size(new_window), 4))
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours[-3:], table[-3:], rtol=0, atol=0)  # CLS rows are kept
    assert resize_relative_bias_table(table, (14, 14)) is table


@pytest.mark.parametrize('old,new', [((3, 5), (4, 7)), ((4, 4), (2, 6)), ((6, 2), (3, 3))])
def test_non_square_resizes_match_the_plain_reference(old, new):
    """Row-major grids of any shape, both ways: against tables reshaped by hand and
    bicubically interpolated (tests/resize_reference.py)."""
    pos = torch.randn(1, 1 + old[0] * old[1], 8)
    torch.testing.assert_close(resize_pos_embed(pos, new, old_size=old),
                               resize_pos_embed_reference(pos, old, new), rtol=0, atol=1e-6)
    table = torch.randn(relative_bias_table_size(old), 3)
    ours = resize_relative_bias_table(table, new, old_window=old)
    assert ours.shape == (relative_bias_table_size(new), 3)
    torch.testing.assert_close(ours, resize_bias_table_reference(table, old, new), rtol=0, atol=1e-6)
