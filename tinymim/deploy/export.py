"""Export an mmseg segmentor built from a config to ONNX, and check it
against PyTorch with ONNX Runtime.

The graph (``SegmentorGraph``) holds what mmseg's whole-image inference
does after data loading: the data preprocessor's channel flip and
normalisation (optional), the backbone, the neck, the decode head and the
bilinear resize of the logits to the input size; optionally the argmax.
The input is an (N, 3, H, W) RGB batch, uint8 or float32 pixel values
(0-255). Everything that reads a model back (``tinymim.deploy.runtime``)
learns how it was exported from the JSON the exporter stores in the ONNX
file's metadata under ``tinymim``.

``torch.onnx.export(..., dynamo=True)`` traces the model with
``torch.export``. mmdeploy 1.3.1, OpenMMLab's own route, does not run on
torch 2.x of this stack (docs/deploy.md says why).
"""
import copy
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.logging import print_log

from .optional import require

METADATA_KEY = 'tinymim'
METADATA_VERSION = 1
OUTPUTS = ('logits', 'mask')
INPUT_DTYPES = ('float32', 'uint8')
DYNAMIC = (None, 'batch', 'all')
DEFAULT_OPSET = 18  # the lowest opset torch.onnx's dynamo exporter writes without a version conversion
DEFAULT_TOLERANCE = 1e-4  # max |ORT - PyTorch| / max |PyTorch| of the fp32 logits


# ------------------------------------------------------------------- model
def load_config(config: str, cfg_options: Optional[dict] = None) -> Config:
    """The config with ``--cfg-options`` merged, its default scope set."""
    from mmengine.registry import init_default_scope

    import tinymim  # noqa: F401  (registers the modules; configs import it too)
    if not osp.isfile(config):
        raise FileNotFoundError(f'config {config} does not exist')
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if 'model' not in cfg:
        raise ValueError(f'{config} has no `model`: not a segmentation config')
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    return cfg


def load_segmentor(config: str, checkpoint: Optional[str], cfg_options: Optional[dict] = None):
    """The config's segmentor in eval mode with the checkpoint's weights
    (strictly: every weight of the model from the file, nothing left over),
    SyncBN reverted; returns ``(model, cfg)``.

    ``checkpoint=None`` keeps the random initialisation (tests, benchmarks).
    """
    from mmengine.model import revert_sync_batchnorm
    from mmseg.registry import MODELS

    cfg = load_config(config, cfg_options)
    model_cfg = copy.deepcopy(cfg.model)
    if 'pretrained' in model_cfg:  # the checkpoint holds every weight; do not read the backbone's init file
        model_cfg.pretrained = None
    model = revert_sync_batchnorm(MODELS.build(model_cfg))
    if not (hasattr(model, 'extract_feat') and hasattr(model, 'decode_head')):
        raise ValueError(f'{config} builds a {type(model).__name__}, not an mmseg EncoderDecoder segmentor '
                         '(extract_feat + decode_head)')
    if checkpoint is not None:
        load_segmentor_weights(model, checkpoint)
    return model.eval(), cfg


def load_segmentor_weights(model: nn.Module, checkpoint: str) -> None:
    """Load an mmengine segmentor checkpoint (``{'state_dict': ...}``, as
    ``tools/train.py`` writes) or a bare state dict, strictly, naming what
    does not fit."""
    from mmengine.logging import print_log

    from tinymim.models.segmentors import ViTEncoderDecoder
    from tinymim.models.segmentors.segmentor_checkpoint import is_segmentor_state, segmentor_state_dict
    from tinymim.models.vit_weights import read_checkpoint, summarize_keys

    ckpt = read_checkpoint(checkpoint)
    state = ckpt.get('state_dict', ckpt)
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f'{checkpoint} holds no state dict of tensors (keys: {sorted(ckpt)[:8]})')
    if state and all(k.startswith('module.') for k in state):
        state = {k[len('module.'):]: v for k, v in state.items()}
    if isinstance(model, ViTEncoderDecoder) and is_segmentor_state(state):
        # other layouts (mmseg 0.x reference checkpoints, BEiT-style keys) as the model's own
        # load path converts them; a file that does not fit raises there, naming the keys
        state, message = segmentor_state_dict(model, state)
        if message:
            print_log(message, logger='current')
    target = model.state_dict()
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    shapes = [f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(target[k].shape)}'
              for k in sorted(set(state) & set(target)) if state[k].shape != target[k].shape]
    if missing or unexpected or shapes:
        hint = ''
        if missing and all(not k.startswith(('decode_head.', 'neck.')) for k in state):
            hint = ('; it looks like backbone weights only: export needs a trained segmentor checkpoint '
                    '(tools/train.py writes one)')
        raise ValueError(
            f'{checkpoint} does not fit the config\'s model: missing {summarize_keys(missing)}, unexpected '
            f'{summarize_keys(unexpected)}, {len(shapes)} of another shape'
            + (f' ({"; ".join(shapes[:3])})' if shapes else '') + hint)
    model.load_state_dict(state, strict=True)


