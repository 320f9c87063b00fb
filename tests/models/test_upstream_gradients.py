"""Custom backward passes with an upstream gradient that is neither 1 nor uniform.

A loss backpropagates exactly 1, so a backward that ignores ``grad_out`` (or
uses only its sum) passes every test that calls ``loss.backward()`` on a
plain loss. Training passes other values: target weights, AMP loss scaling,
gradient accumulation, and every layer inside a network. Each function
here gets a random upstream gradient (a non-unit scalar for the scalar
relation loss) and must give plain PyTorch's input gradients. The chunked
attention is checked the same way in ``test_chunked_relpos_attention.py``.
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.registry import MODELS
from timm.layers import DropPath

from tests.helpers.distill import distiller_cfg, naive_relation_kl, write_teacher
from tinymim.models.layers import add_residual
from tinymim.models.layers.layernorm_linear import layernorm_linear
from tinymim.models.layers.recompute_linear import recompute_linear
from tinymim.models.losses import relation_kl_loss


def grads_with_upstream(fn, inputs, upstream):
    out = fn(*inputs)
    return (out, *torch.autograd.grad(out, inputs, upstream))


def assert_same(ours, ref, **tol):
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, **tol)


def double_randn(*shape, grad=True):
    return torch.randn(*shape, dtype=torch.float64, requires_grad=grad)


@pytest.mark.parametrize('upstream', [3.7, -0.25, 2.0 ** 16])  # 2**16: GradScaler's initial scale
@pytest.mark.parametrize('chunk', [None, 3])
def test_relation_loss(upstream, chunk):
    s_a, s_b = double_randn(2, 3, 7, 8), double_randn(2, 3, 7, 8)
    t_a, t_b = torch.randn(2, 3, 7, 16), torch.randn(2, 3, 7, 16)
    upstream = torch.tensor(upstream, dtype=torch.float64)
    ours = grads_with_upstream(lambda a, b: relation_kl_loss(a, b, t_a, t_b, chunk).double(), (s_a, s_b), upstream)
    ref = grads_with_upstream(lambda a, b: naive_relation_kl(a, b, t_a, t_b), (s_a, s_b), upstream)
    assert_same(ours, ref, rtol=1e-5, atol=1e-7 * abs(upstream.item()))


@pytest.mark.parametrize('gelu', [False, True])
@pytest.mark.parametrize('with_bias,with_gamma', [(True, True), (False, True), (True, False)])
def test_recompute_linear(gelu, with_bias, with_gamma):
    x, w = double_randn(2, 5, 6), double_randn(4, 6)
    extra = [double_randn(4) if on else None for on in (with_bias, with_gamma)]
    inputs = (x, w, *[t for t in extra if t is not None])

    def unpack(args):
        rest = iter(args[2:])
        return args[0], args[1], *[next(rest) if on else None for on in (with_bias, with_gamma)]

    def plain(*args):
        x, w, b, gamma = unpack(args)
        out = F.linear(F.gelu(x) if gelu else x, w, b)
        return out if gamma is None else gamma * out
    upstream = torch.randn(2, 5, 4, dtype=torch.float64)
    ours = grads_with_upstream(lambda *args: recompute_linear(*unpack(args), gelu=gelu), inputs, upstream)
    assert_same(ours, grads_with_upstream(plain, inputs, upstream), rtol=1e-12, atol=1e-12)


def test_layernorm_linear():
    norm, linear = nn.LayerNorm(6, eps=1e-6).double(), nn.Linear(6, 4).double()
    with torch.no_grad():
        norm.weight.normal_(), norm.bias.normal_()
    inputs = (double_randn(2, 5, 6), norm.weight, norm.bias, linear.weight, linear.bias)
    upstream = torch.randn(2, 5, 4, dtype=torch.float64)
    ours = grads_with_upstream(lambda x, *_: layernorm_linear(x, norm, linear), inputs, upstream)
    ref = grads_with_upstream(lambda x, *_: linear(norm(x)), inputs, upstream)
    assert_same(ours, ref, rtol=1e-12, atol=1e-12)


def test_drop_path_skipping_dropped_samples():
    branch, drop_path = nn.Linear(8, 8).double(), DropPath(0.5).train()
    inputs = (double_randn(16, 5, 8), branch.weight, branch.bias)
    upstream = torch.randn(16, 5, 8, dtype=torch.float64)
    results = []
    for fn in (lambda x, *_: add_residual(x, branch, drop_path), lambda x, *_: x + drop_path(branch(x))):
        torch.manual_seed(1)  # the same masks (seed 1: some samples kept, some dropped)
        results.append(grads_with_upstream(fn, inputs, upstream))
    assert_same(*results, rtol=1e-12, atol=1e-12)


def test_distiller_target_weight_scales_loss_and_gradients(tmp_path):
    """A relation target with weight 0.3 against 0.3 x the naive KL, in value and in
    every student gradient."""
    write_teacher(tmp_path / 'teacher.pth')
    model = MODELS.build(distiller_cfg(tmp_path / 'teacher.pth', targets=[
        dict(type='relation', pairs=('qk', 'vv'), weight=0.3)])).eval()  # eval: no drop path
    x = torch.randn(2, 3, 32, 32)
    losses = model(x)
    params = [p for p in model.parameters() if p.requires_grad]
    ours = torch.autograd.grad(sum(losses.values()), params)

    def qkv_by_hand(vit):
        tokens, grid = vit.embed(x)
        tokens = vit.blocks[0](tokens, grid)
        blk = vit.blocks[1]
        qkv = F.linear(F.layer_norm(tokens, (vit.embed_dims,), blk.norm1.weight, blk.norm1.bias, 1e-6),
                       blk.attn.qkv.weight, blk.attn.qkv.bias)
        return [t.reshape(2, 5, 4, -1).transpose(1, 2) for t in qkv.chunk(3, dim=-1)]
    with torch.no_grad():
        tq, tk, tv = qkv_by_hand(model.teacher)
    sq, sk, sv = qkv_by_hand(model.student)
    naive = dict(loss_qk=0.3 * naive_relation_kl(sq, sk, tq, tk), loss_vv=0.3 * naive_relation_kl(sv, sv, tv, tv))
    for name, value in naive.items():
        assert abs(losses[name].item() - value.item()) < 1e-6, name
    for p, g, g_ref in zip(params, ours, torch.autograd.grad(sum(naive.values()), params)):
        torch.testing.assert_close(g, g_ref.float(), rtol=1e-4, atol=1e-7)
