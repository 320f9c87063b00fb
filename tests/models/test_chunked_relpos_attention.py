"""The chunked attention with a trainable relative position bias must match
SDPA with the gathered bias, in value and in every gradient, and must not
keep N×N maps for backward."""
import pytest
import torch
import torch.nn.functional as F

from tests.helpers.autograd import saved_tensors
from tinymim.models.layers import Attention
from tinymim.models.layers.chunked_relpos_attention import chunked_relpos_attention
from tinymim.models.vit import VisionTransformer


def sdpa_reference(q, k, v, table_t, index):
    n = index.shape[0]
    bias = table_t.index_select(1, index.view(-1)).view(-1, n, n)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(0))


@pytest.mark.parametrize('chunk', [1, 8, 13, 64])  # 13: the last chunk is partial
def test_matches_sdpa_values_and_gradients(chunk):
    torch.manual_seed(0)
    n, heads, table_size = 37, 3, 50
    qkv = torch.randn(2, n, 3, heads, 8, dtype=torch.float64, requires_grad=True)
    table = torch.randn(table_size, heads, dtype=torch.float64, requires_grad=True)
    index = torch.randint(0, table_size, (n, n))
    grad_out = torch.randn(2, heads, n, 8, dtype=torch.float64)
    results = []
    for fn in (lambda *a: chunked_relpos_attention(*a, chunk=chunk), sdpa_reference):
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # strided, as split_heads gives them
        out = fn(q, k, v, table.t().contiguous(), index)
        results.append((out, *torch.autograd.grad(out, (qkv, table), grad_out)))
    for ours, ref in zip(*results):
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)


def test_gradcheck():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 9, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    table_t = torch.randn(2, 11, dtype=torch.float64, requires_grad=True)
    index = torch.randint(0, 11, (9, 9))
    assert torch.autograd.gradcheck(lambda *a: chunked_relpos_attention(*a, index, chunk=4), (q, k, v, table_t))


def test_rejects_half_precision_and_bad_shapes():
    q = torch.randn(1, 2, 5, 4, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match='fp32/fp64'):
        chunked_relpos_attention(q, q, q, torch.zeros(2, 3), torch.zeros(5, 5, dtype=torch.long))
    q = q.float()
    with pytest.raises(ValueError, match='2 heads and 5 tokens'):
        chunked_relpos_attention(q, q, q, torch.zeros(3, 3), torch.zeros(5, 5, dtype=torch.long))


def saved_shapes(fn):
    return [tuple(t.shape) for t in saved_tensors(fn)[1]]


@pytest.mark.parametrize('grid', [(4, 5), (6, 3)])  # the second is resized from the window
def test_attention_impls_agree_and_chunked_keeps_no_nxn_maps(grid):
    torch.manual_seed(0)
    n = grid[0] * grid[1] + 1
    attns = {impl: Attention(32, 4, window=(4, 5), attn_impl=impl) for impl in ('chunked', 'sdpa')}
    with torch.no_grad():
        attns['chunked'].relative_position_bias_table.normal_()
    attns['sdpa'].load_state_dict(attns['chunked'].state_dict())
    x = torch.randn(2, n, 32)
    outs, grads, saved = {}, {}, {}
    for impl, attn in attns.items():
        assert attn.use_chunked(x) == (impl == 'chunked')
        saved[impl] = saved_shapes(lambda: outs.__setitem__(impl, attn(x, grid)))
        outs[impl].square().sum().backward()
        grads[impl] = {name: p.grad for name, p in attn.named_parameters()}
    torch.testing.assert_close(outs['chunked'], outs['sdpa'], rtol=1e-5, atol=1e-6)
    for name, g in grads['sdpa'].items():
        torch.testing.assert_close(grads['chunked'][name], g, rtol=1e-4, atol=1e-5, msg=name)
    assert any(s[-2:] == (n, n) for s in saved['sdpa'])  # the math path keeps the maps
    assert not any(s[-2:] == (n, n) and s != (n, n) for s in saved['chunked'])  # only the shared index


def test_when_auto_uses_the_chunked_path():
    attn = Attention(16, 2, window=(2, 2), attn_drop=0.1)
    x = torch.randn(1, 5, 16)
    attn.eval()
    assert attn.use_chunked(x)  # CPU, trainable table, no attention dropout at eval
    attn.train()
    assert not attn.use_chunked(x)  # attention dropout: SDPA
    attn.eval()
    with torch.no_grad():
        assert not attn.use_chunked(x)  # inference: SDPA with the cached bias
    assert not attn.use_chunked(x.double().bfloat16())
    attn.relative_position_bias_table.requires_grad_(False)
    assert not attn.use_chunked(x)
    assert not Attention(16, 2, window=(2, 2), attn_impl='sdpa').use_chunked(x)


def test_bad_attn_impl_is_named():
    with pytest.raises(ValueError, match="attn_impl must be one of .*'flash'"):
        VisionTransformer('tiny', img_size=32, use_rel_pos_bias=True, attn_impl='flash')


def test_backbone_trains_the_same_with_either_impl():
    torch.manual_seed(0)
    models = {impl: VisionTransformer(dict(embed_dims=32, num_layers=2, num_heads=4), img_size=64,
                                      use_rel_pos_bias=True, attn_impl=impl) for impl in ('chunked', 'sdpa')}
    models['sdpa'].load_state_dict(models['chunked'].state_dict())
    x = torch.randn(2, 3, 64, 64)
    grads = {}
    for impl, model in models.items():
        with torch.no_grad():
            for blk in model.blocks:
                blk.attn.relative_position_bias_table.normal_(generator=torch.Generator().manual_seed(1))
        model(x).sum().backward()
        grads[impl] = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads['chunked'].keys() == grads['sdpa'].keys()
    for name, g in grads['sdpa'].items():
        torch.testing.assert_close(grads['chunked'][name], g, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.slow  # torch.compile of a backbone: about 12 s
def test_backbone_with_the_lean_training_paths_compiles():
    """torch.compile (mmengine's ``compile=True``) traces the chunked
    attention, the lean MLP and drop path in one graph, and matches eager.

    Compiled code takes timm's drop path: the eager path's kept-sample index
    has a data-dependent size, which broke the graph in every block."""
    from torch._dynamo.utils import counters
    torch.manual_seed(0)
    cfg = dict(arch=dict(embed_dims=32, num_layers=2, num_heads=4), img_size=32, use_rel_pos_bias=True,
               drop_path_rate=0.5)
    eager, compiled = VisionTransformer(**cfg).train(), VisionTransformer(**cfg).train()
    compiled.load_state_dict(eager.state_dict())
    x = torch.randn(4, 3, 32, 32)
    outs = []
    torch._dynamo.reset()
    counters.clear()
    for model in (eager, torch.compile(compiled)):
        torch.manual_seed(1)
        out = model(x)
        out.sum().backward()
        outs.append(out)
    assert counters['stats']['unique_graphs'] == 1 and not counters['graph_break'], dict(counters)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-5, msg=name)
