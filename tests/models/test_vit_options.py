"""TinyMIM*-T's options of the one ViT (distillation token, last-block projection), the pyramid
neck, and mmseg VisionTransformer's output options, so that mmseg's ViT heads take TinyMIMViT."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmseg.models.backbones import VisionTransformer as MMSegViT

from tests.helpers.reference_segmentation import RefBackbone, reference_index
from tests.helpers.seg import build_segmentor
from tinymim.models import TinyMIMViT, ViTPyramidNeck
from tinymim.models.pos_embed import relative_bias_table_size, relative_position_index
from tinymim.models.vit_weights import load_vit_checkpoint

MMSEG_CONFIGS = osp.join(osp.dirname(__import__('mmseg').__file__), '.mim', 'configs')
ARCH = dict(embed_dims=32, num_layers=3, num_heads=4)


@pytest.mark.parametrize('window', [(3, 3), (3, 4), (4, 2)])
@pytest.mark.parametrize('prefix', [1, 2])
def test_relative_position_index_matches_the_reference(window, prefix):
    index = relative_position_index(window, prefix)
    assert torch.equal(index, reference_index(*window, prefix))
    assert index.max() == relative_bias_table_size(window, prefix) - 1


@torch.no_grad()
def test_star_backbone_runs_at_other_sizes_and_keeps_its_prefix_tokens():
    """pos_embed (2 prefix tokens) and the tables (6 extra rows) resize for whole-image tests."""
    model = TinyMIMViT(ARCH, img_size=64, out_indices=(0, 1, 2, 2), use_rel_pos_bias=True,
                       layer_scale_init_value=1.0, dist_token=True, last_proj_dims=24).eval()
    assert model.pos_embed.shape == (1, 2 + 16, 32) and model.out_channels == [32, 32, 24, 24]
    assert model.blocks[0].attn.relative_position_bias_table.shape == (7 * 7 + 6, 4)
    for blk in model.blocks:
        blk.attn.relative_position_bias_table.normal_()
    outs = model(torch.randn(1, 3, 96, 80))
    assert [tuple(o.shape) for o in outs] == [(1, 32, 6, 5), (1, 32, 6, 5), (1, 24, 6, 5), (1, 24, 6, 5)]
    # conv1x1's LayerNorm has PyTorch's default eps, as the reference's (random-weight logits cannot tell 1e-5
    # from the blocks' 1e-6)
    assert model.conv1x1[0].eps == RefBackbone(32, 1, 4, (4, 4), star=True, proj_dims=24, out=32).conv1x1[0].eps
    assert model.get_layer_depth('dist_token') == (4, 5)  # the reference's rule: not an embedding
    assert model.get_layer_depth('conv1x1.1.weight') == (4, 5)
    assert 'dist_token' in model.no_weight_decay()
    with pytest.raises(ValueError, match='last_proj_dims must be a positive width'):
        TinyMIMViT(ARCH, img_size=64, last_proj_dims=0)


@torch.no_grad()
def test_mmseg_vit_output_options_give_mmsegs_outputs():
    """output_cls_token, final_norm and an int out_indices as mmseg's VisionTransformer has them."""
    theirs = MMSegViT(img_size=32, embed_dims=32, num_layers=3, num_heads=4, out_indices=-1, final_norm=True,
                      output_cls_token=True, norm_cfg=dict(type='LN', eps=1e-6))
    theirs.eval()  # (mmseg's train() returns None: no chaining)
    for p in theirs.parameters():
        p.normal_(0, 0.2)
    ours = TinyMIMViT(ARCH, img_size=32, out_indices=-1, final_norm=True, output_cls_token=True).eval()
    load_vit_checkpoint(ours, theirs.state_dict())
    x = torch.randn(2, 3, 32, 32)
    (their_map, their_cls), = theirs(x)
    (our_map, our_cls), = ours(x)
    torch.testing.assert_close(our_map, their_map, rtol=0, atol=1e-5)
    torch.testing.assert_close(our_cls, their_cls, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match='with_cls_token=True'):
        TinyMIMViT(ARCH, img_size=32, with_cls_token=False)
    with pytest.raises(ValueError, match=r'out_indices \[3\] are out of range for a ViT with 3 blocks'):
        TinyMIMViT(ARCH, img_size=32, out_indices=3)


def test_pyramid_neck_widths():
    same = ViTPyramidNeck([16] * 4, norm_cfg=dict(type='BN'))
    assert isinstance(same.project_1x, torch.nn.Identity) and isinstance(same.downsample_2x, torch.nn.MaxPool2d)
    wide = ViTPyramidNeck([16, 16, 16, 40], out_channels=64, norm_cfg=dict(type='BN')).eval()
    assert wide.upsample_4x[0].out_channels == 32 and isinstance(wide.project_1x, torch.nn.Conv2d)
    outs = wide([torch.randn(1, 16, 4, 4)] * 3 + [torch.randn(1, 40, 4, 4)])
    assert [tuple(o.shape) for o in outs] == [(1, 64, s, s) for s in (16, 8, 4, 2)]
    with pytest.raises(ValueError, match='four input widths'):
        ViTPyramidNeck([16, 16, 16])


# mmseg's ViT configs: (config, how its backbone outputs are used)
MMSEG_VIT_CONFIGS = [
    'dpt/dpt_vit-b16_8xb2-160k_ade20k-512x512.py',  # [map, cls] per level (output_cls_token)
    'segmenter/segmenter_vit-t_mask_8xb1-160k_ade20k-512x512.py',  # int out_indices=-1, final_norm
    'setr/setr_vit-l_pup_8xb2-160k_ade20k-512x512.py',  # four maps, the head takes one
    'vit/vit_vit-b16_mln_upernet_8xb2-160k_ade20k-512x512.py',  # MultiLevelNeck
    'mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py',  # Feature2Pyramid, rel. bias and layer scale
]


def swapped_backbone(backbone: dict) -> dict:
    """TinyMIMViT with the mmseg backbone's width, heads and output options, at 4 blocks
    (out_indices mapped onto them) to keep the test small."""
    out_indices = backbone.get('out_indices', -1)
    if not isinstance(out_indices, int):
        out_indices = list(range(len(out_indices)))
    new = dict(type='TinyMIMViT', arch=dict(embed_dims=backbone['embed_dims'], num_layers=4,
                                            num_heads=backbone['num_heads']),
               img_size=32, out_indices=out_indices, final_norm=backbone.get('final_norm', False),
               output_cls_token=backbone.get('output_cls_token', False))
    if backbone['type'] == 'MAE':
        new.update(use_rel_pos_bias=True, layer_scale_init_value=backbone['init_values'])
    return new


@pytest.mark.parametrize('config', MMSEG_VIT_CONFIGS, ids=[c.split('/')[0] for c in MMSEG_VIT_CONFIGS])
@torch.no_grad()
def test_mmseg_vit_configs_take_tinymim_vit(config):
    cfg = Config.fromfile(osp.join(MMSEG_CONFIGS, config))
    cfg.model.backbone = swapped_backbone(cfg.model.backbone)
    cfg.model.pop('pretrained', None)
    model = revert_sync_batchnorm(build_segmentor(cfg.model)).eval()
    logits = model._forward(torch.randn(1, 3, 32, 32))
    assert logits.shape[:2] == (1, 150) and torch.isfinite(logits).all()
