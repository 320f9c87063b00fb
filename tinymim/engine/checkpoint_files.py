"""Crash-safe checkpoint files: atomic writes (temporary file, fsync, rename), probing, finding the newest one."""
import glob
import logging
import os
import os.path as osp
import tempfile
from typing import Optional

import torch
from mmengine.logging import print_log

TMP_SUFFIX = '.tmp'


def temporary_name(filename: str) -> str:
    """Hidden name in the same folder (``os.replace`` is atomic only within one file system)."""
    return f'.{filename}{TMP_SUFFIX}'


def _fsync(path: str) -> None:
    """Flush a file's data, or a folder's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_file(tmp_path: str, final_path: str) -> None:
    """Flush ``tmp_path`` to disk and atomically rename it to ``final_path``."""
    _fsync(tmp_path)
    os.replace(tmp_path, final_path)
    _fsync(osp.dirname(osp.abspath(final_path)))  # the rename itself


def atomic_write_text(path: str, text: str) -> None:
    tmp_path = osp.join(osp.dirname(path), temporary_name(osp.basename(path)))
    with open(tmp_path, 'w') as f:
        f.write(text)
    commit_file(tmp_path, path)


def probe_checkpoint(path: str):
    """Unpickle ``path`` as ``torch.load(weights_only=True)`` does; raises, naming the problem, if it cannot.

    ``mmap=True`` reads only the archive index and the pickled structure, not the
    tensor data, so probing a large checkpoint is cheap. A truncated file fails
    because its zip central directory (at the end) is missing. Anything that cannot
    be mapped (legacy pre-zip files, garbage) goes through tinymim's checkpoint reader,
    which loads legacy files and explains what is wrong with the others.
    """
    try:
        return torch.load(path, map_location='cpu', mmap=True, weights_only=True)
    except Exception:
        from tinymim.models.vit_weights import read_checkpoint
        return read_checkpoint(path)


def describe_error(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f'{type(error).__name__}: {text[0]}' if text else type(error).__name__


def read_training_checkpoint_meta(path: str) -> dict:
    """The ``meta`` of a complete training checkpoint; raises if the file is not one."""
    checkpoint = probe_checkpoint(path)
    if not isinstance(checkpoint, dict) or 'state_dict' not in checkpoint or 'iter' not in checkpoint.get('meta', {}):
        raise ValueError('not a training checkpoint (no state_dict/meta.iter)')
    return checkpoint['meta']


def checkpoint_dirs(work_dir: str) -> list:
    """``work_dir`` and, if elsewhere, the local folder its ``last_checkpoint`` file names.

    ``CheckpointHook(out_dir=...)`` saves to ``out_dir/<basename of work_dir>``; only
    ``last_checkpoint`` in ``work_dir`` says where. Remote paths are not searched.
    """
    dirs = [work_dir]
    try:
        with open(osp.join(work_dir, 'last_checkpoint')) as f:
            last = f.read().strip()
    except OSError:  # no checkpoint saved yet, or unreadable: work_dir alone
        return dirs
    if last and '://' not in last:
        folder = osp.dirname(last)
        if osp.isdir(folder) and osp.abspath(folder) != osp.abspath(work_dir):
            dirs.append(folder)
    return dirs


def find_resumable_checkpoint(work_dir: str) -> Optional[str]:
    """The complete training checkpoint with the most iterations in ``checkpoint_dirs(work_dir)``.

    Files that cannot be read (cut off by a crash, overwritten by a non-atomic writer,
    not a checkpoint) are skipped with a warning naming the file and the reason.
    """
    candidates, stale = [], []
    for folder in checkpoint_dirs(work_dir):
        for path in sorted(glob.glob(osp.join(folder, '*.pth'))):
            try:
                meta = read_training_checkpoint_meta(path)
            except Exception as error:  # any unreadable file is skipped, never fatal
                print_log(f'Skipping {path} for resume: it is not a complete checkpoint ({describe_error(error)}).',
                          logger='current', level=logging.WARNING)
                continue
            candidates.append((meta['iter'], osp.getmtime(path), path))
        stale += glob.glob(osp.join(folder, f'.*{TMP_SUFFIX}'))
    if stale:
        print_log(f'Ignoring {len(stale)} partial checkpoint file(s) left by an interrupted save: '
                  f'{", ".join(sorted(stale))}', logger='current', level=logging.WARNING)
    if not candidates:
        return None
    return max(candidates)[2]


def ensure_writable_dir(path: str) -> None:
    """Create ``path`` and write a probe file in it; fail at start, naming the folder, if that is impossible."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix='.write_probe'):
            pass
    except OSError as error:
        raise PermissionError(error.errno, f'work_dir {path} is not writable ({error.strerror}); logs and '
                              'checkpoints go there: pass --work-dir with a writable folder') from error
