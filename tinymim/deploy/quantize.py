"""INT8 quantisation of an exported segmentor with ONNX Runtime's quantiser,
calibrated on the images the model sees at evaluation, and its evaluation.

Static quantisation (QDQ, int8 weights per channel, uint8 activations)
calibrates the activation ranges on the inputs the fp32 model receives when
the config's test pipeline runs over N images of its test set (each sliding
window is one input). Dynamic quantisation (int8 weights, activation ranges
computed at run time) needs no data and is the fallback.

Which nodes are quantised is chosen by op type and by module name: the
exporter records, for every ONNX node, the PyTorch modules it came from
(``segmentor.backbone.patch_embed.proj``, ``segmentor.decode_head.conv_seg``,
...), and ``exclude`` takes fnmatch patterns of those names. The defaults
(``DEFAULT_OP_TYPES``, ``DEFAULT_EXCLUDE``) are the choice measured in
docs/deploy.md.
"""
import copy
import fnmatch
import json
import time
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
from mmengine.config import Config

from .optional import require
from .ort_segmentor import build_onnx_segmentor

MODES = ('static', 'dynamic')
# Matrix products and convolutions carry nearly all the work; quantising the
# elementwise and layout ops (LayerNormalization, Reshape, Transpose, ...)
# only adds quantise/dequantise pairs around float kernels.
DEFAULT_OP_TYPES = ('MatMul', 'Conv')
# The patch embedding (the first layer, on raw pixels) and the classifier
# (the last layer, whose logits are compared across classes).
DEFAULT_EXCLUDE = ('segmentor.backbone.patch_embed.*', 'segmentor.decode_head.conv_seg')
SCOPES_KEY = 'pkg.torch.onnx.name_scopes'


# ----------------------------------------------------------- the test set
def test_loader(cfg: Config, num_images: Optional[int] = None):
    """The config's test dataloader (in this process), optionally on its first ``num_images`` images."""
    from mmengine.runner import Runner
    loader_cfg = copy.deepcopy(cfg.test_dataloader)
    loader_cfg.update(num_workers=0, persistent_workers=False)
    if num_images is not None:
        loader_cfg.dataset['indices'] = int(num_images)
    return Runner.build_dataloader(loader_cfg)


def evaluate(model, cfg: Config, num_images: Optional[int] = None) -> Dict:
    """mIoU (the config's ``test_evaluator``, mmseg's ``IoUMetric``) of a
    segmentor over the test set, and the seconds the model took."""
    from mmengine.evaluator import Evaluator
    loader = test_loader(cfg, num_images)
    evaluator = Evaluator(copy.deepcopy(cfg.test_evaluator))
    evaluator.dataset_meta = loader.dataset.metainfo
    seconds = 0.0
    for batch in loader:
        start = time.perf_counter()
        outputs = model.test_step(batch)
        seconds += time.perf_counter() - start
        evaluator.process(outputs, batch)
    metrics = evaluator.evaluate(len(loader.dataset))
    return dict(metrics=metrics, seconds=seconds, images=len(loader.dataset))


def calibration_inputs(cfg: Config, model_path: str, num_images: int, threads: Optional[int] = None) -> List:
    """The inputs the fp32 model gets on the first ``num_images`` test images
    (whole images or sliding windows, after the config's pipeline)."""
    if num_images < 1:
        raise ValueError(f'calibration needs at least one image, got {num_images}')
    model = build_onnx_segmentor(cfg, model_path, threads)
    inputs = []
    run = model.onnx.run

    def recording_run(x, what='input'):
        inputs.append(x.copy())
        return run(x, what)
    model.onnx.run = recording_run
    for batch in test_loader(cfg, num_images):
        model.test_step(batch)
    return inputs


# ------------------------------------------------------------ quantising
def node_scopes(node) -> List[str]:
    """The PyTorch module names an exported node came from (outermost first)."""
    for prop in node.metadata_props:
        if prop.key == SCOPES_KEY:
            try:
                return [s for s in json.loads(prop.value.replace("'", '"')) if s]
            except ValueError:
                return []
    return []


