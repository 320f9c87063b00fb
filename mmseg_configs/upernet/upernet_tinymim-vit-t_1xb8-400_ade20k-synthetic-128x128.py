# A CPU-sized run of the ViT-T recipe (light decoder) on the generated ADE20K-format set
# (tools/dataset_converters/make_synthetic_ade20k.py data/synthetic_ade): 128x128
# crops, 400 iterations at batch 8, whole-image test. A pipeline check, not an
# ADE20K result. Set `pretrained` (or --cfg-options model.pretrained=...) to
# start from a distilled backbone; by default the backbone starts from scratch.
_base_ = './upernet_tinymim-vit-t-light_8xb2-160k_ade20k-512x512.py'

crop_size = (128, 128)
data_root = 'data/synthetic_ade/ADEChallengeData2016'
max_iters = 400

model = dict(
    pretrained=None,
    decode_head=dict(channels=64),  # a thinner UPerHead: 3x faster on a CPU
    data_preprocessor=dict(size=crop_size),
    backbone=dict(img_size=crop_size),
    test_cfg=dict(mode='whole'))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='ValidateSegLabels', num_classes=150),
    dict(type='RandomResize', scale=(512, 128), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(512, 128), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='ValidateSegLabels', num_classes=150),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=8, num_workers=2,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=2,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

# CPU-friendly: plain fp32 optimizer wrapper, a short warm-up and a larger lr
# (few iterations); layer decay as in the ViT-T recipe.
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(lr=4e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=50, end=max_iters),
]
train_cfg = dict(max_iters=max_iters, val_interval=200)
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=200, max_keep_ckpts=1))
