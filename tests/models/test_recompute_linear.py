"""Layer scale inside the Linear's lean backward: the same function and gradients as
``gamma * linear(x)``, and neither the Linear's output nor the normalised inputs are kept."""
import pytest
import torch

from tests.helpers.autograd import saved_tensors
from tinymim.models.layers.recompute_linear import recompute_linear
from tinymim.models.vit import Block


def saved_storages(fn, numel):
    """``fn()`` and how many distinct storages of ``numel`` elements autograd keeps for its backward."""
    out, saved = saved_tensors(fn)
    return out, len({t.untyped_storage().data_ptr() for t in saved if t.numel() == numel})


def test_autocast_casts_like_linear():
    torch.manual_seed(0)
    x, w, b, gamma = torch.randn(5, 4, requires_grad=True), torch.randn(3, 4), torch.randn(3), torch.randn(3)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = recompute_linear(x, w, b, gamma)
        expected = torch.nn.functional.linear(x, w, b) * gamma.bfloat16()
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, expected)
    out.float().sum().backward()
    assert x.grad.dtype == torch.float32


@pytest.mark.parametrize('window', [None, (2, 3)])  # (2, 3): with a trainable relative position bias
def test_block_with_layer_scale_trains_as_with_plain_modules_and_keeps_four_fewer_token_maps(window):
    """A block runs both fused functions: layernorm_linear (LN1 + qkv, LN2 + fc1) and recompute_linear
    (projection and fc2 with their layer scales)."""
    torch.manual_seed(0)
    block = Block(16, 4, window=window, layer_scale=0.5).double()
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(std=0.2)
    x = torch.randn(2, 7, 16, dtype=torch.float64, requires_grad=True)
    grid = window or (1, 6)

    def plain():  # the same modules one after another, as timm's Block runs them
        y = x + block.ls1(block.attn(block.norm1(x), grid))
        return y + block.ls2(block.mlp(block.norm2(y)))
    fused, fused_maps = saved_storages(lambda: block(x, grid), x.numel())
    expected, plain_maps = saved_storages(plain, x.numel())
    # not kept any more: LN1's and LN2's outputs (layernorm_linear), the projection's and fc2's outputs
    assert plain_maps - fused_maps == 4
    torch.testing.assert_close(fused, expected, rtol=1e-12, atol=1e-12)
    params, upstream = [x, *block.parameters()], torch.randn_like(x)
    for a, b in zip(torch.autograd.grad(fused, params, upstream), torch.autograd.grad(expected, params, upstream)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