def select_nodes(model_path: str, op_types: Sequence[str], exclude: Iterable[str]) -> Dict[str, List[str]]:
    """Names of the nodes of ``op_types`` to quantise and of those ``exclude``
    (module-name patterns) keeps in float."""
    onnx = require('onnx')
    proto = onnx.load(model_path, load_external_data=False)
    exclude = list(exclude)
    chosen, excluded, matched = [], [], set()
    for node in proto.graph.node:
        if node.op_type not in op_types:
            continue
        hits = [p for p in exclude if any(fnmatch.fnmatchcase(s, p) for s in node_scopes(node))]
        matched.update(hits)
        (excluded if hits else chosen).append(node.name)
    unused = [p for p in exclude if p not in matched]
    if unused:
        raise ValueError(f'exclude patterns {unused} match no {"/".join(op_types)} node of {model_path}; '
                         'patterns name PyTorch modules, e.g. segmentor.backbone.patch_embed.* '
                         '(see docs/deploy.md)')
    return dict(quantize=chosen, exclude=excluded)


class _Reader:
    """ONNX Runtime ``CalibrationDataReader`` over recorded inputs."""

    def __init__(self, name: str, inputs: List[np.ndarray]):
        self.name, self.inputs = name, iter(inputs)

    def get_next(self):
        x = next(self.inputs, None)
        return None if x is None else {self.name: x}


def quantize(model_path: str, out_path: str, mode: str = 'static', calibration: Optional[List] = None,
             op_types: Sequence[str] = DEFAULT_OP_TYPES, exclude: Iterable[str] = DEFAULT_EXCLUDE,
             per_channel: bool = True, reduce_range: bool = False) -> Dict:
    """Write the INT8 model; returns what was quantised."""
    require('onnx')
    require('onnxruntime')
    from onnxruntime import quantization as q

    from .runtime import OnnxSegmentor
    if mode not in MODES:
        raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
    fp32 = OnnxSegmentor(model_path)  # checks the file and reads its metadata
    nodes = select_nodes(model_path, op_types, exclude)
    if not nodes['quantize']:
        raise ValueError(f'no {"/".join(op_types)} node of {model_path} is left to quantise')
    common = dict(per_channel=per_channel, reduce_range=reduce_range, nodes_to_quantize=nodes['quantize'],
                  op_types_to_quantize=list(op_types))
    if mode == 'static':
        if not calibration:
            raise ValueError('static quantisation needs calibration inputs (calibration_inputs())')
        q.quantize_static(model_path, out_path, _Reader(fp32.input_name, calibration),
                          quant_format=q.QuantFormat.QDQ, activation_type=q.QuantType.QUInt8,
                          weight_type=q.QuantType.QInt8, calibrate_method=q.CalibrationMethod.MinMax, **common)
    else:
        q.quantize_dynamic(model_path, out_path, weight_type=q.QuantType.QInt8, **common)
    _copy_metadata(model_path, out_path, dict(mode=mode, op_types=list(op_types), exclude=list(exclude),
                                              nodes=len(nodes['quantize']), excluded=len(nodes['exclude']),
                                              calibration_inputs=len(calibration or [])))
    return dict(quantized=len(nodes['quantize']), excluded=len(nodes['exclude']))


def _copy_metadata(src: str, dst: str, quantization: Dict) -> None:
    """Keep the exporter's ``tinymim`` metadata (and record the quantisation) in the INT8 file."""
    onnx = require('onnx')
    from .export import METADATA_KEY
    meta = {p.key: p.value for p in onnx.load(src, load_external_data=False).metadata_props}
    info = json.loads(meta[METADATA_KEY])
    info['quantization'] = quantization
    out = onnx.load(dst)
    props = {p.key: p for p in out.metadata_props}
    if METADATA_KEY in props:
        props[METADATA_KEY].value = json.dumps(info)
    else:
        entry = out.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(info)
    onnx.save(out, dst)
