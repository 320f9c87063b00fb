# TinyMIM ViT-S + UperNet: the ViT-B recipe with the backbone swapped.
_base_ = './upernet_tinymim-vit-b_8xb2-160k_ade20k-512x512.py'

head_channels = 384
# No reference value for S; it is a distilled 12-block student like T, so it
# takes the reference's small-model rate (0.8), milder than B's 0.75.
layer_decay_rate = 0.8
model = dict(
    pretrained='checkpoints/tinymim_vit-small_distilled.pth',
    backbone=dict(arch='small'),
    decode_head=dict(channels=head_channels))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=layer_decay_rate))
