"""Checkpoints are written atomically; resume picks the newest complete one."""
import os
import shutil

import pytest
import torch

from tests.helpers.reliability import mmengine_log, read_losses, run_tool, write_distill_config, write_seg_config  # noqa: F401
from tinymim.engine.checkpoint_files import atomic_write_text, find_resumable_checkpoint, read_training_checkpoint_meta


def _save(path, iteration):
    torch.save(dict(meta=dict(epoch=0, iter=iteration), state_dict={'w': torch.ones(3) * iteration}), path)


def test_find_resumable_checkpoint_skips_partial_and_foreign_files(tmp_path, mmengine_log):  # noqa: F811
    _save(tmp_path / 'iter_2.pth', 2)
    _save(tmp_path / 'iter_4.pth', 4)
    data = (tmp_path / 'iter_4.pth').read_bytes()
    (tmp_path / 'iter_6.pth').write_bytes(data[:len(data) // 2])  # cut off by a crash
    torch.save({'model': {'w': torch.ones(1)}}, tmp_path / 'student_weights.pth')  # not a training checkpoint
    (tmp_path / 'notes.pth').write_text('not a checkpoint')
    (tmp_path / '.iter_8.pth.tmp').write_bytes(data[:100])  # an interrupted atomic save
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_6.pth'))
    assert find_resumable_checkpoint(str(tmp_path)) == str(tmp_path / 'iter_4.pth')
    text = mmengine_log.getvalue()
    assert f'Skipping {tmp_path / "iter_6.pth"} for resume: it is not a complete checkpoint' in text
    assert 'failed finding central directory' in text  # cut off
    assert f"{tmp_path / 'notes.pth'} is not a PyTorch checkpoint (it starts with b'not a ch')" in text
    assert 'student_weights.pth for resume: it is not a complete checkpoint (ValueError: not a training' in text
    assert f'left by an interrupted save: {tmp_path / ".iter_8.pth.tmp"}' in text


def test_find_resumable_checkpoint_empty_dir(tmp_path):
    assert find_resumable_checkpoint(str(tmp_path)) is None


def test_find_resumable_checkpoint_searches_the_folder_last_checkpoint_names(tmp_path, mmengine_log):  # noqa: F811
    work_dir, out_dir = tmp_path / 'work' / 'run', tmp_path / 'ckpts' / 'run'  # CheckpointHook(out_dir=...)
    work_dir.mkdir(parents=True)
    out_dir.mkdir(parents=True)
    _save(work_dir / 'iter_2.pth', 2)
    _save(out_dir / 'iter_4.pth', 4)
    (out_dir / 'iter_6.pth').write_bytes((out_dir / 'iter_4.pth').read_bytes()[:100])  # cut off by a crash
    (out_dir / '.iter_8.pth.tmp').write_bytes(b'partial')
    (work_dir / 'last_checkpoint').write_text(str(out_dir / 'iter_6.pth'))
    assert find_resumable_checkpoint(str(work_dir)) == str(out_dir / 'iter_4.pth')
    text = mmengine_log.getvalue()
    assert f'Skipping {out_dir / "iter_6.pth"} for resume: it is not a complete checkpoint' in text
    assert f'left by an interrupted save: {out_dir / ".iter_8.pth.tmp"}' in text
    # a remote out_dir is not searched; the work_dir still is
    (work_dir / 'last_checkpoint').write_text('s3://bucket/run/iter_6.pth')
    assert find_resumable_checkpoint(str(work_dir)) == str(work_dir / 'iter_2.pth')


@pytest.mark.slow
def test_resume_auto_finds_checkpoints_saved_to_out_dir(tmp_path):
    config = write_seg_config(str(tmp_path))
    work_dir, out_dir = tmp_path / 'run', tmp_path / 'ckpts'
    args = [config, '--work-dir', str(work_dir), '--cfg-options', f'default_hooks.checkpoint.out_dir={out_dir}']
    killed = run_tool(args, probe_dir=tmp_path / 'probe', env={'TINYMIM_PROBE_KILL_AT_ITER': '5'})
    assert killed.returncode == -9
    saved = out_dir / 'run' / 'iter_4.pth'  # mmengine saves to out_dir/<basename of work_dir>
    assert saved.is_file() and not any(f.endswith('.pth') for f in os.listdir(work_dir))
    resumed = run_tool(args + ['--resume', 'auto'], probe_dir=tmp_path / 'probe')
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f'Auto-resuming from the newest complete checkpoint {saved}' in resumed.stdout
    assert max(read_losses(tmp_path / 'probe')) == 6
    assert (out_dir / 'run' / 'iter_6.pth').is_file()


def test_atomic_write_text_replaces_whole_file(tmp_path):
    path = str(tmp_path / 'last_checkpoint')
    atomic_write_text(path, 'a' * 1000)
    atomic_write_text(path, 'b')
    assert open(path).read() == 'b'
    assert os.listdir(tmp_path) == ['last_checkpoint']


@pytest.mark.slow
def test_killed_while_saving_keeps_previous_checkpoint_resumable(tmp_path):
    config = write_distill_config(str(tmp_path))
    work_dir = tmp_path / 'run'
    # Checkpoints every 2 iterations, the newest 2 kept: the 3rd save (iteration 6) is
    # SIGKILLed half-way through writing its bytes.
    killed = run_tool([config, '--work-dir', str(work_dir)], probe_dir=tmp_path / 'probe',
                      env={'TINYMIM_PROBE_SAVE_FAULT': 'kill', 'TINYMIM_PROBE_FAULT_AT_SAVE': '3'})
    assert killed.returncode == -9
    files = sorted(os.listdir(work_dir))
    assert 'iter_2.pth' in files and 'iter_4.pth' in files and 'iter_6.pth' not in files
    assert '.iter_6.pth.tmp' in files
    assert open(work_dir / 'last_checkpoint').read() == str(work_dir / 'iter_4.pth')
    assert read_training_checkpoint_meta(str(work_dir / 'iter_4.pth'))['iter'] == 4
    # A non-atomic writer would have left the cut-off bytes under the final name, and
    # pointed last_checkpoint at it: --resume auto must skip that file.
    shutil.copy(work_dir / '.iter_6.pth.tmp', work_dir / 'iter_6.pth')
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'iter_6.pth'))
    resumed = run_tool([config, '--work-dir', str(work_dir), '--resume', 'auto'], probe_dir=tmp_path / 'probe')
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f'Skipping {work_dir / "iter_6.pth"} for resume: it is not a complete checkpoint' in resumed.stdout
    assert 'partial checkpoint file(s) left by an interrupted save' in resumed.stdout
    assert f'Auto-resuming from the newest complete checkpoint {work_dir / "iter_4.pth"}' in resumed.stdout
    assert max(read_losses(tmp_path / 'probe')) == 12
    # the new iter_6 replaced the cut-off one, pruning happened only after saving
    assert sorted(f for f in os.listdir(work_dir) if f.endswith('.pth')) == ['iter_10.pth', 'iter_12.pth']


