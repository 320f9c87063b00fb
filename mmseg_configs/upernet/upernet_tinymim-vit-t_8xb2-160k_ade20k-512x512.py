# TinyMIM ViT-T + UperNet: the ViT-B recipe with the backbone swapped.
# The distilled ViT-T has 6 heads in distillation (12 in its relation block);
# fine-tuning uses the usual 3 (head splitting has no parameters, the
# checkpoint loads as is).
_base_ = './upernet_tinymim-vit-b_8xb2-160k_ade20k-512x512.py'

head_channels = 192
layer_decay_rate = 0.8  # the reference TinyMIM*-T segmentation config's value
model = dict(
    pretrained='checkpoints/tinymim_vit-tiny_distilled.pth',
    backbone=dict(arch='tiny'),
    decode_head=dict(channels=head_channels))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=layer_decay_rate))
