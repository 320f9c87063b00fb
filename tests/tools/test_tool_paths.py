"""tinymim.apis.tools: the tools and configs are found in a checkout and in an installed package."""
import os.path as osp

import pytest

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
