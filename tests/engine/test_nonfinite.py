"""A non-finite loss stops the run at once, names the iteration and the terms, and saves nothing bad."""
import os
import types

import pytest
import torch
from mmengine.model import BaseModel

import tinymim  # noqa: F401  (weights_only allow-list for mmengine checkpoints)
from tests.helpers.reliability import read_losses, run_tool, write_distill_config
from tinymim.engine import NonFiniteLossError, NonFiniteLossHook


class TwoLossModel(BaseModel):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(2))

    def forward(self, inputs, data_samples=None, mode='loss'):
        return dict(loss_a=(self.w * inputs[0]).sum(), loss_b=(self.w * inputs[1]).sum())


def _runner(model):
    return types.SimpleNamespace(model=model, iter=6, epoch=1)


def test_hook_raises_before_the_optimizer_step():
    model = TwoLossModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    from mmengine.optim import OptimWrapper
    wrapper = OptimWrapper(optimizer)
    NonFiniteLossHook().before_train(_runner(model))
    model.train_step(dict(inputs=torch.tensor([1.0, 2.0])), wrapper)  # finite: trains
    before = model.w.detach().clone()
    with pytest.raises(NonFiniteLossError, match=r'Non-finite loss at iteration 7 \(epoch 2\): loss_b=inf\.'):
        model.train_step(dict(inputs=torch.tensor([1.0, float('inf')])), wrapper)
    assert torch.equal(model.w.detach(), before) and model.w.grad is None  # no backward, no step


def test_hook_refuses_checkpoint_with_nan_weights():
    checkpoint = dict(state_dict={'ok': torch.ones(2), 'head.weight': torch.tensor([1.0, float('nan')]),
                                  'steps': torch.tensor(3)})
    with pytest.raises(NonFiniteLossError, match='non-finite weights in head.weight'):
        NonFiniteLossHook().before_save_checkpoint(_runner(TwoLossModel()), checkpoint)


@pytest.mark.slow
def test_diverging_distillation_stops_with_named_terms_and_finite_checkpoints(tmp_path):
    # lr 1e30: the first AdamW step moves every weight by ~1e30, iteration 2 overflows.
    config = write_distill_config(str(tmp_path), ckpt_every_iters=1,
                                  extra='optim_wrapper = dict(optimizer=dict(lr=1e30))')
    run = run_tool([config, '--work-dir', str(tmp_path / 'run')], probe_dir=tmp_path / 'probe')
    assert run.returncode == 1
    assert ('NonFiniteLossError: Non-finite loss at iteration 2 (epoch 1): loss_qk=nan, loss_vv=nan. Training '
            'stopped before this step changed the weights') in run.stderr
    assert sorted(read_losses(tmp_path / 'probe')) == [1]
    assert sorted(f for f in os.listdir(tmp_path / 'run') if f.endswith('.pth')) == ['iter_1.pth']
    state = torch.load(tmp_path / 'run' / 'iter_1.pth', weights_only=True)['state_dict']
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
