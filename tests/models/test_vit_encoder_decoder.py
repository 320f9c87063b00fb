import pytest
import torch

from tests.helpers.seg import TINY_ARCH, build_segmentor, tiny_model_cfg
from tinymim.models.vit import VisionTransformer


def test_distillation_checkpoint_loads_as_pretrained(tmp_path):
    """An mmengine checkpoint from a distillation work_dir: student.-prefixed timm keys next to teacher ones."""
    student = VisionTransformer(arch=TINY_ARCH, img_size=32)
    teacher = VisionTransformer(arch=dict(embed_dims=96, num_layers=2, num_heads=4), img_size=32)
    state = {f'student.{k}': v for k, v in student.state_dict().items()}
    state.update({f'teacher.{k}': v for k, v in teacher.state_dict().items()})
    path = tmp_path / 'iter_100.pth'
    torch.save(dict(meta=dict(iter=100), state_dict=state, message_hub={}), str(path))

    model = build_segmentor(tiny_model_cfg(img_size=64, **{'model.pretrained': str(path)}))
    assert model.backbone.init_cfg == dict(type='Pretrained', checkpoint=str(path))
    model.init_weights()
    loaded = model.backbone.state_dict()
    for key in ('cls_token', 'patch_embed.proj.weight', 'blocks.3.attn.qkv.weight', 'blocks.3.mlp.fc2.bias'):
        assert torch.equal(loaded[key], student.state_dict()[key]), key
    # the 2x2 patch grid of the 32-px student is resized to the 4x4 grid of 64 px
    assert loaded['pos_embed'].shape == (1, 17, 64)
    assert torch.equal(loaded['pos_embed'][:, 0], student.pos_embed[:, 0])
    # fresh by design: relative position bias zero, layer scale 1
    assert not loaded['blocks.0.attn.relative_position_bias_table'].any()
    assert torch.all(loaded['blocks.0.ls1.gamma'] == 1)


def test_pretrained_and_init_cfg_conflict(tmp_path):
    cfg = tiny_model_cfg(**{'model.pretrained': 'a.pth',
                            'model.backbone.init_cfg': dict(type='Pretrained', checkpoint='b.pth')})
    with pytest.raises(ValueError, match='both model.pretrained .a.pth. and model.backbone.init_cfg'):
        build_segmentor(cfg)


def test_whole_image_test_mode_takes_any_size():
    """Pos-embed and relative bias are resized at run time; the preprocessor pads to the patch size."""
    cfg = tiny_model_cfg(img_size=64, **{'model.test_cfg': dict(mode='whole')})
    model = build_segmentor(cfg).eval()
    from mmseg.structures import SegDataSample
    data = dict(inputs=[torch.randint(0, 255, (3, 90, 150), dtype=torch.uint8)],
                data_samples=[SegDataSample(metainfo=dict(ori_shape=(90, 150), img_shape=(90, 150)))])
    with torch.no_grad():
        out = model.test_step(data)
    assert out[0].pred_sem_seg.data.shape == (1, 90, 150)
    assert out[0].seg_logits.data.shape == (150, 90, 150)
