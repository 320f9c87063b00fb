"""Where the project's command-line tools and configs are, and running a tool in this process.

A source checkout has them next to the package (``tools/``, ``mmseg_configs/``); an installed
package has them under ``tinymim/.mim/`` (``tools/``, ``configs/``), where ``mim`` looks.
"""
import importlib.util
import os.path as osp
from types import ModuleType

# realpath: the install links site-packages/tinymim to the checkout's package (for mim), and a
# script run as `python tools/x.py` imports it through that link; the checkout's folders must still win.
PACKAGE_DIR = osp.dirname(osp.dirname(osp.realpath(__file__)))
# (root, name of the configs folder there): the checkout first, so edits there are what runs.
_LAYOUTS = ((osp.dirname(PACKAGE_DIR), 'mmseg_configs'), (osp.join(PACKAGE_DIR, '.mim'), 'configs'))


def _project_dir(kind: str) -> str:
    for root, configs in _LAYOUTS:
        path = osp.join(root, configs if kind == 'configs' else kind)
        if osp.isdir(path):
            return path
    raise FileNotFoundError(f'no {kind} folder next to the tinymim package or under tinymim/.mim '
                            '(a source checkout has it; so does a package installed with pip)')


def tools_dir() -> str:
    return _project_dir('tools')


def configs_dir() -> str:
    return _project_dir('configs')


def tool_path(name: str) -> str:
    """``tools/<name>.py`` (``name`` may have a folder: ``deploy/export_onnx``)."""
    path = osp.join(tools_dir(), f'{name}.py')
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path} is missing: tool {name!r} is not one of the project\'s tools')
    return path


def load_tool(name: str) -> ModuleType:
    """A script of ``tools/`` as a module, to call its ``main(argv)`` in this process
    (``tools`` is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f'tinymim_tools_{name.replace("/", "_")}', tool_path(name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
