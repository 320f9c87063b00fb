import os

import pytest
import torch

# CI machines have 2 cores; keep each test process from oversubscribing them.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# Variables that steer process groups and launchers: a test that leaves one set changes what every later
# multi-process test connects to (a leaked MASTER_ADDR makes tools/dist_train.sh wait for a host that
# does not exist), so such a leak fails the test that caused it. LOCAL_RANK is only restored: tools/train.py
# sets it to 0 when run in-process, as mmseg's does, and launchers set it per process anyway.
DIST_ENV = ('MASTER_ADDR', 'MASTER_PORT', 'RANK', 'WORLD_SIZE', 'LOCAL_WORLD_SIZE', 'LOCAL_RANK')
RESTORED_ONLY = ('LOCAL_RANK',)


@pytest.fixture(autouse=True)
def _no_leaked_dist_env(request):
    before = {k: os.environ.get(k) for k in DIST_ENV}
    yield
    leaked = {k: os.environ.get(k) for k in DIST_ENV if os.environ.get(k) != before[k] and k not in RESTORED_ONLY}
    for key, value in before.items():  # restore, so one leak does not fail the tests after it
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if leaked:
        pytest.fail(f'{request.node.nodeid} left distributed variables changed in os.environ: {leaked}')
