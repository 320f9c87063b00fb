# TinyMIM ViT-B: distil MAE ViT-L block 18 (of 24) into ViT-B's last block.
# ViT-B keeps its 12 heads; its relations are split into the teacher's 16.
_base_ = [
    '../_base_/models/tinymim_distill.py', '../_base_/datasets/imagenet_unlabeled.py',
    '../_base_/schedules/distill_300e.py', '../_base_/distill_runtime.py'
]
teacher_checkpoint = 'checkpoints/mae_pretrain_vit_large.pth'
model = dict(
    teacher=dict(arch='large', checkpoint=teacher_checkpoint),
    student=dict(arch='base'),
    teacher_block=18)
