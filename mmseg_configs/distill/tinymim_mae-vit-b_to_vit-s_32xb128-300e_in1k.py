# TinyMIM ViT-S: distil MAE ViT-B block 12 (of 12) into ViT-S's last block;
# the first step of the sequential chain B -> S -> T.
# ViT-S keeps its 6 heads; its relations are split into the teacher's 12.
_base_ = [
    '../_base_/models/tinymim_distill.py', '../_base_/datasets/imagenet_unlabeled.py',
    '../_base_/schedules/distill_300e.py', '../_base_/distill_runtime.py'
]
teacher_checkpoint = 'checkpoints/mae_pretrain_vit_base.pth'
model = dict(
    teacher=dict(arch='base', checkpoint=teacher_checkpoint),
    student=dict(arch='small'),
    teacher_block=12)
