"""The distillation views (TinyMIM paper, distillation recipe): one shared crop + flip, then a plain
teacher view and a colour-jittered student view.

Images are decoded to RGB uint8 and stay uint8 (CHW tensors after the crop)
until the data preprocessor normalises them on the device. Crop, resize and
jitter are torchvision's tensor ops, so the semantics are torchvision's
(``RandomResizedCrop`` sampling, antialiased bicubic resize, ``ColorJitter``
factors uniform in [1 - x, 1 + x] applied in random order).
"""
from typing import Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine import fileio
from mmengine.structures import BaseDataElement
from mmseg.registry import TRANSFORMS
from torchvision.transforms import ColorJitter, InterpolationMode, RandomResizedCrop
from torchvision.transforms.v2 import functional as TF


class ImageLoadError(OSError):
    """An image that cannot be read or decoded; the dataset skips it."""

    def __init__(self, path: str, reason: str):
        super().__init__(f'{path}: {reason}')
        self.path, self.reason = path, reason


@TRANSFORMS.register_module()
class LoadImageRGB(BaseTransform):
    """Read ``results['img_path']`` and decode it to an RGB uint8 HWC array.

    Grayscale, palette, CMYK and 16-bit images are converted to 8-bit RGB
    and an alpha channel is dropped (OpenCV's ``IMREAD_COLOR``). EXIF
    orientation is ignored, as PIL (the reference's loader) does. Unreadable
    or undecodable files raise ``ImageLoadError``.
    """

    def __init__(self, backend_args: Optional[dict] = None):
        self.backend_args = backend_args

    def transform(self, results: dict) -> dict:
        path = results['img_path']
        try:
            content = fileio.get(path, backend_args=self.backend_args)
        except Exception as err:  # missing file, permissions, storage backend errors
            raise ImageLoadError(path, f'cannot read ({err.__class__.__name__}: {err})') from err
        try:
            # cv2 directly: mmcv.imfrombytes skips its BGR->RGB step with the ignore-orientation flag.
            img = cv2.imdecode(np.frombuffer(content, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        except Exception as err:  # cv2 raises on some truncated files
            raise ImageLoadError(path, f'cannot decode ({err})') from err
        if img is None or img.size == 0:
            raise ImageLoadError(path, 'cannot decode (corrupt or not an image)')
        results['img'] = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        results['ori_shape'] = img.shape[:2]
        return results


@TRANSFORMS.register_module()
class RandomResizedCropFlip(BaseTransform):
    """torchvision ``RandomResizedCrop`` (bicubic, antialiased) + horizontal
    flip, shared by both views; outputs a CHW uint8 tensor. Images smaller
    than ``size`` are upsampled."""

    def __init__(self, size: Union[int, Sequence[int]] = 224, scale: Tuple[float, float] = (0.2, 1.0),
                 ratio: Tuple[float, float] = (3 / 4, 4 / 3), interpolation: str = 'bicubic',
                 flip_prob: float = 0.5):
        self.size = [size, size] if isinstance(size, int) else list(size)
        self.scale, self.ratio, self.flip_prob = list(scale), list(ratio), flip_prob
        self.interpolation = InterpolationMode(interpolation)

    def transform(self, results: dict) -> dict:
        img = results['img']
        if isinstance(img, np.ndarray):
            img = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)
        top, left, h, w = RandomResizedCrop.get_params(img, self.scale, self.ratio)
        img = TF.resized_crop(img, top, left, h, w, self.size, interpolation=self.interpolation, antialias=True)
        if torch.rand(1).item() < self.flip_prob:
            img = img.flip(-1)
        results['img'] = img.contiguous()
        results['img_shape'] = tuple(self.size)
        return results


GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale


def color_jitter(img: torch.Tensor, order: Sequence[int], brightness: Optional[float], contrast: Optional[float],
                 saturation: Optional[float]) -> torch.Tensor:
    """torchvision's brightness / contrast / saturation blends on a CHW uint8
    image, in ``order`` (0, 1, 2 = brightness, contrast, saturation; other
    entries and ``None`` factors are skipped), computed in float and rounded
    once.

    torchvision converts back to uint8 (truncating) after every blend, and
    takes the contrast mean of a truncated grey image, so results differ by
    up to 4 levels (tests/datasets/test_color_jitter.py); the factors,
    order, clamping and grey weights are the same. One float pass instead of three
    uint8 round trips makes the jitter ~2.4x faster (0.26 vs 0.63 ms per 224²
    view against torchvision v2 on one thread; docs/performance.md).
    """
    x = img.float()
    weights = x.new_tensor(GRAY_WEIGHTS)
    for op in order:
        if op == 0 and brightness is not None:
            x.mul_(brightness)
        elif op == 1 and contrast is not None:
            mean = weights.matmul(x.view(3, -1)).mean()
            x.mul_(contrast).add_(mean * (1 - contrast))
        elif op == 2 and saturation is not None:
            gray = weights.matmul(x.view(3, -1)).view(1, *x.shape[1:])
            x.mul_(saturation).add_(gray, alpha=1 - saturation)
        else:
            continue
        x.clamp_(0, 255)
    return x.round_().to(torch.uint8)


@TRANSFORMS.register_module()
class StudentColorJitter(BaseTransform):
    """Adds ``results['student_img']``: the shared view after a colour jitter
    with torchvision ``ColorJitter``'s semantics (factors uniform in
    [max(0, 1 - x), 1 + x], the blends in random order; with a hue jitter
    torchvision's ``ColorJitter`` runs as is); ``results['img']`` stays the
    plain teacher view."""

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4, hue: float = 0.):
        self.jitter = ColorJitter(brightness, contrast, saturation, hue)  # checks the values as torchvision does

    def transform(self, results: dict) -> dict:
        j = self.jitter
        if j.hue is not None:  # hue needs HSV: torchvision's own ops
            results['student_img'] = j(results['img'])
            return results
        order, b, c, s, _ = ColorJitter.get_params(j.brightness, j.contrast, j.saturation, None)
        results['student_img'] = color_jitter(results['img'], order.tolist(), b, c, s)
        return results


@TRANSFORMS.register_module()
class PackTwoViewInputs(BaseTransform):
    """``inputs=dict(teacher=, student=)`` uint8 CHW tensors (the student
    view defaults to the teacher's when no jitter ran) and a data sample
    carrying ``img_path``."""

    def transform(self, results: dict) -> dict:
        teacher = results['img']
        if isinstance(teacher, np.ndarray):
            raise TypeError('PackTwoViewInputs expects CHW tensors; put RandomResizedCropFlip before it')
        meta = dict(img_path=results.get('img_path'), ori_shape=results.get('ori_shape'))
        return dict(inputs=dict(teacher=teacher, student=results.get('student_img', teacher)),
                    data_samples=BaseDataElement(metainfo=meta))
