# Baseline: the TinyMIM ViT-S UperNet recipe, initialised from an MAE pre-trained
# encoder (MAE's own release has ViT-B/L/H; ViT-S/T encoders come from your own MAE run).
_base_ = './upernet_tinymim-vit-s_8xb2-160k_ade20k-512x512.py'

model = dict(pretrained='checkpoints/mae_pretrain_vit_small.pth')
