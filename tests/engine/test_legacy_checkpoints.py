"""Checkpoints written by earlier versions of the package still load and resume.

The fixtures are real training checkpoints (model, optimizer, schedulers,
message hub, random states, mid-epoch position) made by
``tests/fixtures/make_legacy_checkpoints.py`` with the code before the model
redesign; they are never regenerated to make this test pass.
"""
import math
import os.path as osp

import pytest
import torch

import tinymim  # noqa: F401  (registers modules; weights_only allow-list)
from tests.fixtures.make_legacy_checkpoints import (
    DISTILL_CHECKPOINT,
    DISTILL_TEACHER,
    SEG_CHECKPOINT,
    distill_config,
    make_data,
    seg_config,
)
from tinymim.engine.tool_config import build_runner


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    return make_data(str(tmp_path_factory.mktemp('legacy_data')))


def _resume(cfg, checkpoint):
    cfg.load_from, cfg.resume = checkpoint, True
    runner = build_runner(cfg)
    runner.load_or_resume()
    saved = torch.load(checkpoint, map_location='cpu', weights_only=True)
    state = runner.model.state_dict()
    assert sorted(state) == sorted(saved['state_dict'])  # no key renamed, added or lost
    for key, value in saved['state_dict'].items():
        assert torch.equal(state[key], value), key
    assert runner.iter == saved['meta']['iter'] == 2
    return runner


def _trained_losses(runner) -> dict:
    scalars = runner.message_hub.log_scalars
    return {k: scalars[k].current() for k in scalars if k.startswith('train/') and 'loss' in k}


def test_distillation_checkpoint_of_the_old_layout_resumes_mid_epoch(tmp_path, data_root):
    cfg = distill_config(str(tmp_path / 'distill'), data_root, DISTILL_TEACHER, max_epochs=1)
    runner = _resume(cfg, DISTILL_CHECKPOINT)
    assert not any(k.startswith('teacher') for k in runner.model.state_dict())
    runner.train()
    assert runner.iter == 3  # the rest of epoch 1 (3 iterations of 4 images): one more iteration
    losses = _trained_losses(runner)
    assert 'train/loss_qk' in losses and all(math.isfinite(v) for v in losses.values())


def test_segmentation_checkpoint_of_the_old_layout_resumes(tmp_path, data_root):
    cfg = seg_config(str(tmp_path / 'seg'), data_root, max_iters=4)
    runner = _resume(cfg, SEG_CHECKPOINT)
    runner.train()
    assert runner.iter == 4
    assert osp.isfile(tmp_path / 'seg' / 'iter_4.pth')
    losses = _trained_losses(runner)
    assert 'train/decode.loss_ce' in losses and all(math.isfinite(v) for v in losses.values())
