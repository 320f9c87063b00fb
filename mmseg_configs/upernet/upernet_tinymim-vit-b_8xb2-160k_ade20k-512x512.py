# TinyMIM ViT-B + UperNet on ADE20K, 512x512 crops, 160k iterations at batch 16 (8 GPUs x 2).
# Recipe: spec section 5 / the reference TinyMIM-B run (52.2 mIoU reported).
_base_ = [
    '../_base_/models/upernet_tinymim_vit.py',
    '../_base_/datasets/ade20k_tinymim.py',
    '../_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]

crop_size = (512, 512)
head_channels = 768  # UPerHead width, scaled with the backbone (B 768, S 384, T 192)
layer_decay_rate = 0.75
# Any checkpoint the ViT loader reads: TinyMIM/MAE/DeiT (timm keys), mmseg, or a
# distillation checkpoint straight from work_dirs (its `student.` weights are used).
pretrained = 'checkpoints/tinymim_vit-base_distilled.pth'

model = dict(
    # Training pads to the crop; testing pads to a multiple of the patch size, so
    # whole-image testing (model.test_cfg.mode=whole) takes any image size.
    data_preprocessor=dict(size=crop_size, test_cfg=dict(size_divisor=16)),
    pretrained=pretrained,
    backbone=dict(arch='base'),
    decode_head=dict(channels=head_channels))

# AdamW + layer-wise lr decay; mixed precision (AmpOptimWrapper needs a GPU: on a
# CPU pass --cfg-options optim_wrapper.type=OptimWrapper).
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='TinyMIMLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(layer_decay_rate=layer_decay_rate))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=1500, end=160000),
]

train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
