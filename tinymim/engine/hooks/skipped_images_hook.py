"""Counts images the dataset skipped and stops when a batch loses too many."""
import logging
from typing import Optional

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmseg.registry import HOOKS


@HOOKS.register_module()
class SkippedImagesHook(Hook):
    """Reads the ``skipped_images`` metainfo ``UnlabeledImageDataset`` puts on
    replacement samples, keeps the run's total (logged as ``skipped_images``
    once the first image was skipped) and raises when a batch's skipped
    images exceed ``max_skipped_ratio`` of its samples (default 1 %).
    """

    priority = 'NORMAL'

    def __init__(self, max_skipped_ratio: float = 0.01):
        if not 0 <= max_skipped_ratio <= 1:
            raise ValueError(f'max_skipped_ratio must be in [0, 1], got {max_skipped_ratio}')
        self.max_skipped_ratio = max_skipped_ratio
        self.total = 0

    def before_train_iter(self, runner, batch_idx: int, data_batch: Optional[dict] = None) -> None:
        samples = (data_batch or {}).get('data_samples') or []
        skipped = [p for s in samples for p in s.metainfo.get('skipped_images', ())]
        if not skipped:
            return
        self.total += len(skipped)
        runner.message_hub.update_scalar('train/skipped_images', self.total)
        print_log(f'{len(skipped)} image(s) skipped in this batch, {self.total} in this run: {skipped}',
                  logger='current', level=logging.WARNING)
        if len(skipped) > self.max_skipped_ratio * len(samples):
            raise RuntimeError(f'{len(skipped)} of the {len(samples)} samples of a batch could not be loaded '
                               f'(more than {self.max_skipped_ratio:.0%}): {skipped}. Check the dataset, or raise '
                               'SkippedImagesHook.max_skipped_ratio')
