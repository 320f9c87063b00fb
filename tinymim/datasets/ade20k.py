"""ADE20K with an up-front check of the folder layout."""
import os.path as osp
from typing import List

from mmseg.datasets import ADE20KDataset
from mmseg.registry import DATASETS


@DATASETS.register_module()
class TinyMIMADE20KDataset(ADE20KDataset):
    """mmseg's ``ADE20KDataset`` that fails at start, naming what is missing.

    mmseg lists whatever images it finds and only notices a wrong
    ``data_root`` or a missing label file deep inside a data-loader worker.
    This class checks that the image and annotation folders exist, that the
    image folder holds ``.jpg`` files and that every image has its ``.png``
    label, before training starts.
    """

    def load_data_list(self) -> List[dict]:
        if self.data_root and not osp.isdir(self.data_root):
            raise FileNotFoundError(
                f'ADE20K data_root {self.data_root} does not exist; expected ADEChallengeData2016/'
                '{images,annotations}/{training,validation} (tools/dataset_converters/'
                'make_synthetic_ade20k.py writes a small one)')
        img_dir = self.data_prefix.get('img_path')
        ann_dir = self.data_prefix.get('seg_map_path')
        missing = [d for d in (img_dir, ann_dir) if d and not osp.isdir(d)]
        if missing:
            raise FileNotFoundError(f'ADE20K folder(s) missing: {", ".join(missing)} '
                                    f'(data_root {self.data_root!r}, data_prefix {dict(self.data_prefix)})')
        data_list = super().load_data_list()
        if not data_list:
            raise FileNotFoundError(f'no {self.img_suffix} images in {img_dir}')
        unlabelled = [d['img_path'] for d in data_list if 'seg_map_path' in d and not osp.isfile(d['seg_map_path'])]
        if unlabelled:
            raise FileNotFoundError(f'{len(unlabelled)} image(s) have no {self.seg_map_suffix} label in {ann_dir}, '
                                    f'e.g. {", ".join(unlabelled[:3])}')
        return data_list
