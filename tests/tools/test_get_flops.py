"""`tools/analysis/get_flops.py` reproduces the FLOPs table in docs/segmentation.md."""
import os.path as osp

from tests.helpers import ROOT
from tinymim.apis import load_tool

get_flops = load_tool('analysis/get_flops')


def test_vit_t_light_row_of_the_readme_table():
    # Run with autograd on, as a script runs: the count must not lose the attention and MLP, whose
    # training paths are custom autograd functions the counter cannot see into. (The light decoder
    # keeps the test fast; the 768-channel rows differ only in the neck and head.)
    config = osp.join(ROOT, 'mmseg_configs', 'upernet', 'upernet_tinymim-vit-t-light_8xb2-160k_ade20k-512x512.py')
    (row,) = get_flops.main([config, '--shape', '512', '512'])
    assert (round(row['params'] / 1e6, 1), round(row['backbone_params'] / 1e6, 1), round(row['flops'] / 1e9, 1)) \
        == (10.7, 6.0, 42.0)
    table = open(osp.join(ROOT, 'docs', 'segmentation.md')).read()
    assert ('| UperNet ViT-T, light decoder (`upernet_tinymim-vit-t-light_8xb2-160k_ade20k-512x512`) '
            '| 10.7 | 6.0 | 42.0 |') in table
