"""SIGKILL a training process after iteration k, resume, and compare with an uninterrupted run."""
import os.path as osp

import pytest
import torch

import tinymim  # noqa: F401  (weights_only allow-list for mmengine checkpoints)
from tests.helpers.reliability import read_losses, run_tool, write_distill_config, write_seg_config

pytestmark = pytest.mark.slow  # training subprocesses, killed and resumed


def _kill_resume_and_compare(tmp_path, config, kill_at, resumed_from):
    full = run_tool([config, '--work-dir', str(tmp_path / 'full')], probe_dir=tmp_path / 'p_full')
    assert full.returncode == 0, full.stderr[-3000:]
    killed = run_tool([config, '--work-dir', str(tmp_path / 'run')], probe_dir=tmp_path / 'p_run',
                      env={'TINYMIM_PROBE_KILL_AT_ITER': str(kill_at)})
    assert killed.returncode == -9  # SIGKILL, no clean shutdown
    resumed = run_tool([config, '--work-dir', str(tmp_path / 'run'), '--resume'], probe_dir=tmp_path / 'p_run')
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'resumed epoch: ' in resumed.stdout and f'iter: {resumed_from}' in resumed.stdout
    expected, got = read_losses(tmp_path / 'p_full'), read_losses(tmp_path / 'p_run')
    assert sorted(got) == sorted(expected)
    # CPU float32 is deterministic: the resumed iterations must match bit for bit.
    for it in range(resumed_from + 1, max(expected) + 1):
        assert got[it] == expected[it], f'iteration {it}: {got[it]} != {expected[it]}'
    return resumed


def test_distill_resume_mid_epoch_after_sigkill_is_bit_exact(tmp_path):
    # 6 iterations per epoch, checkpoints every 2 iterations: killed after iteration 9,
    # resumed from iteration 8, i.e. after the 2nd batch of epoch 2, with drop path and
    # two-view colour jitter active.
    config = write_distill_config(str(tmp_path))
    resumed = _kill_resume_and_compare(tmp_path, config, kill_at=9, resumed_from=8)
    assert 'Resuming epoch 2 after its first 2 batches.' in resumed.stdout
    # The teacher is not part of the training checkpoint: it is rebuilt from its own file.
    checkpoint = torch.load(osp.join(tmp_path, 'run', 'iter_12.pth'), weights_only=True)
    assert checkpoint['state_dict'] and not any(k.startswith('teacher') for k in checkpoint['state_dict'])
    assert {'optimizer', 'param_schedulers', 'message_hub', 'rng_state'} <= set(checkpoint)


def test_segmentation_resume_after_sigkill_is_bit_exact(tmp_path):
    config = write_seg_config(str(tmp_path))
    _kill_resume_and_compare(tmp_path, config, kill_at=5, resumed_from=4)
