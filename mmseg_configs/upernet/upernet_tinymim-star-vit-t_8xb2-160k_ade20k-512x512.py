# TinyMIM*-T + UperNet (the paper's 45.0 mIoU row): the reference
# upernet_mae_tiny_12_512_slide_160k_ade20k.py recipe. It is the ViT-T recipe
# (layer decay 0.8, ViT-B's 768-channel decoder) with the TinyMIM*-T backbone:
# - 12 heads, a distillation token after CLS (pos_embed covers 2 + H*W tokens);
# - conv1x1 = LayerNorm -> Linear(192, 1280) -> GELU on the last block's tokens,
#   so the fourth map has 1280 channels;
# - the pyramid widens 192 (and 1280) channels to 768: x4 ConvT 192->384, BN, GELU,
#   ConvT 384->768; x2 ConvT 192->768; x1 Conv1x1 192->768; x0.5 Conv3x3/2 1280->768
#   (set explicitly below, so that the light variant keeps this structure at 192).
# Initialised from the ImageNet fine-tuned TinyMIM-FT-Tstar.pth, whose head,
# head_dist and fc_norm are not used.
_base_ = './upernet_tinymim-vit-t_8xb2-160k_ade20k-512x512.py'

model = dict(
    pretrained='checkpoints/TinyMIM-FT-Tstar.pth',
    backbone=dict(arch=dict(num_heads=12), dist_token=True, last_proj_dims=1280),
    neck=dict(mid_channels=384, project_1x=True))
