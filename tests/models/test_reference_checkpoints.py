"""The reference's segmentation checkpoints (mmseg 0.x, TinyMIM-B and TinyMIM*-T with the
768 and light decoders) and its released TinyMIM-FT-Tstar.pth load through the model's own
load path and give the reference model's logits; checkpoints that do not fit fail naming
the keys."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.runner import load_checkpoint
from mmseg.apis import init_model

from tests.helpers.reference_segmentation import (
    RefBackbone,
    ft_tstar_file,
    randomize,
    reference_checkpoint,
    reference_heads,
    reference_logits,
)
from tests.helpers.seg import UPERNET_DIR, build_segmentor
from tinymim.models.segmentors.segmentor_checkpoint import SegmentorCheckpointError

DIM, DEPTH, HEADS, IMG, PROJ = 32, 4, 4, 64, 48
GRID = (IMG // 16, IMG // 16)
# name: (real config, star, pyramid width): the reference pyramids are 4 x C (TinyMIM*-T)
# or C (TinyMIM-B and the light TinyMIM*-T) wide.
VARIANTS = {
    'b': ('upernet_tinymim-vit-b_8xb2-160k_ade20k-512x512.py', False, DIM),
    'star': ('upernet_tinymim-star-vit-t_8xb2-160k_ade20k-512x512.py', True, 4 * DIM),
    'star-light': ('upernet_tinymim-star-vit-t-light_8xb2-160k_ade20k-512x512.py', True, DIM),
}
TINY_CONFIG = """_base_ = {base!r}
model = dict(
    data_preprocessor=dict(size=({img}, {img})),
    backbone=dict(arch=dict(_delete_=True, embed_dims={dim}, num_layers={depth}, num_heads={heads}), img_size={img},
                  out_indices=[0, 1, 2, 3]{star_options}),
    neck=dict(out_channels={out}{neck_options}),
    decode_head=dict(channels=16),
    auxiliary_head=dict(channels=8))
