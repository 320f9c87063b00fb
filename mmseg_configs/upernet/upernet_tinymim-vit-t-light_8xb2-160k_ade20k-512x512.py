# TinyMIM ViT-T + UperNet with a light decoder: pyramid and UPerHead at the
# backbone's 192 channels instead of ViT-B's 768 (about a sixteenth of the head's FLOPs).
_base_ = './upernet_tinymim-vit-t_8xb2-160k_ade20k-512x512.py'

decoder_channels = 192
model = dict(neck=dict(out_channels=None), decode_head=dict(channels=decoder_channels))  # neck: the backbone's width
