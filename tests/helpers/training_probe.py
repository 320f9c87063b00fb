"""Test-only hook for training subprocesses (imported via ``custom_imports``).

``TrainingProbeHook`` appends each iteration's logged losses of this rank to
``$TINYMIM_PROBE_DIR/losses_rank{R}.jsonl`` (``repr`` of the floats: exact), and
can crash the process the way a cluster does:

- ``TINYMIM_PROBE_KILL_AT_ITER=k``: SIGKILL itself after iteration k (after the
  checkpoint hook of that iteration ran);
- ``TINYMIM_PROBE_SAVE_FAULT=kill|enospc`` with ``TINYMIM_PROBE_FAULT_AT_SAVE=n``:
  the n-th checkpoint write stops half-way, by SIGKILL or by ``OSError(ENOSPC)``.
"""
import errno
import json
import os
import signal

from mmengine.fileio.backends import LocalBackend
from mmengine.hooks import Hook
from mmseg.registry import HOOKS


def _install_save_fault(kind: str, at_save: int) -> None:
    original_put = LocalBackend.put
    count = {'n': 0}

    def faulty_put(self, obj, filepath):
        if str(filepath).endswith('.pth') or str(filepath).endswith('.pth.tmp'):
            count['n'] += 1
            if count['n'] == at_save:
                with open(filepath, 'wb') as f:  # half of the bytes reach the disk
                    f.write(obj[:len(obj) // 2])
                if kind == 'kill':
                    os.kill(os.getpid(), signal.SIGKILL)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filepath))
        return original_put(self, obj, filepath)

    LocalBackend.put = faulty_put


if os.environ.get('TINYMIM_PROBE_SAVE_FAULT'):
    _install_save_fault(os.environ['TINYMIM_PROBE_SAVE_FAULT'], int(os.environ.get('TINYMIM_PROBE_FAULT_AT_SAVE', 1)))


@HOOKS.register_module()
class TrainingProbeHook(Hook):
    priority = 'LOWEST'  # after CheckpointHook: a kill at iteration k keeps k's checkpoint

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        out_dir = os.environ.get('TINYMIM_PROBE_DIR')
        if out_dir:
            record = {'iter': runner.iter + 1, **{k: repr(float(v)) for k, v in (outputs or {}).items()}}
            with open(os.path.join(out_dir, f'losses_rank{runner.rank}.jsonl'), 'a') as f:
                f.write(json.dumps(record) + '\n')
        if int(os.environ.get('TINYMIM_PROBE_KILL_AT_ITER', 0)) == runner.iter + 1:
            os.kill(os.getpid(), signal.SIGKILL)
