# `make demo`, step 1: the sequential chain's last distillation step (ViT-S ->
# ViT-T, block 12 of 12, relations in 12 heads) scaled down to a
# CPU: 128-px views of the 16 photographs tools/demo.py writes to
# work_dirs/demo/images, batch 8 (2 iterations per epoch), 100 epochs.
# Everything else (model, views, AdamW recipe, hooks) is the real config's.
# tools/demo.py sets model.teacher.checkpoint (and the teacher arch when a
# TEACHER checkpoint of another size is given).
_base_ = '../distill/tinymim_tinymim-vit-s_to_vit-t_32xb128-300e_in1k.py'

img_size = 128
data_root = 'work_dirs/demo/images'
max_epochs = 100
warmup_epochs = 5

model = dict(
    teacher=dict(img_size=img_size, checkpoint='work_dirs/demo/teacher.pth'),
    student=dict(img_size=img_size),
    relation_chunk_size=None)  # 65 tokens: the whole relation fits at once

train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    pin_memory=False,
    dataset=dict(data_root=data_root, data_prefix=dict(img_path=''),
                 pipeline=[
                     dict(type='LoadImageRGB'),
                     dict(type='RandomResizedCropFlip', size=img_size, scale=(0.2, 1.0), interpolation='bicubic',
                          flip_prob=0.5),
                     dict(type='StudentColorJitter', brightness=0.4, contrast=0.4, saturation=0.4),
                     dict(type='PackTwoViewInputs'),
                 ]))

# The recipe's lr is for a 256-image batch; auto_scale_lr would make it
# 1.5e-4 x 8/256. A short CPU run needs a larger step to move at all.
# (The recipe's AdamW is already fused; foreach=True cannot be combined with it.)
optim_wrapper = dict(optimizer=dict(lr=1e-3))
auto_scale_lr = dict(enable=False)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=warmup_epochs, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, eta_min=0.0, by_epoch=True,
         begin=warmup_epochs, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)
default_hooks = dict(
    logger=dict(interval=2),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
randomness = dict(seed=0)
