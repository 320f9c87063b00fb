# TinyMIM*-T + UperNet with the light decoder (the reference
# upernet_mae_tiny_light_12_512_slide_160k_ade20k.py): pyramid and UPerHead at 192
# channels instead of 768. The reference publishes this config but not the backbone
# file it ran with (its TinyMIM*-T backbone hard-codes 768 output channels); the
# pyramid here is the TinyMIM*-T one with 192 output channels: x4 ConvT 192->384, BN,
# GELU, ConvT 384->192; x2 ConvT 192->192; x1 Conv1x1 192->192; x0.5 Conv3x3/2 1280->192.
_base_ = './upernet_tinymim-star-vit-t_8xb2-160k_ade20k-512x512.py'

decoder_channels = 192
model = dict(neck=dict(out_channels=None), decode_head=dict(channels=decoder_channels))  # neck: the backbone's width
