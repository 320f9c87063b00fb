"""Run a segmentor exported by ``tools/deploy/export_onnx.py`` with ONNX Runtime.

``OnnxSegmentor`` reads how the model was exported (input type, channel
order, normalisation, fixed or dynamic sizes, output, classes and palette)
from the ``tinymim`` metadata of the file, checks every input against it
and names the problem when something does not fit.
"""
import json
import os
import os.path as osp
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .export import METADATA_KEY, METADATA_VERSION
from .optional import require


def session_options(threads: Optional[int] = None):
    ort = require('onnxruntime')
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    return options


def open_session(path: str, threads: Optional[int] = None, providers: Optional[Sequence[str]] = None):
    """An ONNX Runtime session of ``path``; a missing file or one that is not
    an ONNX model is named."""
    ort = require('onnxruntime')
    if not osp.isfile(path):
        raise FileNotFoundError(f'ONNX model {path} does not exist')
    try:
        return ort.InferenceSession(path, session_options(threads),
                                    providers=list(providers or ['CPUExecutionProvider']))
    except Exception as err:  # ORT raises InvalidProtobuf, Fail, ... from its C++ core
        with open(path, 'rb') as f:
            header = f.read(8)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f'{path} is not an ONNX model ONNX Runtime can load (it starts with {header!r}): '
                         f'{first}') from err


def read_metadata(session, path: str) -> dict:
    props = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in props:
        raise ValueError(f'{path} is an ONNX model without tinymim metadata (how it was exported: input, '
                         'normalisation, output); export it with tools/deploy/export_onnx.py')
    meta = json.loads(props[METADATA_KEY])
    if meta.get('version') != METADATA_VERSION:
        raise ValueError(f'{path} has tinymim metadata version {meta.get("version")}; this version reads '
                         f'{METADATA_VERSION}: export it again')
    return meta


