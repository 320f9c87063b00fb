"""An exported ONNX model as an mmseg segmentor, so that mmengine's test
loop, mmseg's ``IoUMetric``, the visualisation hook and the config's own
pipeline (sliding window included) evaluate it unchanged."""
import copy
from typing import List, Optional, Sequence

import numpy as np
import torch
from mmseg.models import BaseSegmentor, EncoderDecoder
from mmseg.registry import MODELS


@MODELS.register_module()
class ONNXRuntimeSegmentor(EncoderDecoder):
    """Inference-only ``EncoderDecoder`` whose ``encode_decode`` runs an ONNX
    file in ONNX Runtime.

    Everything else is mmseg's: the data preprocessor (normalisation,
    padding), ``whole_inference``/``slide_inference`` (each window is one
    ONNX Runtime call; the logits are stitched and averaged as mmseg does)
    and ``postprocess_result`` (padding removed, resized to the original
    size). The graph holds the preprocessor's normalisation unless it was
    exported without it; then the preprocessed batch goes in as it is,
    otherwise it is converted back to RGB pixels first (exact up to float
    rounding; uint8 models round to whole pixel values).

    Args:
        model_path: the ``.onnx`` file written by ``tools/deploy/export_onnx.py``.
        data_preprocessor: the config's ``SegDataPreProcessor``.
        test_cfg: the config's ``model.test_cfg`` (``mode`` whole or slide).
        num_classes: the config's class count, checked against the model.
        threads / providers: ONNX Runtime settings.
    """

    def __init__(self, model_path: str, data_preprocessor: Optional[dict] = None, test_cfg: Optional[dict] = None,
                 num_classes: Optional[int] = None, threads: Optional[int] = None,
                 providers: Optional[Sequence[str]] = None, init_cfg=None):
        from mmengine.logging import print_log

        from .runtime import OnnxSegmentor
        BaseSegmentor.__init__(self, data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.onnx = OnnxSegmentor(model_path, threads=threads, providers=providers)
        meta = self.onnx.meta
        print_log(f'ONNX Runtime runs {model_path} ({", ".join(self.onnx.session.get_providers())}): input '
                  f'{self.onnx.describe_input()}, output {self.onnx.output}', logger='current')
        if self.onnx.output != 'logits':
            raise ValueError(f'{model_path} outputs the argmax mask; evaluation averages logits (sliding windows, '
                             'resizing to the original size): export it with --output logits')
        if num_classes is not None and num_classes != self.onnx.num_classes:
            raise ValueError(f'{model_path} predicts {self.onnx.num_classes} classes but the config has '
                             f'{num_classes}: it was exported from another config')
        self._check_preprocessing(model_path)
        from mmengine.config import ConfigDict
        self.test_cfg = ConfigDict(test_cfg or dict(mode='whole'))  # mmseg reads test_cfg.mode
        self.train_cfg = None
        self.decode_head = None
        self.num_classes = self.out_channels = self.onnx.num_classes
        self.align_corners = meta['align_corners']
        if (self.test_cfg.get('mode') == 'slide' and self.onnx.fixed_size
                and tuple(self.test_cfg.crop_size) != self.onnx.fixed_size):
            h, w = self.test_cfg.crop_size
            raise ValueError(f'{model_path} was exported for {self.onnx.fixed_size[0]}x{self.onnx.fixed_size[1]} '
                             f'inputs but the config slides a {h}x{w} window: export with --shape {h} {w} '
                             'or --dynamic')

    def _check_preprocessing(self, model_path: str) -> None:
        from .export import preprocessing
        inp, ours = self.onnx.input, preprocessing(self)
        if (ours['network_channel_order'] != inp['network_channel_order']
                or not np.allclose(ours['mean'], inp['mean']) or not np.allclose(ours['std'], inp['std'])):
            raise ValueError(
                f"{model_path} was exported with mean {inp['mean']}, std {inp['std']} and "
                f"{inp['network_channel_order']} network input, but the config's data preprocessor has mean "
                f"{ours['mean']}, std {ours['std']} and {ours['network_channel_order']}: it was exported from "
                'another config')

    @property
    def with_decode_head(self) -> bool:
        return True  # the head is inside the graph

    def extract_feat(self, inputs):
        raise NotImplementedError('the backbone of an ONNX model is inside its graph: there are no features')

    def loss(self, inputs, data_samples):
        raise NotImplementedError('ONNXRuntimeSegmentor only predicts; train the PyTorch model')

    def encode_decode(self, inputs: torch.Tensor, batch_img_metas: List[dict]) -> torch.Tensor:
        x = self.onnx.from_network_input(inputs.detach().cpu().float().numpy())
        logits = self.onnx.run(x, what=f'input of {"window" if self.test_cfg.get("mode") == "slide" else "image"} '
                                       f'{batch_img_metas[0].get("img_path", "")}'.rstrip())
        return torch.from_numpy(logits).to(inputs.device)

    def _forward(self, inputs, data_samples=None):
        return self.encode_decode(inputs, [dict(img_shape=inputs.shape[2:])])


def onnxruntime_model_cfg(model_cfg: dict, model_path: str, threads: Optional[int] = None) -> dict:
    """The config's model swapped for the exported one in ONNX Runtime,
    keeping its data preprocessor, test_cfg (whole or slide) and class count."""
    return dict(type='ONNXRuntimeSegmentor', model_path=model_path,
                data_preprocessor=copy.deepcopy(model_cfg.get('data_preprocessor')),
                test_cfg=copy.deepcopy(model_cfg.get('test_cfg')),
                num_classes=model_cfg.get('decode_head', {}).get('num_classes'), threads=threads)


def build_onnx_segmentor(cfg, model_path: str, threads: Optional[int] = None) -> ONNXRuntimeSegmentor:
    """``ONNXRuntimeSegmentor`` of ``model_path`` for a loaded config."""
    return MODELS.build(onnxruntime_model_cfg(cfg.model, model_path, threads))
