"""RNG state capture/restore, per-sample seeding and TinyMIMRunner's default hooks."""
import random

import numpy as np
import torch
from mmengine.model import BaseModel
from torch.utils.data import Dataset

import tinymim  # noqa: F401  (registers the runner, hooks and weights_only allow-list)
from tinymim.engine import TinyMIMRunner
from tinymim.engine.hooks.exact_resume_hook import capture_rng_state, restore_rng_state
from tinymim.engine.resumable_sampler import seeded_rngs


def _draws():
    return random.random(), np.random.rand(3).tolist(), np.random.randn(), torch.rand(3).tolist()


def test_rng_state_restores_after_a_round_trip_through_a_checkpoint_file(tmp_path):
    np.random.randn()  # leave a cached gaussian in numpy's state
    torch.save(dict(rng_state=capture_rng_state()), tmp_path / 'ckpt.pth')
    expected = _draws()
    _draws()
    checkpoint = torch.load(tmp_path / 'ckpt.pth', map_location='cpu', weights_only=True)
    restore_rng_state(checkpoint['rng_state'])
    assert _draws() == expected


class _FakeCuda:
    """Stands in for torch.cuda's RNG functions on a machine without a GPU."""

    def __init__(self, monkeypatch):
        self.current = torch.full((16,), 7, dtype=torch.uint8)
        self.restored = []
        monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
        monkeypatch.setattr(torch.cuda, 'get_rng_state', lambda device='cuda': self.current.clone())
        monkeypatch.setattr(torch.cuda, 'set_rng_state', lambda state, device='cuda': self.restored.append(state))

        def per_device(*args, **kwargs):
            raise AssertionError('only the current device is saved and restored')
        monkeypatch.setattr(torch.cuda, 'get_rng_state_all', per_device)
        monkeypatch.setattr(torch.cuda, 'set_rng_state_all', per_device)


def test_cuda_rng_state_of_the_current_device_is_saved_and_restored(monkeypatch):
    cuda = _FakeCuda(monkeypatch)
    state = capture_rng_state()
    assert torch.equal(state['cuda'], cuda.current)
    restore_rng_state(state)
    assert len(cuda.restored) == 1 and torch.equal(cuda.restored[0], cuda.current)
    assert cuda.restored[0].device.type == 'cpu'


def test_cuda_rng_state_of_old_checkpoints_restores_rank0s_device(monkeypatch):
    cuda = _FakeCuda(monkeypatch)
    state = capture_rng_state()
    # older checkpoints: rank 0's get_rng_state_all(); element 0 is the state it drew from
    state['cuda'] = [torch.full((16,), 1, dtype=torch.uint8), torch.full((16,), 2, dtype=torch.uint8)]
    restore_rng_state(state)
    assert len(cuda.restored) == 1 and torch.equal(cuda.restored[0], state['cuda'][0])


def test_seeded_rngs_seeds_only_the_cpu_generator(monkeypatch):
    reseeded = []
    monkeypatch.setattr(torch.cuda, 'manual_seed_all', reseeded.append)
    monkeypatch.setattr(torch.cuda, 'manual_seed', reseeded.append)
    before = capture_rng_state()
    with seeded_rngs(2**62 + 5):
        inside = torch.rand(3)
    assert torch.equal(inside, torch.rand(3, generator=torch.Generator().manual_seed(2**62 + 5)))
    assert reseeded == []  # the model's CUDA RNG is not reset by loading a sample
    after = capture_rng_state()
    assert torch.equal(after['torch'], before['torch']) and after['python'] == before['python']


class _Points(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return dict(inputs=torch.randn(4, generator=torch.Generator().manual_seed(i)))


class _Regressor(BaseModel):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 1)

    def forward(self, inputs, data_samples=None, mode='loss'):
        return dict(loss=self.fc(inputs).pow(2).mean())


def _checkpoint_hooks(tmp_path, default_hooks):
    runner = TinyMIMRunner(
        model=_Regressor(), work_dir=str(tmp_path),
        train_dataloader=dict(dataset=_Points(), batch_size=4, sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)), train_cfg=dict(by_epoch=True, max_epochs=1),
        default_hooks=default_hooks, default_scope='mmseg', experiment_name=f'hooks_{tmp_path.name}')
    return [type(h).__name__ for h in runner.hooks if 'Checkpoint' in type(h).__name__]


def test_default_checkpoint_hook_is_added_only_when_the_config_does_not_name_one(tmp_path):
    assert _checkpoint_hooks(tmp_path / 'absent', {}) == ['AtomicCheckpointHook']
    assert _checkpoint_hooks(tmp_path / 'upgraded', dict(checkpoint=dict(type='CheckpointHook'))) == [
        'AtomicCheckpointHook']
    assert _checkpoint_hooks(tmp_path / 'removed', dict(checkpoint=None)) == []  # mmengine: None removes it
