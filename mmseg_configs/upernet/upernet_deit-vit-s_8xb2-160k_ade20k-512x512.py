# Baseline: the TinyMIM ViT-S UperNet recipe, initialised from DeiT's supervised
# ImageNet-1K weights (timm keys; the classifier head is dropped). DeiT's ViT has
# the same structure (qkv bias, LayerNorm eps 1e-6, CLS token), so only the checkpoint changes.
_base_ = './upernet_tinymim-vit-s_8xb2-160k_ade20k-512x512.py'

model = dict(pretrained='checkpoints/deit_small_patch16_224-cd65a155.pth')
