"""`make demo` at a very small scale: `tools/demo.py --quick` runs every step of the chain."""
import argparse
import os
import os.path as osp
import subprocess
import sys

import matplotlib.image as mpimg
import pytest
import torch
from mmengine.config import Config, DictAction

from tests.helpers import ROOT
from tests.helpers.distill import TINY_TEACHER
from tinymim.apis import checkpoint_arch, demo, load_tool
from tinymim.models.vit import ARCH_ZOO, VisionTransformer, check_heads


@pytest.fixture(scope='module')
def quick_demo(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('demo')
    env = dict(os.environ)
    env.pop('TEACHER', None)
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'demo.py'), '--quick', '--work-dir', str(work_dir)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return work_dir, proc.stdout + proc.stderr


@pytest.mark.slow
def test_quick_demo_writes_summary_and_pictures(quick_demo):
    work_dir, output = quick_demo
    assert 'RANDOMLY INITIALISED' in output  # said plainly when TEACHER is not set
    summary = (work_dir / 'summary.md').read_text()
    assert '**randomly initialised** ViT-S' in summary
    assert 'python tools/train.py mmseg_configs/demo/' in summary and 'python tools/test.py' in summary
    assert '**mIoU ' in summary and 'distillation `loss_qk`' in summary
    for name in ('relations', 'distill_curves', 'segment_curves'):
        picture = mpimg.imread(str(work_dir / 'figures' / f'{name}.png'))
        assert picture.ndim == 3 and min(picture.shape[:2]) > 100
        assert f'figures/{name}.png' in summary
    predictions = list((work_dir / 'predictions').rglob('*.png'))
    assert predictions, 'tools/test.py --show-dir drew no prediction'
    # the last step: the fine-tuned model exported, checked, timed in ONNX Runtime and drawing a mask
    assert '## Deployment' in summary and 'python tools/deploy/export_onnx.py' in summary
    assert 'ONNX Runtime |' in summary and 'figures/onnxruntime/ADE_val_00000001.png' in summary
    assert (work_dir / 'deploy' / 'upernet_vit-t_128x128.onnx').stat().st_size > 1e6
    assert mpimg.imread(str(work_dir / 'figures' / 'onnxruntime' / 'ADE_val_00000001.png')).shape[:2] == (128, 128)
    student = torch.load(str(work_dir / 'student_vit-tiny.pth'), weights_only=True)['state_dict']
    assert student['blocks.11.attn.qkv.weight'].shape == (576, 192)  # a full ViT-T


def test_teacher_arch_is_read_from_the_checkpoint(tmp_path):
    path = str(tmp_path / 'vit_tiny.pth')
    torch.save({'model': VisionTransformer(arch='tiny', img_size=32).state_dict()}, path)
    assert checkpoint_arch(path) == 'tiny'
    odd = str(tmp_path / 'odd.pth')
    torch.save(VisionTransformer(arch=TINY_TEACHER, img_size=32).state_dict(), odd)
    with pytest.raises(ValueError, match='width 64 and depth 3'):
        checkpoint_arch(odd)


@pytest.mark.parametrize('arch', sorted(ARCH_ZOO))
def test_teacher_of_any_size_pairs_with_the_demo_student(arch):
    # The demo config's 12 relation heads belong to a TinyMIM ViT-S teacher; other sizes use their own.
    cfg = Config.fromfile(osp.join(ROOT, demo.DISTILL_CONFIG))
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)  # as tools/train.py reads them
    cfg.merge_from_dict(parser.parse_args(['--cfg-options', *demo.teacher_options(arch)]).cfg_options)
    heads = cfg.model.relation_heads or ARCH_ZOO[arch]['num_heads']
    assert heads == (12 if arch in ('small', 'base') else ARCH_ZOO[arch]['num_heads'])
    for width in (ARCH_ZOO[arch]['embed_dims'], ARCH_ZOO[cfg.model.student.arch]['embed_dims']):
        check_heads(width, heads)


def test_missing_teacher_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='TEACHER=.*nope.pth does not exist'):
        load_tool('demo').main(['--teacher', str(tmp_path / 'nope.pth'), '--work-dir', str(tmp_path / 'wd')])
