"""The install script verifies the stack and names what is broken, and its mmcv source path works."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT as REPO

pytestmark = pytest.mark.slow  # runs the install script and the stack check in subprocesses

ROOT = Path(REPO)


def _check(env=None):
    return subprocess.run([sys.executable, str(ROOT / 'tools/check_install.py')], capture_output=True,
                          text=True, env=env, cwd=ROOT)


def test_stack_verifies():
    res = _check()
    assert res.returncode == 0, res.stderr
    assert 'stack OK' in res.stdout and 'mmseg 1.2' in res.stdout


def test_broken_mmcv_ops_are_named_with_a_fix(tmp_path):
    # An mmcv whose compiled ops do not match torch fails exactly like this.
    fake = tmp_path / 'mmcv' / 'ops'
    fake.mkdir(parents=True)
    (tmp_path / 'mmcv' / '__init__.py').write_text("__version__ = '2.1.0'\n")
    (fake / '__init__.py').write_text("raise ImportError('mmcv/_ext.so: undefined symbol: _ZN3c10')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    res = _check(env)
    assert res.returncode == 1
    assert 'BROKEN: mmcv (full build with compiled ops)' in res.stderr
    assert 'undefined symbol' in res.stderr and 'FIX:' in res.stderr


def test_mim_link_check_names_where_mim_looks(tmp_path, monkeypatch):
    # A plain `pip install -e .` leaves only the dist-info in site-packages: mim finds no .mim there.
    import importlib.metadata
    import runpy
    check = runpy.run_path(str(ROOT / 'tools/check_install.py'))['mim_sees_tinymim']

    class Dist:
        def locate_file(self, name):
            return tmp_path / name

    monkeypatch.setattr(importlib.metadata, 'distribution', lambda name: Dist())
    with pytest.raises(AssertionError, match=f'mim looks for the configs in {tmp_path}/tinymim/.mim/configs'):
        check()
    (tmp_path / 'tinymim' / '.mim' / 'configs').mkdir(parents=True)
    check()


def test_second_install_run_only_verifies():
    venv = Path(sys.executable).parents[1]
    # With setup.py or requirements/ newer than the venv's stamp the script would install (again) into the venv
    # these tests run from; `make test` installs first, so that never happens there.
    stamp = venv / '.tinymim-installed'
    newer = [p.name for p in [ROOT / 'setup.py', *(ROOT / 'requirements').iterdir()]
             if stamp.exists() and p.stat().st_mtime > stamp.stat().st_mtime]
    assert stamp.exists() and not newer, f'{venv} is older than {newer or "its stamp"}: run make install first'
    res = subprocess.run(['bash', str(ROOT / 'tools/install.sh')], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, VENV=str(venv)))
    assert res.returncode == 0, res.stderr
    assert 'up to date' in res.stdout


def test_mmcv_wheel_is_chosen_for_this_python_and_torch(tmp_path):
    # A wheel for another Python in the wheelhouse is passed over for the cached one of this Python and torch.
    from importlib.metadata import version
    tag = f'cp{sys.version_info[0]}{sys.version_info[1]}'
    house, cache = tmp_path / 'wheelhouse', tmp_path / 'cache' / f'torch-{version("torch")}'
    house.mkdir()
    cache.mkdir(parents=True)
    (house / 'mmcv-2.1.0-cp39-cp39-linux_x86_64.whl').touch()
    (cache / f'mmcv-2.1.0-{tag}-{tag}-linux_x86_64.whl').touch()
    (tmp_path / 'cache' / 'torch-0.0.1').mkdir()
    (tmp_path / 'cache' / 'torch-0.0.1' / f'mmcv-2.1.0-{tag}-{tag}-linux_x86_64.whl').touch()  # another torch's
    script = ('source tools/install.sh; '
              f'PY={sys.executable}; MMCV_CACHE={tmp_path / "cache"}; '
              f'TINYMIM_WHEELHOUSE={house}; PIP=(echo pip); install_mmcv')
    res = subprocess.run(['bash', '-c', script], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert f'pip install -q --no-deps {cache}/mmcv-2.1.0-{tag}-{tag}-linux_x86_64.whl' in res.stdout


def test_mmcv_source_build_fetches_patches_and_prepares(tmp_path):
    # The source fallback up to the compile, run by the script itself: pip fetches the sdist with a throwaway
    # cache (it prepares metadata, in the venv: an isolated build has no pkg_resources), the C++20 switch is
    # applied and checked, and the patched tree's metadata is prepared as the build does.
    venv = Path(sys.executable).parents[1]
    env = {k: v for k, v in os.environ.items() if k not in ('TINYMIM_WHEELHOUSE', 'MMCV_WITH_OPS')}
    env.update(VENV=str(venv), PIP_CACHE_DIR=str(tmp_path / 'pip-cache'))
    res = subprocess.run(['bash', str(ROOT / 'tools/install.sh'), '--prepare-mmcv', str(tmp_path / 'src')],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert 'metadata prepared: mmcv 2.1.0' in res.stdout and 'not compiled' in res.stdout
    setup = (tmp_path / 'src' / 'mmcv-2.1.0' / 'setup.py').read_text()
    assert "extra_compile_args['cxx'] = ['-std=c++20']" in setup  # the flag of the CPU build, for torch >= 2.10
    assert not re.search(r'-std=c\+\+1\d', setup)
    assert not [p for p in (tmp_path / 'src').rglob('*') if p.suffix in ('.o', '.so', '.whl')]  # nothing compiled


def test_cxx20_switch_fails_loudly_when_its_pattern_is_gone(tmp_path):
    setup = tmp_path / 'setup.py'
    setup.write_text("extra_compile_args = {'cxx': ['-std=gnu++17']}\n")  # a setup.py that changed its flags
    res = subprocess.run(['bash', '-c', f'source tools/install.sh; mmcv_patch_cxx20 {setup}'], capture_output=True,
                         text=True, cwd=ROOT)
    assert res.returncode == 1
    assert "found no '-std=c++1x' flag" in res.stderr and 'FIX: adapt MMCV_STD_PATTERN' in res.stderr
    assert setup.read_text() == "extra_compile_args = {'cxx': ['-std=gnu++17']}\n"
