import pytest
import torch
from mmseg.registry import MODELS

from tests.helpers.distill import TINY_STUDENT, distiller_cfg, write_teacher
from tests.helpers.seg import run_tool
from tinymim.apis import save_student
from tinymim.models.vit import VisionTransformer
from tinymim.models.vit_weights import load_vit_checkpoint


@pytest.fixture(scope='module')
def training_checkpoint(tmp_path_factory):
    """A checkpoint as the Runner writes it: student and projection weights, optimizer state, meta."""
    root = tmp_path_factory.mktemp('extract')
    write_teacher(root / 'teacher.pth')
    model = MODELS.build(distiller_cfg(root / 'teacher.pth', targets=[dict(type='relation', pairs=('qk',)),
                                                                      dict(type='feature', feature='block')]))
    optimizer = torch.optim.AdamW(model.parameters())
    path = root / 'epoch_1.pth'
    torch.save({'meta': {'epoch': 1}, 'state_dict': model.state_dict(), 'optimizer': optimizer.state_dict()}, path)
    return path, model.student.state_dict()


# 'state_dict' runs the command line (slow: a fresh process); the others call the function
@pytest.mark.parametrize('wrap', [pytest.param('state_dict', marks=pytest.mark.slow), 'model', 'none'])
def test_writes_bare_student_in_timm_keys(training_checkpoint, tmp_path, wrap):
    ckpt, student = training_checkpoint
    out = tmp_path / 'sub' / 'student.pth'
    if wrap == 'state_dict':  # the command line as users type it, once
        run_tool('tools/extract_student.py', str(ckpt), str(out))
    else:
        save_student(str(ckpt), str(out), wrap)
    saved = torch.load(out, weights_only=True)
    weights = saved if wrap == 'none' else saved[wrap]
    assert set(weights) == set(student)  # no 'student.' prefix, no projections, no optimizer
    assert all(torch.equal(weights[k], student[k]) for k in student)
    # It loads strictly into a plain ViT with the student's architecture.
    vit = VisionTransformer(arch=TINY_STUDENT, img_size=32)
    load_vit_checkpoint(vit, str(out))
    assert all(torch.equal(vit.state_dict()[k], student[k]) for k in student)


def test_checkpoint_without_student_fails(tmp_path):
    path = tmp_path / 'seg.pth'
    torch.save({'state_dict': {'backbone.cls_token': torch.zeros(1, 1, 8)}}, path)
    with pytest.raises(ValueError, match="student."):
        save_student(str(path), str(tmp_path / 'out.pth'))
