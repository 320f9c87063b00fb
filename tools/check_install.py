"""Verify the tinymim stack imports and mim finds tinymim; name the broken piece and the fix.

Run by ``tools/install.sh`` after installing (and on every later run).
Exits non-zero when any check fails.
"""
import importlib
import os.path as osp
import sys
import sysconfig
import traceback
import warnings

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def mim_sees_tinymim():
    """mim looks for a package's configs in <its dist's location>/<package>/.mim; a PEP 660 editable install has
    only its dist-info there, so tools/install.sh links the source package in."""
    from importlib.metadata import distribution
    where = osp.join(str(distribution('tinymim').locate_file('')), 'tinymim', '.mim', 'configs')
    assert osp.isdir(where), f'mim looks for the configs in {where}, which does not exist'


CHECKS = [
    ('torch', 'import torch, torchvision', 'torch/torchvision',
     'install a matching pair, e.g. TORCH_SPEC=torch==2.14.1 TORCHVISION_SPEC=torchvision==0.29.1 make install '
     '(remove .venv first)'),
    ('mmcv', 'from mmcv.ops import point_sample', 'mmcv (full build with compiled ops)',
     'mmcv-lite, or an mmcv wheel built for another torch, is installed: run '
     "'.venv/bin/pip uninstall -y mmcv mmcv-lite' and 'make install' again with TINYMIM_WHEELHOUSE pointing at a "
     'wheel built for this torch, or without it to build mmcv 2.1.0 from source'),
    ('mmseg', 'import mmseg', 'mmsegmentation',
     "mmseg 1.2.x needs mmcv>=2.0,<2.2 and ftfy/regex: '.venv/bin/pip install mmsegmentation==1.2.2 ftfy regex'"),
    ('timm', 'import timm', 'timm', "'.venv/bin/pip install timm'"),
    ('tinymim', 'import tinymim', 'the tinymim package', "'.venv/bin/pip install -e .' from the repository root"),
    ('mim', 'import mim', 'openmim (the `mim` command)',
     "openmim imports pkg_resources, which setuptools 82 removed: '.venv/bin/pip install \"setuptools<82\"'"),
    ('mim-link', 'mim_sees_tinymim()', "mim's view of tinymim (`mim train tinymim`)",
     f"after 'pip install -e .', link the source package where mim looks: "
     f"'ln -s {osp.join(ROOT, 'tinymim')} {osp.join(sysconfig.get_paths()['purelib'], 'tinymim')}' "
     "(tools/install.sh does this), or call tools/train.py and tools/test.py directly"),
]


def main() -> int:
    failed = 0
    for _, statement, piece, fix in CHECKS:
        try:
            with warnings.catch_warnings():  # openmim warns that pkg_resources is deprecated
                warnings.simplefilter('ignore')
                exec(statement, {'mim_sees_tinymim': mim_sees_tinymim})
        except Exception as e:  # noqa: BLE001 - any failure to import is a broken install
            failed += 1
            last = traceback.format_exception_only(type(e), e)[-1].strip()
            print(f'[install] BROKEN: {piece}: `{statement}` failed: {last}', file=sys.stderr)
            print(f'[install] FIX: {fix}', file=sys.stderr)
    if not failed:
        versions = {m: importlib.import_module(m).__version__ for m in
                    ('torch', 'torchvision', 'mmcv', 'mmengine', 'mmseg', 'timm', 'tinymim')}
        print('[install] stack OK: ' + ', '.join(f'{k} {v}' for k, v in versions.items()))
        print('[install] ' + deploy_extra())
    return 1 if failed else 0


def deploy_extra() -> str:
    """The optional deploy packages (ONNX export and ONNX Runtime): a note, never a failure."""
    from importlib.metadata import PackageNotFoundError, version
    found, missing = [], []
    for name in ('onnx', 'onnxruntime', 'onnxscript'):
        try:
            found.append(f'{name} {version(name)}')
        except PackageNotFoundError:
            missing.append(name)
    if missing:
        return (f'deploy extra incomplete (missing {", ".join(missing)}): the tools/deploy tools need it; '
                "install it with 'pip install -e .[deploy]'")
    return 'deploy extra: ' + ', '.join(found)


if __name__ == '__main__':
    sys.exit(main())
