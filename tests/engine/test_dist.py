"""engine/dist.py: the CPU process-group setup reads srun's variables and refuses launchers it cannot serve."""
import os
from unittest import mock

import pytest

from tinymim.engine import dist


def test_slurm_variables_become_torchruns(monkeypatch):
    # patch.dict restores os.environ afterwards: the function sets variables that were absent, which
    # monkeypatch.delenv(raising=False) does not undo, and a leaked MASTER_ADDR would send later
    # tools/dist_train.sh runs to a host that does not exist.
    with mock.patch.dict(os.environ):
        for key in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_PORT', 'MASTER_ADDR'):
            os.environ.pop(key, None)
        os.environ.update(SLURM_PROCID='3', SLURM_NTASKS='4', SLURM_LOCALID='1', SLURM_NODELIST='node[07-08]')
        asked = []
        monkeypatch.setattr(dist.subprocess, 'getoutput', lambda cmd: asked.append(cmd) or 'node07\nnode08')
        dist._slurm_to_torchrun_env()
        assert {k: os.environ[k] for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_PORT', 'MASTER_ADDR')} == dict(
            RANK='3', WORLD_SIZE='4', LOCAL_RANK='1', MASTER_PORT='29500', MASTER_ADDR='node07')
        assert asked == ['scontrol show hostname node[07-08]']


def test_unsupported_launcher_is_named():
    with pytest.raises(ValueError, match="launcher 'mpi' is not supported without a GPU; use pytorch or slurm"):
        dist.init_cpu_process_group('mpi', {})
