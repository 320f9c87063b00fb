# TinyMIM ViT-B + UperNet on ADE20K, 512x512 crops, 160k iterations at batch 16 (8 GPUs x 2).
# Recipe: the TinyMIM paper's ADE20K setup and the reference TinyMIM-B run (52.2 mIoU reported).
_base_ = [
    '../_base_/models/upernet_tinymim_vit.py',
    '../_base_/datasets/ade20k_tinymim.py',
    '../_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]

crop_size = (512, 512)
# Width of the pyramid and of the UPerHead. 768 for every size: the paper compares
# ViT-T and ViT-S with ViT-B's decoder ("for fair comparison, the same decoder as
# TinyMIM-B"); the `-light` configs use the backbone's width instead.
decoder_channels = 768
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
    neck=dict(out_channels=decoder_channels),
    decode_head=dict(channels=decoder_channels))

# AdamW + layer-wise lr decay; mixed precision (AmpOptimWrapper needs a GPU: on a
# CPU pass --cfg-options optim_wrapper.type=OptimWrapper).
# decay_no_weight_decay_names=True: weight decay on pos_embed, cls_token (and
# dist_token) and the relative-bias tables, as the reference run had (its skip list
# never matched, see docs/segmentation.md); set it to False to exempt them.
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='TinyMIMLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(layer_decay_rate=layer_decay_rate, decay_no_weight_decay_names=True))
# The reference's lr_config (mmcv 1.x): poly (power 1) over all 160k iterations,
# times a linear warm-up from 1e-6 over the first 1500: lr(i) = base * (1 - i/160000)
# * (1e-6 + (1 - 1e-6) * min(i/1500, 1)). The two schedulers overlap and multiply.
# mmengine's schedulers reach their final value at iteration end - 1 and mmcv's at
# warmup_iters / max_iters, hence the ends 1501 and 160001.
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1501),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=0, end=160001),
]

train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
