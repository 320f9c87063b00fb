# UperNet on TinyMIMViT (BEiT/MAE-style segmentation ViT; the TinyMIM paper's ADE20K setup).
# mmseg's MAE UperNet model provides the UPerHead (pool scales 1, 2, 3, 6) and the
# auxiliary FCNHead (256 channels, loss weight 0.4, on the third level); the backbone
# and the neck are swapped. ViTPyramidNeck is mmseg's Feature2Pyramid (x4, x2, x1,
# x0.5; same weights and names) with a chosen output width: the paper configs widen
# every size's pyramid to the 768 channels of ViT-B's decoder.
_base_ = 'mmseg::_base_/models/upernet_mae.py'

model = dict(
    # ViTEncoderDecoder sets widths left as None from the backbone, checks the
    # others, turns `pretrained` into the backbone's Pretrained init_cfg, and
    # converts (or refuses) checkpoints loaded into the whole model.
    type='ViTEncoderDecoder',
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='TinyMIMViT',
        arch='base',
        img_size=512,
        out_indices=[3, 5, 7, 11],
        use_rel_pos_bias=True,  # zero init, not in the checkpoint
        layer_scale_init_value=1.0,
        drop_path_rate=0.1,
        drop_path_schedule='linear',
        final_norm=False),
    neck=dict(
        _delete_=True,
        type='ViTPyramidNeck',
        in_channels=None,  # the backbone's maps
        out_channels=None,  # None: the backbone's width
        norm_cfg=dict(type='SyncBN', requires_grad=True)),
    decode_head=dict(in_channels=None, channels=768, num_classes=150),
    auxiliary_head=dict(in_channels=None, num_classes=150),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))
