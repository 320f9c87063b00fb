# Baseline: the TinyMIM ViT-T UperNet recipe, initialised from an MAE pre-trained
# encoder (MAE's own release has ViT-B/L/H; ViT-S/T encoders come from your own MAE run).
# An MAE ViT-T has ViT-T's usual 3 heads, which it fine-tunes with (the TinyMIM ViT-T
# config uses its distilled 6).
_base_ = './upernet_tinymim-vit-t_8xb2-160k_ade20k-512x512.py'

model = dict(pretrained='checkpoints/mae_pretrain_vit_tiny.pth', backbone=dict(arch='tiny'))
