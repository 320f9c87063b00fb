"""Pipeline check of label values."""
import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS


@TRANSFORMS.register_module()
class ValidateSegLabels(BaseTransform):
    """Fail with the file named when a label map holds unknown class ids.

    Put it right after ``LoadAnnotations``. Valid values (after
    ``reduce_zero_label``) are ``0..num_classes-1`` and ``ignore_index``;
    with ``reduce_zero_label`` this means raw PNG values 0..num_classes and
    255. Without the check, out-of-range ids silently corrupt the loss and
    the IoU histogram.

    Images without a label map pass through unchanged: mmseg's
    ``inference_model`` and ``MMSegInferencer`` drop ``LoadAnnotations``
    from the test pipeline, and inference has no labels to check.
    """

    def __init__(self, num_classes: int = 150, ignore_index: int = 255):
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def transform(self, results: dict) -> dict:
        seg = results.get('gt_seg_map')
        if seg is None:
            return results
        values = np.unique(seg)
        bad = values[(values >= self.num_classes) & (values != self.ignore_index)]
        if bad.size:
            shift = 1 if results.get('reduce_zero_label') else 0
            raise ValueError(
                f"label map {results.get('seg_map_path', '<in memory>')} has values "
                f'{(bad.astype(int) + shift).tolist()[:10]} above the {self.num_classes} classes '
                f'(valid: 0..{self.num_classes - 1 + shift}'
                f"{', 0 = ignore' if shift else ''}, {self.ignore_index} = ignore)")
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(num_classes={self.num_classes}, ignore_index={self.ignore_index})'