@pytest.mark.slow
def test_disk_full_while_saving_fails_clearly_and_keeps_previous(tmp_path):
    config = write_distill_config(str(tmp_path))
    work_dir = tmp_path / 'run'
    run = run_tool([config, '--work-dir', str(work_dir)],
                   env={'TINYMIM_PROBE_SAVE_FAULT': 'enospc', 'TINYMIM_PROBE_FAULT_AT_SAVE': '2'})
    assert run.returncode == 1
    assert (f'CheckpointWriteError: [Errno 28] Could not write checkpoint {work_dir / "iter_4.pth"}: No space left '
            f'on device. Earlier checkpoints in {work_dir} are untouched') in run.stderr
    assert sorted(f for f in os.listdir(work_dir) if 'pth' in f) == ['iter_2.pth']  # no partial file left
    assert read_training_checkpoint_meta(str(work_dir / 'iter_2.pth'))['iter'] == 2


@pytest.mark.parametrize('content', [b'', b'hello'])
def test_read_training_checkpoint_meta_rejects_garbage(tmp_path, content):
    (tmp_path / 'x.pth').write_bytes(content)
    with pytest.raises(Exception):
        read_training_checkpoint_meta(str(tmp_path / 'x.pth'))


def test_real_configs_run_on_tinymim_runner_with_its_hooks(tmp_path):
    from mmengine.config import Config
    from mmseg.registry import RUNNERS

    from tests.helpers.reliability import DISTILL_CONFIG, SEG_CONFIG
    distill = Config.fromfile(DISTILL_CONFIG)
    assert distill.runner_type == 'TinyMIMRunner' and distill.train_dataloader.sampler.type == 'ResumableSampler'
    seg = Config.fromfile(SEG_CONFIG)
    assert 'custom_hooks' not in seg  # the hooks must come even without a custom_hooks list
    seg.work_dir = str(tmp_path)
    hooks = [type(h).__name__ for h in RUNNERS.build(seg).hooks]
    for name in ('AtomicCheckpointHook', 'ExactResumeHook', 'NonFiniteLossHook'):
        assert hooks.count(name) == 1
    assert 'CheckpointHook' not in hooks
