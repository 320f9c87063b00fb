# Baseline: the TinyMIM ViT-B UperNet recipe, initialised from DeiT's supervised
# ImageNet-1K weights (timm keys; the classifier head is dropped). DeiT's ViT has
# the same structure (qkv bias, LayerNorm eps 1e-6, CLS token), so only the checkpoint changes.
_base_ = './upernet_tinymim-vit-b_8xb2-160k_ade20k-512x512.py'

model = dict(pretrained='checkpoints/deit_base_patch16_224-b5f2ef4d.pth')