class OnnxSegmentor:
    """An exported segmentor and its ONNX Runtime session.

    Args:
        path: the ``.onnx`` file.
        threads: ONNX Runtime intra-op threads (default: its own choice, the
            machine's physical cores).
        providers: execution providers (default CPU).
    """

    def __init__(self, path: str, threads: Optional[int] = None, providers: Optional[Sequence[str]] = None):
        self.path = path
        self.session = open_session(path, threads, providers)
        self.meta = read_metadata(self.session, path)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dims = [d if isinstance(d, int) else None for d in inp.shape]
        self.input = self.meta['input']
        self.output = self.meta['output']
        self.num_classes = self.meta['num_classes']
        self.dtype = np.uint8 if self.input['dtype'] == 'uint8' else np.float32
        self.mean = np.asarray(self.input['mean'], np.float32).reshape(1, -1, 1, 1)
        self.std = np.asarray(self.input['std'], np.float32).reshape(1, -1, 1, 1)

    # --------------------------------------------------------------- shapes
    @property
    def fixed_size(self) -> Optional[Tuple[int, int]]:
        """(H, W) of a fixed-shape model, ``None`` when the sides are dynamic."""
        h, w = self.input_dims[2:]
        return (h, w) if h is not None and w is not None else None

    @property
    def fixed_batch(self) -> Optional[int]:
        return self.input_dims[0]

    def describe_input(self) -> str:
        dims = ['N' if d is None and i == 0 else ('H' if i == 2 else 'W') if d is None else str(d)
                for i, d in enumerate(self.input_dims)]
        return f'({", ".join(dims)}) {self.input["dtype"]}'

    def check_input(self, shape: Sequence[int], what: str = 'input') -> None:
        """Raise a ``ValueError`` naming ``what`` when an (N, 3, H, W) input does not fit the model."""
        if len(shape) != 4 or shape[1] != 3:
            raise ValueError(f'{what} has shape {tuple(shape)}; {self.path} takes {self.describe_input()} '
                             '(N, 3, H, W) batches')
        n, _, h, w = shape
        if self.fixed_size and (h, w) != self.fixed_size:
            raise ValueError(f'{what} is {h}x{w} but {self.path} was exported for {self.fixed_size[0]}x'
                             f'{self.fixed_size[1]} inputs only; resize it, or export with --shape {h} {w} '
                             'or --dynamic')
        if self.fixed_batch and n != self.fixed_batch:
            raise ValueError(f'{what} holds {n} images but {self.path} takes batches of {self.fixed_batch}; '
                             'export with --dynamic for other batch sizes')
        div = self.input['size_divisor']
        if h % div or w % div:
            raise ValueError(f'{what} is {h}x{w}: both sides must be multiples of {div} (the patch size)')

    # ------------------------------------------------------------- running
    def prepare(self, pixels: np.ndarray) -> np.ndarray:
        """The model's input from an (N, 3, H, W) RGB batch of 0-255 pixels
        (normalised here when the graph does not normalise)."""
        if self.input['normalized_in_graph']:
            return self._to_dtype(pixels)
        x = pixels.astype(np.float32)
        if self.input['network_channel_order'] == 'BGR':
            x = x[:, ::-1]
        return np.ascontiguousarray((x - self.mean) / self.std, dtype=np.float32)

    def from_network_input(self, x: np.ndarray) -> np.ndarray:
        """The model's input from what mmseg's data preprocessor produces
        (normalised, in the network's channel order): the preprocessing the
        graph holds is undone here."""
        if not self.input['normalized_in_graph']:
            return np.ascontiguousarray(x, dtype=np.float32)
        x = x * self.std + self.mean
        if self.input['network_channel_order'] == 'BGR':
            x = x[:, ::-1]
        return self._to_dtype(x)

    def _to_dtype(self, x: np.ndarray) -> np.ndarray:
        if self.dtype == np.uint8 and x.dtype != np.uint8:
            x = np.clip(np.rint(x), 0, 255)
        return np.ascontiguousarray(x, dtype=self.dtype)

    def run(self, inputs: np.ndarray, what: str = 'input') -> np.ndarray:
        """Logits (N, classes, H, W) or the mask (N, H, W) of a prepared input."""
        self.check_input(inputs.shape, what)
        return self.session.run(None, {self.input_name: inputs})[0]

    def predict(self, image: np.ndarray, what: str = 'image') -> np.ndarray:
        """The (H, W) class map of one (H, W, 3) RGB uint8 image.

        A dynamic model gets the image padded to a multiple of the patch
        size (with the mean colour, i.e. zeros after normalisation, as
        mmseg's data preprocessor pads) and the prediction cropped back.
        """
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f'{what} has shape {image.shape}; expected an (H, W, 3) colour image')
        h, w = image.shape[:2]
        div = self.input['size_divisor']
        pixels = image.transpose(2, 0, 1)[None].astype(np.float32)
        if not self.fixed_size:
            ph, pw = -h % div, -w % div
            if ph or pw:
                fill = self.mean if self.input['network_channel_order'] == 'RGB' else self.mean[:, ::-1]
                padded = np.broadcast_to(fill, (1, 3, h + ph, w + pw)).copy()
                padded[:, :, :h, :w] = pixels
                pixels = padded
        out = self.run(self.prepare(pixels), what)[0]
        mask = out.argmax(0) if self.output == 'logits' else out
        return mask[:h, :w]

    # -------------------------------------------------------------- colours
    def palette(self) -> List[List[int]]:
        """The test set's palette stored at export (mmseg's), else random
        colours as mmseg gives data sets without one (seeded, so stable)."""
        if self.meta.get('palette'):
            return self.meta['palette']
        rng = np.random.RandomState(42)
        return rng.randint(0, 255, size=(self.num_classes, 3)).tolist()

    def classes(self) -> List[str]:
        return self.meta.get('classes') or [str(i) for i in range(self.num_classes)]


def latency(model: 'OnnxSegmentor', shape: Optional[Tuple[int, int]] = None, batch: int = 1, warmup: int = 1,
            repeats: int = 3) -> float:
    """Best wall seconds of one ``run`` on a random (batch, 3, H, W) input
    (``shape``: required for a model with dynamic sides)."""
    import time
    size = model.fixed_size or shape
    if size is None:
        raise ValueError(f'{model.path} has dynamic sides: give the shape to time')
    n = model.fixed_batch or batch
    pixels = np.random.default_rng(0).integers(0, 256, (n, 3, *size)).astype(np.float32)
    x = model.prepare(pixels)
    for _ in range(warmup):
        model.run(x)
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        model.run(x)
        times.append(time.perf_counter() - start)
    return min(times)


def image_paths(inputs: Sequence[str]) -> List[str]:
    """Files given directly, and the images of given folders (sorted)."""
    exts = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
    paths = []
    for item in inputs:
        if osp.isdir(item):
            found = sorted(osp.join(item, f) for f in os.listdir(item) if f.lower().endswith(exts))
            if not found:
                raise FileNotFoundError(f'no images ({", ".join(exts)}) in the folder {item}')
            paths += found
        elif osp.isfile(item):
            paths.append(item)
        else:
            raise FileNotFoundError(f'image {item} does not exist')
    return paths
