"""mmengine checkpoints resume under torch's default ``weights_only=True``."""
import pickle

import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

import tinymim  # noqa: F401  (registers the safe globals)


class _Points(Dataset):
    def __len__(self):
        return 16

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return dict(inputs=torch.randn(4, generator=g))


class _Regressor(BaseModel):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 1)

    def forward(self, inputs, data_samples=None, mode='loss'):
        return dict(loss=self.fc(inputs).pow(2).mean())


def _runner(work_dir, max_iters, resume=False):
    return Runner(
        model=_Regressor(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=_Points(), batch_size=4, sampler=dict(type='DefaultSampler', shuffle=True),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False)),
        resume=resume, default_scope='mmseg')


def test_torch_defaults_to_weights_only():
    # The point of the allow-list: torch refuses arbitrary objects by default.
    buf = __import__('io').BytesIO()
    torch.save({'obj': _Points()}, buf)
    buf.seek(0)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(buf)


def test_runner_checkpoint_resumes_with_weights_only(tmp_path):
    _runner(tmp_path, max_iters=2).train()
    ckpt = tmp_path / 'iter_2.pth'
    state = torch.load(ckpt, map_location='cpu')  # weights_only=True is the default
    assert 'message_hub' in state and state['meta']['iter'] == 2

    runner = _runner(tmp_path, max_iters=4, resume=True)
    runner.train()
    assert runner.iter == 4
    assert (tmp_path / 'iter_4.pth').exists()
