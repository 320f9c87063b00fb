# `make demo`, step 2: UperNet + the ViT-T distilled in step 1, fine-tuned on
# the generated ADE20K-format set (tools/demo.py writes it to
# work_dirs/demo/synthetic_ade). The ViT-T recipe at the CPU scale of the
# synthetic config, shortened to 150 iterations; tools/demo.py sets
# model.pretrained to the extracted student. A pipeline check, not an ADE20K
# result.
_base_ = '../upernet/upernet_tinymim-vit-t_1xb8-400_ade20k-synthetic-128x128.py'

data_root = 'work_dirs/demo/synthetic_ade/ADEChallengeData2016'
max_iters = 150
warmup_iters = 20

model = dict(pretrained='work_dirs/demo/student_vit-tiny.pth')
# torch's fused AdamW, as the distillation recipe uses: the same update in one kernel, much faster on a CPU.
optim_wrapper = dict(optimizer=dict(fused=True))
train_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = dict(dataset=dict(data_root=data_root))
# No validation during the short run: tools/test.py evaluates the final model once.
val_dataloader = None
val_evaluator = None
val_cfg = None

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=warmup_iters, end=max_iters),
]
train_cfg = dict(max_iters=max_iters)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1),
    # With --show-dir, draw every 5th test image (mmseg's default is every 50th).
    visualization=dict(interval=5))
randomness = dict(seed=0)
