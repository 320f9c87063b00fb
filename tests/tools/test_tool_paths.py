"""tinymim.apis.tools: the tools and configs are found in a checkout and in an installed package."""
import os
import os.path as osp
import subprocess
import sys

import pytest

from tests.helpers import ROOT
from tinymim.apis import tools


def test_checkout_layout_and_unknown_tool():
    assert tools.tool_path('deploy/export_onnx').endswith(osp.join('tools', 'deploy', 'export_onnx.py'))
    assert osp.isdir(osp.join(tools.configs_dir(), 'demo'))
    assert callable(tools.load_tool('plot_logs').main)
    with pytest.raises(FileNotFoundError, match="tool 'no_such_tool' is not one of the project's tools"):
        tools.load_tool('no_such_tool')


def test_installed_layout_is_the_fallback(tmp_path, monkeypatch):
    """A wheel has no checkout around the package: tools and configs come from tinymim/.mim."""
    mim = tmp_path / 'tinymim' / '.mim'
    (mim / 'tools').mkdir(parents=True)
    (mim / 'configs').mkdir()
    (mim / 'tools' / 'hello.py').write_text('def main(argv=None):\n    return argv\n')
    monkeypatch.setattr(tools, '_LAYOUTS', ((str(tmp_path / 'checkout'), 'mmseg_configs'), (str(mim), 'configs')))
    assert tools.configs_dir() == str(mim / 'configs')
    assert tools.load_tool('hello').main(['x']) == ['x']
    monkeypatch.setattr(tools, '_LAYOUTS', ((str(tmp_path / 'checkout'), 'mmseg_configs'),))
    with pytest.raises(FileNotFoundError, match='no tools folder'):
        tools.tools_dir()


def test_a_checkout_imported_through_a_link_uses_its_own_folders(tmp_path):
    """The install links site-packages/tinymim to the checkout's package (for mim); a script run as
    ``python tools/x.py`` imports the package through that link and must still find the checkout's
    ``mmseg_configs``, so the commands it logs read as typed in the checkout."""
    site = tmp_path / 'site-packages'
    site.mkdir()
    (site / 'tinymim').symlink_to(osp.join(ROOT, 'tinymim'))
    code = 'import tinymim.apis.tools as t; print(t.__file__); print(t.configs_dir())'
    out = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env={**os.environ, 'PYTHONPATH': str(site)},
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0].startswith(str(site))  # imported through the link
    assert out[1] == osp.join(osp.realpath(ROOT), 'mmseg_configs')
