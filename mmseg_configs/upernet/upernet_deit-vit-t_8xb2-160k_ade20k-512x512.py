# Baseline: the TinyMIM ViT-T UperNet recipe, initialised from DeiT's supervised
# ImageNet-1K weights (timm keys; the classifier head is dropped). DeiT's ViT has
# the same structure (qkv bias, LayerNorm eps 1e-6, CLS token) with ViT-T's usual
# 3 heads, which it fine-tunes with (the TinyMIM ViT-T config uses its distilled 6).
_base_ = './upernet_tinymim-vit-t_8xb2-160k_ade20k-512x512.py'

model = dict(pretrained='checkpoints/deit_tiny_patch16_224-a1311bcf.pth', backbone=dict(arch='tiny'))
