"""The relative-position bias cache used without autograd (inference,
sliding windows) must never serve stale values."""
import pytest
import torch

from tinymim.models.layers import Attention


def reference_bias(attn, grid):
    table, index = attn.relative_position_bias_table, attn.relative_position_index
    n = index.shape[0]
    return table[index.view(-1)].view(n, n, -1).permute(2, 0, 1)


def test_bias_matches_gather_and_follows_table_updates():
    attn = Attention(32, 4, window=(3, 4))
    with torch.no_grad():
        attn.relative_position_bias_table.normal_()
        first = attn.relative_bias((3, 4))
        assert first.is_contiguous() and torch.equal(first, reference_bias(attn, (3, 4)))
        assert attn.relative_bias((3, 4)) is first  # cached
        attn.relative_position_bias_table.add_(1.0)  # e.g. an optimizer step or load_state_dict
        assert torch.equal(attn.relative_bias((3, 4)), first + 1.0)
    attn.relative_position_bias_table.data = attn.relative_position_bias_table.data.double()
    with torch.no_grad():
        assert attn.relative_bias((3, 4)).dtype == torch.float64


@pytest.mark.parametrize('update', ['fused_adamw', 'data'])
def test_cache_follows_updates_that_keep_the_version_counter(update):
    # Fused AdamW and `.data` writes (EMA swaps) change the table without bumping its `_version`.
    attn = Attention(32, 4, window=(3, 4))
    x = torch.randn(2, 13, 32)
    with torch.no_grad():
        attn(x, (3, 4))
    version = attn.relative_position_bias_table._version
    if update == 'fused_adamw':
        opt = torch.optim.AdamW(attn.parameters(), lr=0.1, fused=True)
        attn(x, (3, 4)).sum().backward()
        opt.step()
    else:
        attn.relative_position_bias_table.data.add_(1.0)
    assert attn.relative_position_bias_table._version == version  # what made a version key go stale
    with torch.no_grad():
        assert torch.equal(attn.relative_bias((3, 4)), reference_bias(attn, (3, 4)))


def test_bias_with_grad_is_not_cached_and_trains():
    attn = Attention(32, 4, window=(3, 4))
    bias = attn.relative_bias((3, 4))
    assert bias.requires_grad and getattr(attn, '_bias_cache', None) is None
    bias.sum().backward()
    counts = torch.bincount(attn.relative_position_index.view(-1), minlength=attn.relative_position_bias_table.shape[0])
    assert torch.equal(attn.relative_position_bias_table.grad, counts[:, None].float().expand(-1, 4))


def test_bias_for_another_grid_is_resized_and_cached_per_grid():
    attn = Attention(32, 4, window=(3, 4))
    with torch.no_grad():
        big = attn.relative_bias((5, 6))
        assert big.shape == (4, 31, 31)
        assert attn.relative_bias((3, 4)).shape == (4, 13, 13)
        assert torch.equal(attn.relative_bias((5, 6)), big)


def test_compiled_inference_builds_the_bias_in_one_graph():
    """Under torch.compile the cache is bypassed: its key (the table's address
    and version) would break the graph in every block and recompile it per
    block until dynamo gives up and runs eagerly."""
    from torch._dynamo.utils import counters

    from tinymim.models import TinyMIMViT
    torch.manual_seed(0)
    model = TinyMIMViT(dict(embed_dims=32, num_layers=3, num_heads=4), img_size=32, use_rel_pos_bias=True,
                       out_indices=(0, 2)).eval()
    with torch.no_grad():
        for blk in model.blocks:
            blk.attn.relative_position_bias_table.normal_()
    x = torch.randn(1, 3, 32, 48)
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model, backend='eager')
    with torch.inference_mode():
        expected = model(x)
        for _ in range(2):
            outs = compiled(x)
    assert counters['stats']['unique_graphs'] == 1 and not counters['graph_break'], dict(counters)
    for a, b in zip(outs, expected):
        torch.testing.assert_close(a, b)
