# TinyMIM ViT-S + UperNet with a light decoder: pyramid and UPerHead at the
# backbone's 384 channels instead of ViT-B's 768 (about a quarter of the head's FLOPs).
_base_ = './upernet_tinymim-vit-s_8xb2-160k_ade20k-512x512.py'

decoder_channels = 384
model = dict(neck=dict(out_channels=None), decode_head=dict(channels=decoder_channels))  # neck: the backbone's width
