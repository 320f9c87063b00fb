"""LayerNorm + Linear with the lean backward (the normalised tensor recomputed) must give
autograd's gradients, keep one input-sized tensor instead of two, and cast as autocast would."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tests.helpers.autograd import saved_tensors
from tinymim.models.layers.layernorm_linear import layernorm_linear


def norm_and_linear(dim=6, out=5, bias=True):
    torch.manual_seed(0)
    norm, linear = nn.LayerNorm(dim, eps=1e-6).double(), nn.Linear(dim, out, bias=bias).double()
    with torch.no_grad():
        norm.weight.normal_(), norm.bias.normal_()
    return norm, linear


@pytest.mark.parametrize('bias', [True, False])
def test_gradcheck(bias):
    norm, linear = norm_and_linear(bias=bias)
    x = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    params = [norm.weight, norm.bias, linear.weight] + ([linear.bias] if bias else [])
    assert torch.autograd.gradcheck(lambda x, *_: layernorm_linear(x, norm, linear), (x, *params))


def test_matches_the_two_modules_and_keeps_one_input_sized_tensor():
    norm, linear = norm_and_linear()
    x = torch.randn(4, 7, 6, dtype=torch.float64, requires_grad=True)
    results = []
    for fn in (lambda: layernorm_linear(x, norm, linear), lambda: linear(norm(x))):
        out, saved = saved_tensors(fn)
        results.append((out, sum(t.numel() == x.numel() for t in saved),
                        *torch.autograd.grad(out.sin().sum(), (x, *norm.parameters(), *linear.parameters()))))
    (fused_out, fused_saved, *fused_grads), (plain_out, plain_saved, *plain_grads) = results
    assert (fused_saved, plain_saved) == (1, 2)  # the input; plain autograd also keeps the normalised tensor
    for a, b in zip((fused_out, *fused_grads), (plain_out, *plain_grads)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_autocast_runs_the_linear_in_the_autocast_dtype():
    norm, linear = (m.float() for m in norm_and_linear())
    x = torch.randn(4, 6, requires_grad=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        fused, plain = layernorm_linear(x, norm, linear), linear(norm(x))
    assert fused.dtype == plain.dtype == torch.bfloat16
    torch.testing.assert_close(fused, plain)
    fused.float().sum().backward()
    assert x.grad.dtype == torch.float32 and linear.weight.grad.dtype == torch.float32


def test_inference_and_plain_layer_norms_use_the_modules():
    norm, linear = norm_and_linear()
    x = torch.randn(3, 6, dtype=torch.float64)
    with torch.no_grad():
        expected = linear(F.layer_norm(x, (6,), norm.weight, norm.bias, 1e-6))
        torch.testing.assert_close(layernorm_linear(x, norm, linear), expected)
    bare = nn.LayerNorm(6, elementwise_affine=False).double()
    out = layernorm_linear(x.requires_grad_(), bare, linear)
    torch.testing.assert_close(out, linear(bare(x)))
