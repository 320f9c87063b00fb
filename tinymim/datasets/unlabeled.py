"""Unlabeled images for distillation: class folders, a flat folder or a list file."""
import logging
import os
import os.path as osp
from typing import List, Sequence

from mmengine.dataset import BaseDataset
from mmengine.dist import is_main_process
from mmengine.logging import print_log
from mmengine.utils import ProgressBar
from mmseg.registry import DATASETS, TRANSFORMS

from .two_view_transforms import ImageLoadError

# torchvision's ImageFolder extensions, matched case-insensitively.
IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')


def scan_images(root: str, extensions: Sequence[str] = IMG_EXTENSIONS) -> List[str]:
    """Sorted image paths under ``root``: its own files and, recursively, its
    sub-folders (ImageNet's class folders), with a progress bar over them."""
    extensions = tuple(e.lower() for e in extensions)
    with os.scandir(root) as it:
        entries = sorted(it, key=lambda e: e.name)
    paths = [e.path for e in entries if e.is_file() and e.name.lower().endswith(extensions)]
    folders = [e.path for e in entries if e.is_dir()]
    bar = ProgressBar(len(folders)) if folders and is_main_process() else None
    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
            dirnames.sort()
            paths.extend(osp.join(dirpath, f) for f in sorted(filenames) if f.lower().endswith(extensions))
        if bar:
            bar.update()
    return paths


@DATASETS.register_module()
class UnlabeledImageDataset(BaseDataset):
    """Images without labels under ``data_root`` (joined with ``data_prefix['img_path']``).

    Layouts: ImageNet train (class folders, scanned recursively), a flat
    folder, or ``ann_file``: a list of paths relative to the image root, one
    per line; anything after the first whitespace (e.g. ImageNet's label in
    ``train.txt``) is ignored.

    An image the pipeline cannot load (``ImageLoadError``) is skipped with a
    warning naming the file and replaced by a random other sample; the
    replacement's data sample lists the skipped paths in its
    ``skipped_images`` metainfo, which ``SkippedImagesHook`` counts per batch.
    """

    def __init__(self, data_root: str = '', ann_file: str = '', extensions: Sequence[str] = IMG_EXTENSIONS,
                 **kwargs):
        self.extensions = tuple(extensions)
        kwargs.setdefault('max_refetch', 100)
        # Built from mmseg's registry here, so the dataset works without the Runner's default scope.
        kwargs['pipeline'] = [TRANSFORMS.build(t) if isinstance(t, dict) else t for t in kwargs.get('pipeline', [])]
        super().__init__(ann_file=ann_file, data_root=data_root, **kwargs)

    @property
    def image_root(self) -> str:
        return self.data_prefix.get('img_path') or self.data_root or ''

    def load_data_list(self) -> List[dict]:
        root = self.image_root
        if not root or not osp.isdir(root):
            raise FileNotFoundError(f'image root {root!r} does not exist or is not a folder '
                                    '(set train_dataloader.dataset.data_root)')
        if self.ann_file:
            if not osp.isfile(self.ann_file):
                raise FileNotFoundError(f'image list file {self.ann_file} does not exist')
            with open(self.ann_file) as f:
                paths = [osp.join(root, line.split()[0]) for line in f if line.strip()]
        else:
            paths = scan_images(root, self.extensions)
        if not paths:
            source = self.ann_file or f'{root} (extensions {", ".join(self.extensions)})'
            raise ValueError(f'no images found in {source}')
        print_log(f'{len(paths)} images in {self.ann_file or root}', logger='current')
        return [dict(img_path=p) for p in paths]

    def __getitem__(self, idx: int) -> dict:
        if not self._fully_initialized:
            self.full_init()
        skipped = []
        for _ in range(self.max_refetch + 1):
            try:
                data = self.prepare_data(idx)
            except ImageLoadError as err:
                print_log(f'skipping image {err.path}: {err.reason}', logger='current', level=logging.WARNING)
                skipped.append(err.path)
                data = None
            if data is not None:
                if 'data_samples' in data:
                    data['data_samples'].set_metainfo(dict(skipped_images=skipped))
                return data
            idx = self._rand_another()
        raise RuntimeError(f'no loadable sample after {self.max_refetch + 1} tries; '
                           f'last skipped images: {skipped[-3:]}')
