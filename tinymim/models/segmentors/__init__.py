from .vit_encoder_decoder import ViTEncoderDecoder

__all__ = ['ViTEncoderDecoder']
