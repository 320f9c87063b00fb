"""The feed-forward block's lean backward (GELU recomputed) must give
autograd's gradients, keep only one hidden-sized tensor, and load timm's
``Mlp`` weights."""
import pytest
import torch
from timm.layers import Mlp as TimmMlp

from tests.helpers.autograd import saved_tensors
from tinymim.models.layers.mlp import Mlp
from tinymim.models.layers.recompute_linear import recompute_linear


def test_matches_timm_mlp_and_keeps_one_hidden_tensor():
    torch.manual_seed(0)
    ours, ref = Mlp(16, 64), TimmMlp(16, 64)
    ours.load_state_dict(ref.state_dict())  # same keys: fc1, fc2
    x = torch.randn(3, 5, 16, dtype=torch.float64, requires_grad=True)
    ours.double(), ref.double()
    grads = []
    for model in (ours, ref):
        out, saved = saved_tensors(lambda: model(x))
        hidden_tensors = sum(t.numel() == 3 * 5 * 64 for t in saved)
        assert hidden_tensors == (1 if model is ours else 2)
        grads.append((out, *torch.autograd.grad(out.sin().sum(), (x, *model.parameters()))))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_gradcheck():
    torch.manual_seed(0)
    args = (torch.randn(4, 6, dtype=torch.float64, requires_grad=True),
            torch.randn(3, 6, dtype=torch.float64, requires_grad=True),
            torch.randn(3, dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradcheck(lambda h, w, b: recompute_linear(h, w, b, gelu=True), args)
    assert torch.autograd.gradcheck(lambda h, w: recompute_linear(h, w, gelu=True), args[:2])


def test_autocast_casts_like_linear():
    torch.manual_seed(0)
    mlp = Mlp(8, 32)
    x = torch.randn(2, 8, requires_grad=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = mlp(x)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert mlp.fc2.weight.grad.dtype == torch.float32 and x.grad.dtype == torch.float32


@pytest.mark.parametrize('training', [True, False])
def test_dropout_takes_the_plain_path(training):
    torch.manual_seed(0)
    mlp = Mlp(8, 32, drop=0.5).train(training)
    x = torch.randn(4, 8)
    _, saved = saved_tensors(lambda: mlp(x))
    # with dropout in training the GELU output is kept (for the dropout mask product)
    assert (sum(t.numel() == 4 * 32 for t in saved) >= 2) == training


def test_gradcheck_with_layer_scale():
    torch.manual_seed(0)
    h, w, b, gamma = (torch.randn(*shape, dtype=torch.float64, requires_grad=True)
                      for shape in ((4, 6), (3, 6), (3,), (3,)))
    assert torch.autograd.gradcheck(lambda h, w, b, g: recompute_linear(h, w, b, g, gelu=True), (h, w, b, gamma))
    assert torch.autograd.gradcheck(lambda h, w, g: recompute_linear(h, w, None, g, gelu=True), (h, w, gamma))
    assert torch.autograd.gradcheck(lambda x, w, b, g: recompute_linear(x, w, b, g), (h, w, b, gamma))