def preprocessing(model) -> Dict:
    """Mean, std (in the network's channel order) and that order, from the
    segmentor's ``SegDataPreProcessor`` (images are loaded as BGR by mmcv;
    ``bgr_to_rgb`` makes the network see RGB)."""
    dp = model.data_preprocessor
    normalize = bool(getattr(dp, '_enable_normalize', False))
    mean = dp.mean.flatten().tolist() if normalize else [0.0, 0.0, 0.0]
    std = dp.std.flatten().tolist() if normalize else [1.0, 1.0, 1.0]
    order = 'RGB' if getattr(dp, 'channel_conversion', False) else 'BGR'
    return dict(mean=mean, std=std, network_channel_order=order)


def dataset_meta(cfg: Config, num_classes: int) -> Dict:
    """Classes and palette of the config's test set (mmseg's visualiser
    colours), or ``None`` for both when the data set type is unknown."""
    from mmseg.registry import DATASETS
    dataset = cfg.get('test_dataloader', {}).get('dataset', {})
    cls = DATASETS.get(dataset.get('type')) if isinstance(dataset.get('type'), str) else None
    meta = dict(getattr(cls, 'METAINFO', {}) or {})
    meta.update(dataset.get('metainfo') or {})
    classes, palette = meta.get('classes'), meta.get('palette')
    if classes is None or palette is None or len(classes) != num_classes or len(palette) != num_classes:
        return dict(classes=None, palette=None)
    return dict(classes=list(classes), palette=[list(map(int, c)) for c in palette])


class ExportableAdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d`` that exports with dynamic input sizes.

    torch's decomposition of adaptive pooling bakes the bins of the example
    input into the graph (gather indices), which then fail at other sizes.
    Here the pooling is two matrix products, ``P_h @ x @ P_wᵀ``, where row
    ``i`` of ``P_h`` averages PyTorch's bin ``[floor(i*H/o), ceil((i+1)*H/o))``;
    the matrices are built from the input's size inside the graph.
    """

    def __init__(self, output_size):
        super().__init__()
        self.output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
        if any(s is None for s in self.output_size):
            raise ValueError(f'adaptive pooling with a None output size {output_size} is not supported')

    @staticmethod
    def pooling_matrix(size, out: int, like: torch.Tensor) -> torch.Tensor:
        """(out, size): row i averages PyTorch's adaptive-pooling bin i."""
        i = torch.arange(out, device=like.device)
        start = (i * size) // out
        end = ((i + 1) * size + out - 1) // out
        pos = torch.arange(size, device=like.device)
        inside = (pos[None] >= start[:, None]) & (pos[None] < end[:, None])
        return inside.to(like.dtype) / (end - start)[:, None].to(like.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        oh, ow = self.output_size
        if (oh, ow) == (1, 1):
            return x.mean((-2, -1), keepdim=True)
        ph = self.pooling_matrix(x.shape[-2], oh, x)
        pw = self.pooling_matrix(x.shape[-1], ow, x)
        return torch.matmul(torch.matmul(ph, x), pw.t())


def make_pools_exportable(model: nn.Module) -> int:
    """Swap every ``nn.AdaptiveAvgPool2d`` for ``ExportableAdaptiveAvgPool2d``
    (in place); returns how many."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.AdaptiveAvgPool2d):
                setattr(parent, name, ExportableAdaptiveAvgPool2d(child.output_size))
                count += 1
    return count


def fit_backbone_to_grid(backbone: nn.Module, grid: Tuple[int, int]) -> bool:
    """Resize a tinymim ViT's position embedding and relative-bias tables to
    the token ``grid`` once, in place, with the functions its forward calls
    on every input of that size (the same values). A fixed-shape graph then
    holds the resized tables as weights instead of the resizing (which the
    exporter would fold at a high cost). Returns whether anything changed."""
    from tinymim.models.pos_embed import relative_position_index, resize_pos_embed, resize_relative_bias_table
    from tinymim.models.vit import VisionTransformer
    grid = tuple(int(g) for g in grid)
    if (type(backbone).forward_blocks is not VisionTransformer.forward_blocks or backbone.num_prefix_tokens != 1
            or grid == tuple(backbone.grid_size)):
        return False  # another ViT (extra tokens, its own forward) resizes in the graph
    with torch.no_grad():
        backbone.pos_embed = nn.Parameter(resize_pos_embed(backbone.pos_embed, grid, backbone.grid_size),
                                          requires_grad=False)
        for block in backbone.blocks:
            attn = block.attn
            if attn.window:
                attn.relative_position_bias_table = nn.Parameter(
                    resize_relative_bias_table(attn.relative_position_bias_table, grid, attn.window))
                attn.relative_position_index = relative_position_index(grid).to(attn.relative_position_index.device)
                attn.window = grid
                attn._bias_cache = None
    backbone.grid_size = grid
    return True


class SegmentorGraph(nn.Module):
    """The exported computation: (N, 3, H, W) RGB pixels -> logits
    (N, classes, H, W) or the argmax mask (N, H, W).

    With ``normalize=False`` the input is what the data preprocessor
    produces instead (normalised, in the network's channel order).
    """

    def __init__(self, segmentor: nn.Module, mean: Sequence[float], std: Sequence[float],
                 network_channel_order: str = 'RGB', normalize: bool = True, output: str = 'logits'):
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f'output must be one of {OUTPUTS}, got {output!r}')
        self.segmentor = segmentor
        self.normalize = normalize
        self.flip_channels = network_channel_order == 'BGR'
        self.output = output
        self.align_corners = bool(getattr(segmentor, 'align_corners', False))
        self.register_buffer('pixel_mean', torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer('pixel_std', torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        if self.normalize:
            if self.flip_channels:
                x = x.flip(1)
            x = (x - self.pixel_mean) / self.pixel_std
        logits = self.segmentor.decode_head(self.segmentor.extract_feat(x))
        # mmseg's decode_head.predict: bilinear resize to the input size
        logits = F.interpolate(logits, size=x.shape[-2:], mode='bilinear', align_corners=self.align_corners)
        return logits.argmax(1) if self.output == 'mask' else logits


def reference_logits(model: nn.Module, images_rgb: torch.Tensor) -> torch.Tensor:
    """PyTorch logits through mmseg's own path: the model's data
    preprocessor on BGR images (as mmcv loads them), then ``encode_decode``."""
    from mmseg.structures import SegDataSample
    n, _, h, w = images_rgb.shape
    samples = [SegDataSample(metainfo=dict(ori_shape=(h, w), img_shape=(h, w))) for _ in range(n)]
    with torch.no_grad():
        data = model.data_preprocessor(dict(inputs=list(images_rgb.flip(1)), data_samples=samples), False)
        metas = [s.metainfo for s in data['data_samples']]
        return model.encode_decode(data['inputs'], metas)


# ------------------------------------------------------------------ export
def _dims(shape: Sequence[int], patch: int) -> Tuple[int, int]:
    h, w = (int(shape[0]), int(shape[-1]))
    if h <= 0 or w <= 0 or h % patch or w % patch:
        raise ValueError(f'--shape {h} {w}: both sides must be positive multiples of the patch size {patch}')
    return h, w


def size_divisor(model) -> int:
    """The multiple the input sides must have: the backbone's patch size,
    else the data preprocessor's test ``size_divisor``, else 1."""
    patch = getattr(model.backbone, 'patch_size', None)
    if isinstance(patch, (tuple, list)):
        patch = patch[0]
    if patch:
        return int(patch)
    test_cfg = getattr(model.data_preprocessor, 'test_cfg', None) or {}
    return int(test_cfg.get('size_divisor') or 1)


def export_onnx(model: nn.Module, cfg: Config, out: str, shape: Sequence[int] = (512, 512),
                dynamic: Optional[str] = None, batch: int = 1, normalize: bool = True, output: str = 'logits',
                input_dtype: str = 'float32', opset: int = DEFAULT_OPSET, source: Optional[Dict] = None) -> Dict:
    """Write the segmentor as ONNX to ``out``; returns the metadata stored in it.

    ``dynamic``: ``None`` (all sizes fixed), ``'batch'`` (the batch size
    free) or ``'all'`` (batch, height and width free; height and width stay
    multiples of the patch size). With dynamic sides the position
    embeddings and relative-bias tables are resized inside the graph.
    """
    require('onnxscript')
    require('onnx')
    if dynamic not in DYNAMIC:
        raise ValueError(f'dynamic must be one of {DYNAMIC}, got {dynamic!r}')
    if input_dtype not in INPUT_DTYPES:
        raise ValueError(f'input_dtype must be one of {INPUT_DTYPES}, got {input_dtype!r}')
    if not normalize and input_dtype == 'uint8':
        raise ValueError('a uint8 input needs the normalisation in the graph (drop --no-normalize)')
    if batch < 1:
        raise ValueError(f'batch must be >= 1, got {batch}')
    divisor = size_divisor(model)
    h, w = _dims(shape, divisor)
    pre = preprocessing(model)
    num_classes = int(model.decode_head.out_channels)
    graph_model = copy.deepcopy(model)
    if dynamic == 'all':
        make_pools_exportable(graph_model)
    else:
        fit_backbone_to_grid(graph_model.backbone, (h // divisor, w // divisor))
    graph = SegmentorGraph(graph_model, pre['mean'], pre['std'], pre['network_channel_order'],
                           normalize, output).eval()
    for p in graph.parameters():
        p.requires_grad_(False)  # inference paths only (no bias-gradient attention)

    dtype = torch.uint8 if input_dtype == 'uint8' else torch.float32
    dynamic_shapes = None
    example_batch = batch
    if dynamic is not None:
        from torch.export import Dim
        # torch.export specialises sizes of 0 and 1, and a side equal to the
        # position embedding's grid would fix the graph to it: trace with
        # batch 2 and sides that differ from the grid and from each other.
        dims = {0: Dim('batch', min=1, max=1024)}
        example_batch = 2
        if dynamic == 'all':
            dims.update({2: divisor * Dim('height_in_patches', min=1, max=1024),
                         3: divisor * Dim('width_in_patches', min=1, max=1024)})
            h, w = h + divisor, w + 2 * divisor
        dynamic_shapes = {'images': dims}
    example = torch.randint(0, 256, (example_batch, 3, h, w)).to(dtype)
    if not normalize:
        example = torch.randn(example_batch, 3, h, w)

    out_dir = osp.dirname(osp.abspath(out))
    os.makedirs(out_dir, exist_ok=True)
    with torch.no_grad():
        program = torch.onnx.export(graph, (example,), dynamo=True, opset_version=opset, input_names=['images'],
                                    output_names=[output], dynamic_shapes=dynamic_shapes, optimize=True,
                                    verbose=False)
    meta = dict(
        version=METADATA_VERSION,
        input=dict(layout='NCHW', dtype=input_dtype, channels='RGB' if normalize else 'network',
                   normalized_in_graph=normalize, size_divisor=divisor,
                   shape=None if dynamic == 'all' else [int(shape[0]), int(shape[-1])],
                   batch=None if dynamic else batch, **pre),
        output=output, num_classes=num_classes, align_corners=graph.align_corners,
        dynamic=dynamic, opset=opset, **dataset_meta(cfg, num_classes), source=source or {})
    program.model.metadata_props[METADATA_KEY] = json.dumps(meta)
    program.save(out, external_data=False)
    return meta


# ------------------------------------------------------------ verification
def real_image(size: Tuple[int, int]) -> np.ndarray:
    """scikit-image's astronaut photograph (shipped with it), RGB uint8, resized to (H, W)."""
    import cv2
    from skimage import data
    return cv2.resize(data.astronaut(), (size[1], size[0]), interpolation=cv2.INTER_AREA)


def verification_images(meta: Dict, shape: Sequence[int], real: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
    """The inputs ``verify_onnx`` checks: a random and a real image at the
    export shape (``real``: an RGB image, default scikit-image's astronaut);
    a dynamic model also gets a batch of 2, and one with dynamic sides the
    real image at a second, non-square size."""
    import cv2
    h, w = int(shape[0]), int(shape[-1])
    n = meta['input']['batch'] or 1
    rng = np.random.default_rng(0)
    fit = (lambda img, size: cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA))
    photo = fit(real, (h, w)) if real is not None else real_image((h, w))
    images = {'random': rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8), 'real': np.stack([photo] * n)}
    if meta['dynamic']:
        images['random, batch 2'] = rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8)
    if meta['dynamic'] == 'all':
        div = meta['input']['size_divisor']
        size = (max(div, h // 2 // div * div), max(div, w * 3 // 4 // div * div))
        images[f'real, {size[0]}x{size[1]}'] = fit(photo, size)
    return images


def relative_difference(ours: np.ndarray, ref: np.ndarray) -> float:
    """max |ours - ref| / max |ref|."""
    return float(np.abs(ours.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-12))


def verify_onnx(model: nn.Module, onnx_path: str, images: Dict[str, np.ndarray],
                tolerance: float = DEFAULT_TOLERANCE, threads: Optional[int] = None) -> List[Dict]:
    """Run the ONNX file with ONNX Runtime and the segmentor with PyTorch on
    each RGB uint8 image ((H, W, 3), or a batch (N, H, W, 3)); returns one
    row per entry.

    Logits: the max relative difference must be <= ``tolerance``. Masks:
    every pixel where ONNX Runtime picks another class than PyTorch must be
    a tie within ``tolerance`` (the logit of its class within tolerance *
    max |logit| of PyTorch's top one).
    """
    from .runtime import OnnxSegmentor
    session = OnnxSegmentor(onnx_path, threads=threads)
    rows = []
    for name, image in images.items():
        batch = np.ascontiguousarray((image[None] if image.ndim == 3 else image).transpose(0, 3, 1, 2))
        ref = reference_logits(model, torch.from_numpy(batch)).numpy()
        got = session.run(session.prepare(batch))
        scale = max(float(np.abs(ref).max()), 1e-12)
        if session.output == 'logits':
            diff = relative_difference(got, ref)
            rows.append(dict(image=name, shape=tuple(batch.shape), compared='logits', max_rel_diff=diff,
                             ok=diff <= tolerance))
        else:
            pred = ref.argmax(1)
            differ = got != pred
            picked = np.take_along_axis(ref, got[:, None].astype(np.int64), 1)[:, 0]
            gap = float((ref.max(1) - picked)[differ].max() / scale) if differ.any() else 0.0
            rows.append(dict(image=name, shape=tuple(batch.shape), compared='mask', pixels_differ=int(differ.sum()),
                             max_rel_diff=gap, ok=gap <= tolerance))
    return rows


def file_report(path: str) -> Dict:
    """Size (MiB), opset and op counts of an ONNX file."""
    onnx = require('onnx')
    proto = onnx.load(path, load_external_data=False)
    opset = next((o.version for o in proto.opset_import if o.domain in ('', 'ai.onnx')), None)
    ops: Dict[str, int] = {}
    for node in proto.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return dict(size_mib=osp.getsize(path) / 2**20, opset=opset, nodes=len(proto.graph.node), ops=ops)


def log(msg: str) -> None:
    print_log(msg, logger='current')
