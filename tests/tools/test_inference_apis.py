"""mmseg's own inference entry points on every UperNet config, with no labels anywhere:
``inference_model``, ``MMSegInferencer`` and the steps of mmseg's ``demo/image_demo.py``
(``init_model``, ``revert_sync_batchnorm`` on a CPU, ``inference_model``,
``show_result_pyplot`` to a file). mmseg drops ``LoadAnnotations`` from the config's test
pipeline for these; ``ValidateSegLabels`` stays and must let the image through."""
import os.path as osp

import mmcv
import numpy as np
import pytest
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.runner.checkpoint import save_checkpoint
from mmseg.apis import MMSegInferencer, inference_model, init_model, show_result_pyplot

from tests.helpers.seg import UPERNET_DIR, build_segmentor, set_test_resize

# One config per test pipeline and backbone kind: the paper configs share the ADE20K
# test pipeline of mmseg_configs/_base_/datasets/ade20k_tinymim.py (B, S, T and the
# baselines differ only in sizes; TinyMIM*-T adds the distillation token and the
# projected last map), the CPU-sized config has its own. That every config's test
# pipeline takes an image without labels is checked in tests/configs/test_upernet_configs.py.
CONFIGS = [osp.join(UPERNET_DIR, name) for name in (
    'upernet_tinymim-vit-b_8xb2-160k_ade20k-512x512.py',
    'upernet_tinymim-star-vit-t_8xb2-160k_ade20k-512x512.py',
    'upernet_tinymim-vit-t_1xb8-400_ade20k-synthetic-128x128.py')]

def small(config: str) -> Config:
    """The config with a 4-block, 32-wide ViT, thin heads and a small test resize: the
    pipeline, the model type and its options are the config's own."""
    cfg = Config.fromfile(config)
    backbone = cfg.model.backbone
    backbone.arch = dict(embed_dims=32, num_layers=4, num_heads=4 if backbone.get('dist_token') else 2)
    backbone.out_indices = [0, 1, 2, 3]
    if backbone.get('last_proj_dims'):
        backbone.last_proj_dims = 48
    cfg.model.neck.out_channels = None
    cfg.model.neck.pop('mid_channels', None)
    cfg.model.decode_head.channels = 16
    cfg.model.auxiliary_head.channels = 8
    set_test_resize(cfg, (128, 32))
    assert any(step['type'] == 'ValidateSegLabels' for step in cfg.test_pipeline)
    return cfg


@pytest.fixture(scope='module')
def image(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('img') / 'street.jpg')
    mmcv.imwrite(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8), path)
    return path


def write_checkpoint(cfg: Config, path: str) -> str:
    model = build_segmentor(cfg.model)
    classes = tuple(f'class{i}' for i in range(150))
    save_checkpoint(dict(state_dict=model.state_dict(), meta=dict(
        dataset_meta=dict(classes=classes, palette=[[i, 255 - i, i] for i in range(150)]))), path)
    return path


@pytest.mark.parametrize('config', CONFIGS, ids=[osp.basename(c)[:-3] for c in CONFIGS])
def test_inference_model_and_image_demo_steps(config, image, tmp_path):
    cfg = small(config)
    checkpoint = write_checkpoint(cfg, str(tmp_path / 'model.pth'))
    model = revert_sync_batchnorm(init_model(cfg, checkpoint, device='cpu'))  # image_demo.py with --device cpu
    result = inference_model(model, image)
    assert result.pred_sem_seg.data.shape == (1, 40, 60)
    assert 'gt_sem_seg' not in result
    out_file = str(tmp_path / 'painted.png')
    show_result_pyplot(model, image, result, title='result', opacity=0.5, draw_gt=False, show=False,
                       out_file=out_file)
    assert mmcv.imread(out_file).shape == (40, 60, 3)


@pytest.mark.parametrize('config', CONFIGS[1:], ids=[osp.basename(c)[:-3] for c in CONFIGS[1:]])
def test_mmseg_inferencer(config, image, tmp_path):
    cfg = small(config)
    checkpoint = write_checkpoint(cfg, str(tmp_path / 'model.pth'))
    inferencer = MMSegInferencer(model=cfg, weights=checkpoint, device='cpu')
    inferencer.model = revert_sync_batchnorm(inferencer.model)
    out = inferencer(image, out_dir=str(tmp_path / 'out'))
    assert out['predictions'].shape == (40, 60)
    assert mmcv.imread(str(tmp_path / 'out' / 'pred' / '00000000_pred.png'), 'unchanged').shape == (40, 60)
    assert mmcv.imread(str(tmp_path / 'out' / 'vis' / 'street.jpg')).shape == (40, 60, 3)

