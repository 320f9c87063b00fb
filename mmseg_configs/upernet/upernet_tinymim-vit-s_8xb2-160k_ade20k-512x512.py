# TinyMIM ViT-S + UperNet: the ViT-B recipe with the backbone swapped. The decoder
# stays ViT-B's (768-channel pyramid and UPerHead), as in the paper's comparison;
# upernet_tinymim-vit-s-light_* uses 384 channels.
_base_ = './upernet_tinymim-vit-b_8xb2-160k_ade20k-512x512.py'

# No reference value for S; it is a distilled 12-block student like T, so it
# takes the reference's small-model rate (0.8), milder than B's 0.75.
layer_decay_rate = 0.8
model = dict(
    pretrained='checkpoints/tinymim_vit-small_distilled.pth',
    backbone=dict(arch='small'))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=layer_decay_rate))
