import os.path as osp

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from tests.helpers import ROOT
from tests.helpers.distill import TINY_STUDENT, TINY_TEACHER, write_images, write_teacher
from tests.helpers.seg import run_tool
from tinymim.apis import load_tool
from tinymim.apis import relations as visualize_relations

tool = load_tool('visualize_relations')
DISTILL_CONFIG = osp.join(ROOT, 'mmseg_configs', 'distill', 'tinymim_tinymim-vit-s_to_vit-t_32xb128-300e_in1k.py')


def arch(settings: dict) -> dict:
    return dict(_delete_=True, **settings)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """A tiny version of the real S -> T config, its teacher, and an image."""
    root = tmp_path_factory.mktemp('relations')
    write_teacher(root / 'teacher.pth', img_size=64)
    config = root / 'tiny_distill.py'
    teacher = str(root / 'teacher.pth')
    # `_delete_`: a custom arch dict replaces the base config's arch name.
    config.write_text(f"_base_ = {DISTILL_CONFIG!r}\n"
                      f"model = dict(teacher=dict(arch={arch(TINY_TEACHER)!r}, img_size=64, checkpoint={teacher!r}),\n"
                      f"             student=dict(arch={arch(TINY_STUDENT)!r}, img_size=64, num_heads=None),\n"
                      f"             teacher_block=2, relation_heads=None)\n")  # the tiny teacher's own heads
    (image,) = write_images(root, 1, size=(80, 100))
    return root, str(config), image


def test_a_student_identical_to_the_teacher_has_the_teachers_relations(setup):
    """Teacher as student (same arch and weights, distilled at the same block): maps equal, KL 0."""
    root, config, image = setup
    opts = {'model.student.arch': arch(TINY_TEACHER), 'model.student.pos_embed_type': 'learned',
            'model.student_block': 2}
    model = visualize_relations.build_distiller(config, str(root / 'teacher.pth'), opts)
    rel = visualize_relations.compute_relations(model, visualize_relations.load_image(image, 64), ('qk', 'vv'))
    for pair in ('qk', 'vv'):
        teacher, student = rel['teacher'][pair], rel['student'][pair]
        assert teacher.shape == (4, 17, 17)  # teacher heads, CLS + 4x4 patches
        torch.testing.assert_close(teacher.sum(-1), torch.ones(4, 17))
        torch.testing.assert_close(student, teacher)
        assert visualize_relations.row_kl(teacher[:, 5], student[:, 5]) == pytest.approx(0, abs=1e-6)


@pytest.mark.slow
def test_random_student_differs_and_figure_is_written(setup, tmp_path):
    root, config, image = setup
    student = write_teacher(root / 'student.pth', arch=TINY_STUDENT, img_size=64, seed=1)
    del student
    out = tmp_path / 'relations.png'
    run_tool('tools/visualize_relations.py', config, str(root / 'student.pth'), image, '--queries', 'cls', '1,2',
             '--out', str(out))
    picture = mpimg.imread(str(out))
    assert picture.shape[0] > 200 and picture.shape[1] > 5 * 100  # 2 query rows, image + 4 maps
    model = visualize_relations.build_distiller(config, str(root / 'student.pth'))
    rel = visualize_relations.compute_relations(model, visualize_relations.load_image(image, 64), ('qk',))
    assert visualize_relations.row_kl(rel['teacher']['qk'][:, 0], rel['student']['qk'][:, 0]) > 1e-4


def test_load_image_is_a_centre_square():
    img = np.zeros((60, 120, 3), np.uint8)
    img[:, 45:75] = 255  # a bright band in the middle
    import tempfile

    import mmcv
    with tempfile.TemporaryDirectory() as d:
        path = osp.join(d, 'band.png')
        mmcv.imwrite(img, path)
        out = visualize_relations.load_image(path, 32)
    assert out.shape == (32, 32, 3)
    assert out[:, 16].mean() > 200 and out[:, 0].mean() < 30  # centre kept, sides cropped


def test_bad_input_is_named(setup):
    root, config, image = setup
    model = visualize_relations.build_distiller(config, str(root / 'teacher.pth'),
                                                {'model.student.arch': arch(TINY_TEACHER), 'model.student_block': 2})
    with pytest.raises(ValueError, match='query patch 9,0 is outside the 4x4 token grid'):
        visualize_relations.visualize(model, image, str(root / 'x.png'), queries=[(9, 0)])
    with pytest.raises(ValueError, match='not a multiple of the patch size'):
        visualize_relations.visualize(model, image, str(root / 'x.png'), size=50)
    with pytest.raises(FileNotFoundError, match='missing.jpg'):
        visualize_relations.visualize(model, str(root / 'missing.jpg'), str(root / 'x.png'))
    seg_config = osp.join(ROOT, 'mmseg_configs', 'upernet', 'upernet_tinymim-vit-t_8xb2-160k_ade20k-512x512.py')
    with pytest.raises(ValueError, match='not a distillation config'):
        visualize_relations.build_distiller(seg_config, str(root / 'teacher.pth'))
    with pytest.raises(SystemExit):
        tool.parse_args([config, 'ckpt', image, '--queries', 'middle'])
