import os

import pytest
import torch

# CI machines have 2 cores; keep the test processes from oversubscribing them. `make test` runs the suite in
# pytest-xdist workers, which share the cores: each worker, and every process a test starts from it (the
# variable is inherited), gets its share, since oversubscribed OpenMP threads wait on each other.
WORKERS = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
THREADS = max(1, min(2, os.cpu_count() or 1) // WORKERS)
if WORKERS > 1:
    os.environ['OMP_NUM_THREADS'] = str(THREADS)
torch.set_num_threads(THREADS)


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


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist, files with slow tests go first. Whole files are handed to the workers in collection
    order, so the long ones start at once and the short ones fill both workers' ends, instead of one long
    file running alone at the end."""
    if WORKERS > 1:
        slow_files = {item.path for item in items if item.get_closest_marker('slow')}
        items.sort(key=lambda item: item.path not in slow_files)  # stable: each file keeps its order
