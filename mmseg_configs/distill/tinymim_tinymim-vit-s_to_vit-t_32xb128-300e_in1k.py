# TinyMIM ViT-T, the sequential chain's last step: the TinyMIM ViT-S distilled
# by tinymim_mae-vit-b_to_vit-s_32xb128-300e_in1k.py is the teacher, by path,
# with no conversion (block 12 of 12; relations in its 6 heads).
# ViT-T heads quirk: 6 student heads as in the reference (fine-tuning uses 3);
# --cfg-options model.student.num_heads=3 for the standard ViT-T.
_base_ = [
    '../_base_/models/tinymim_distill.py', '../_base_/datasets/imagenet_unlabeled.py',
    '../_base_/schedules/distill_300e.py', '../_base_/distill_runtime.py'
]
teacher_checkpoint = 'work_dirs/tinymim_mae-vit-b_to_vit-s_32xb128-300e_in1k/epoch_300.pth'
model = dict(
    teacher=dict(arch='small', checkpoint=teacher_checkpoint),
    student=dict(arch='tiny', num_heads=6),
    teacher_block=12)
