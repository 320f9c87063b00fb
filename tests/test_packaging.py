"""A built wheel carries what `mim` needs: configs, tools, the model index and the metafiles it imports,
with every model's config path resolving inside the package."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from modelindex.load_model_index import load

from tests.helpers import ROOT as REPO

ROOT = Path(REPO)


def test_wheel_has_configs_tools_and_model_index(tmp_path):
    files = subprocess.run(['git', 'ls-files', '-z'], cwd=ROOT, capture_output=True, check=True).stdout
    src = tmp_path / 'src'
    for name in filter(None, files.decode().split('\0')):  # a clean copy: no .mim links from an editable install
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    res = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-build-isolation', '--no-deps',
                          '-w', str(tmp_path / 'dist'), str(src)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    (wheel,) = (tmp_path / 'dist').glob('tinymim-*.whl')
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / 'unpacked')
    mim = 'tinymim/.mim/'
    assert {mim + 'configs/distill/metafile.yml', mim + 'configs/upernet/metafile.yml', mim + 'model-index.yml',
            mim + 'tools/train.py', mim + 'configs/upernet/upernet_tinymim-vit-b_8xb2-160k_ade20k-512x512.py'} <= names
    models = load(str(tmp_path / 'unpacked' / mim / 'model-index.yml')).models
    assert len(models) == len(load(str(ROOT / 'model-index.yml')).models) > 0
    # `mim download` looks each model's config up inside .mim
    assert all((tmp_path / 'unpacked' / mim / model.config).is_file() for model in models)
