# Distillation recipe (TinyMIM paper; docs/distillation.md): AdamW (0.9, 0.95), wd 0.05 (none on biases,
# norms and other 1-D params; the (1, 1, D) cls_token decays, as in the
# reference's MAE-style param groups), 300 epochs, 15 warm-up epochs, then a
# per-iteration half cosine to 0.
#
# lr = 1.5e-4 x total batch / 256: the optimizer's lr is the lr of a 256-image
# batch and auto_scale_lr multiplies it by (GPUs x batch_size) / 256 when the
# run starts, e.g. 2.4e-3 for 32 GPUs x 128.
optim_wrapper = dict(
    type='OptimWrapper',  # tools/train.py --amp switches to AmpOptimWrapper (the reference used AMP)
    # mmengine's default groups; the frozen teacher is left out with one log line, not one per tensor
    constructor='SkipFrozenOptimWrapperConstructor',
    # fused: torch's one-kernel AdamW (CPU and CUDA), the same update as the
    # reference's plain AdamW; on CPU 3x faster than the per-tensor loop and
    # foreach=True for ViT-S (27 vs 83-98 ms per step, benchmarks/distill_step.py).
    optimizer=dict(type='AdamW', lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05, fused=True),
    paramwise_cfg=dict(
        norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0))
auto_scale_lr = dict(base_batch_size=256, enable=True)

max_epochs = 300
warmup_epochs = 15
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, eta_min=0.0, by_epoch=True,
         begin=warmup_epochs, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)

checkpoint_interval = 10  # epochs between checkpoints
max_keep_ckpts = 3  # the newest K are kept; the last epoch is always saved
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=True, interval=checkpoint_interval,
                    max_keep_ckpts=max_keep_ckpts, save_last=True),
    sampler_seed=dict(type='DistSamplerSeedHook'))