"""


def tiny_config(tmp_path, variant: str) -> str:
    base, star, out = VARIANTS[variant]
    text = TINY_CONFIG.format(base=osp.join(UPERNET_DIR, base), img=IMG, dim=DIM, depth=DEPTH, heads=HEADS, out=out,
                              star_options=f', last_proj_dims={PROJ}' if star else '',
                              neck_options=f', mid_channels={2 * DIM}' if star else '')
    path = tmp_path / f'tiny_{variant}.py'
    path.write_text(text)
    return str(path)


def reference_model(variant: str):
    _, star, out = VARIANTS[variant]
    backbone = randomize(RefBackbone(DIM, DEPTH, HEADS, GRID, star=star, proj_dims=PROJ, out=out))
    head, aux = reference_heads(out, 16, 8)
    return backbone, head, aux


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_reference_segmentation_checkpoint_through_init_model(tmp_path, variant):
    backbone, head, aux = reference_model(variant)
    path = tmp_path / 'iter_160000.pth'
    torch.save(reference_checkpoint(backbone, head, aux), path)
    model = revert_sync_batchnorm(init_model(tiny_config(tmp_path, variant), str(path), device='cpu'))
    img = torch.randn(2, 3, IMG, IMG)
    expected = reference_logits(backbone, head, img)
    with torch.no_grad():
        actual = model._forward(img)
    assert relative_error(actual, expected) < 1e-4
    assert model.dataset_meta['classes'][3] == 'class3'  # the reference meta is read too
    # the auxiliary head arrived as well (it only trains, so the logits above do not show it)
    torch.testing.assert_close(model.auxiliary_head.conv_seg.weight, aux.conv_seg.weight, rtol=0, atol=0)


def test_partial_or_wrong_segmentation_checkpoint_fails_naming_the_keys(tmp_path):
    backbone, head, aux = reference_model('star')
    checkpoint = reference_checkpoint(backbone, head, aux)
    for key in ('backbone.blocks.1.gamma_1', 'backbone.fpn2.0.weight', 'decode_head.conv_seg.bias'):
        del checkpoint['state_dict'][key]
    torch.save(checkpoint, tmp_path / 'partial.pth')
    config = tiny_config(tmp_path, 'star')
    model = build_segmentor(Config.fromfile(config).model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(SegmentorCheckpointError) as error:
        load_checkpoint(model, str(tmp_path / 'partial.pth'))  # mmengine's non-strict loader
    for name in ('backbone.blocks.1.ls1.gamma', 'neck.upsample_2x.0.weight', 'decode_head.conv_seg.bias'):
        assert name in str(error.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing was loaded
    # a TinyMIM-B checkpoint into the TinyMIM*-T model: no distillation token
    backbone, head, aux = reference_model('b')
    torch.save(reference_checkpoint(backbone, head, aux), tmp_path / 'b.pth')
    with pytest.raises(ValueError, match='the model has a distillation token .* the checkpoint has none'):
        load_checkpoint(model, str(tmp_path / 'b.pth'))
    # a TinyMIM*-T checkpoint into a config with another pyramid width: shapes named
    light = build_segmentor(Config.fromfile(tiny_config(tmp_path, 'star-light')).model)
    backbone, head, aux = reference_model('star')
    torch.save(reference_checkpoint(backbone, head, aux), tmp_path / 'star.pth')
    with pytest.raises(SegmentorCheckpointError, match=r'of another shape: neck\.upsample_4x\.3\.weight'):
        load_checkpoint(light, str(tmp_path / 'star.pth'))


@torch.no_grad()
def test_ft_tstar_file_as_pretrained_and_load_from(tmp_path):
    """TinyMIM-FT-Tstar.pth initialises the TinyMIM*-T backbone: head, head_dist and fc_norm are
    not used, pos_embed (2 prefix tokens) is resized, and the backbone computes what the
    reference backbone computes at the start of fine-tuning (gamma 1, zero relative bias)."""
    ref = randomize(RefBackbone(DIM, DEPTH, HEADS, GRID, star=True, proj_dims=PROJ, out=4 * DIM))
    for blk in ref.blocks:
        blk.gamma_1.fill_(1.0), blk.gamma_2.fill_(1.0), blk.attn.relative_position_bias_table.zero_()
    state = ft_tstar_file(tmp_path / 'TinyMIM-FT-Tstar.pth', ref, grid_side=2)
    cfg = Config.fromfile(tiny_config(tmp_path, 'star'))
    cfg.model.pretrained = str(tmp_path / 'TinyMIM-FT-Tstar.pth')
    model = build_segmentor(cfg.model)
    model.init_weights()
    expected_pos = torch.nn.functional.interpolate(  # MAE's interpolate_pos_embed, 2 extra tokens kept
        state['pos_embed'][:, 2:].reshape(1, 2, 2, DIM).permute(0, 3, 1, 2), size=GRID, mode='bicubic',
        align_corners=False).permute(0, 2, 3, 1).reshape(1, -1, DIM)
    torch.testing.assert_close(model.backbone.pos_embed[:, 2:], expected_pos, rtol=0, atol=1e-6)
    torch.testing.assert_close(model.backbone.pos_embed[:, :2], state['pos_embed'][:, :2], rtol=0, atol=0)
    ref.pos_embed.copy_(model.backbone.pos_embed)
    img = torch.randn(2, 3, IMG, IMG)
    ours = model.backbone.eval()(img)
    assert [f.shape[1] for f in ours] == [DIM, DIM, DIM, PROJ]
    theirs = ref.features(img)
    for mine, expected in zip(ours, theirs):
        assert relative_error(mine, expected) < 1e-4
    # load_from / tools/test.py hand the same file to the whole segmentor (mmengine's loader)
    fresh = build_segmentor(cfg.model)
    load_checkpoint(fresh, str(tmp_path / 'TinyMIM-FT-Tstar.pth'))
    for key, value in model.backbone.state_dict().items():
        torch.testing.assert_close(fresh.backbone.state_dict()[key], value, rtol=0, atol=0, msg=key)


@pytest.mark.parametrize('kind', ['PT', 'FT'])
def test_tinymim_pt_and_ft_files_through_mmengines_loader(tmp_path, kind):
    """TinyMIM-PT-*.pth / TinyMIM-FT-*.pth ({'model': timm keys}) given to the whole segmentor
    (load_from, tools/test.py) load into the backbone; the neck and heads keep their weights."""
    from tinymim.models import VisionTransformer

    source = VisionTransformer(dict(embed_dims=DIM, num_layers=DEPTH, num_heads=HEADS), img_size=IMG)
    state = dict(randomize(source).state_dict())
    if kind == 'FT':
        state['fc_norm.weight'], state['fc_norm.bias'] = state.pop('norm.weight'), state.pop('norm.bias')
        state['head.weight'], state['head.bias'] = torch.randn(1000, DIM), torch.zeros(1000)
    torch.save({'model': state}, tmp_path / f'TinyMIM-{kind}-T.pth')
    model = build_segmentor(Config.fromfile(tiny_config(tmp_path, 'b')).model)
    neck = {k: v.clone() for k, v in model.neck.state_dict().items()}
    load_checkpoint(model, str(tmp_path / f'TinyMIM-{kind}-T.pth'))
    for key, value in model.backbone.state_dict().items():
        if 'relative_position' not in key and '.ls' not in key:
            torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=key)
    assert all(torch.equal(neck[k], v) for k, v in model.neck.state_dict().items())


def test_onnx_export_takes_a_reference_segmentation_checkpoint(tmp_path):
    """``tools/deploy/export_onnx.py`` loads a reference (mmseg 0.x) TinyMIM*-T checkpoint as the model's own
    load path does (the reference model's logits), and the ONNX file matches it."""
    pytest.importorskip('onnxruntime')
    from tinymim.deploy import export as ex
    backbone, head, aux = reference_model('star')
    torch.save(reference_checkpoint(backbone, head, aux), tmp_path / 'star.pth')
    model, cfg = ex.load_segmentor(tiny_config(tmp_path, 'star'), str(tmp_path / 'star.pth'))
    img = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        assert relative_error(model._forward(img), reference_logits(backbone, head, img)) < 1e-4
    out = str(tmp_path / 'star.onnx')
    meta = ex.export_onnx(model, cfg, out, shape=(IMG, IMG))
    rows = ex.verify_onnx(model, out, ex.verification_images(meta, (IMG, IMG)))
    assert all(r['max_rel_diff'] <= 1e-4 for r in rows), rows
    # a checkpoint that does not fit still fails naming the keys
    checkpoint = reference_checkpoint(backbone, head, aux)
    del checkpoint['state_dict']['backbone.fpn2.0.weight']
    torch.save(checkpoint, tmp_path / 'partial.pth')
    with pytest.raises(SegmentorCheckpointError, match='neck.upsample_2x.0.weight'):
        ex.load_segmentor(tiny_config(tmp_path, 'star'), str(tmp_path / 'partial.pth'))
