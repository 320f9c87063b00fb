"""The distiller's ``compile`` switch wraps both models' ``forward_tap`` in
``torch.compile`` without changing the loss or the gradients (the eager
backend keeps the test fast; inductor is what benchmarks/distill_step.py
measures)."""
import pytest
import torch
from mmseg.registry import MODELS

from tests.helpers.distill import distiller_cfg, write_teacher


def test_compile_switch_keeps_loss_and_grads(tmp_path):
    path = str(tmp_path / 'teacher.pth')
    write_teacher(path)
    x = torch.randn(2, 3, 32, 32)
    results = []
    for compile in (False, dict(backend='eager')):
        torch.manual_seed(0)
        model = MODELS.build(distiller_cfg(path, compile=compile))
        model.student.blocks[0].drop_path1 = model.student.blocks[0].drop_path2 = torch.nn.Identity()
        if compile:
            assert hasattr(model.student.forward_tap, '_torchdynamo_orig_callable')
            assert hasattr(model.teacher.forward_tap, '_torchdynamo_orig_callable')
        loss = sum(model.loss(x).values())
        loss.backward()
        results.append((loss.detach(), model.student.patch_embed.proj.weight.grad.clone()))
        assert 'forward_tap' not in ''.join(model.state_dict())
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])


@pytest.mark.parametrize('compile, message', [('max-autotune', 'compile must be True, False or a dict'),
                                               (dict(modes='max-autotune'), "unexpected keyword argument 'modes'")])
def test_bad_compile_values_fail_at_build(tmp_path, compile, message):
    path = str(tmp_path / 'teacher.pth')
    write_teacher(path)
    with pytest.raises(ValueError, match=message):
        MODELS.build(distiller_cfg(path, compile=compile))
