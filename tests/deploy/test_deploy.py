"""ONNX export, ONNX Runtime inference and evaluation, INT8, and their bad inputs.

The real configs are exported with random weights (the T config at its
512x512 crop, S and B at 64x64) and checked against PyTorch; the tools run
on a tiny UperNet and a generated ADE20K-format set, as users run them."""
import os.path as osp
import subprocess
import sys

import mmcv
import numpy as np
import pytest
import torch

from tests.helpers import ROOT
from tests.helpers.seg import config_path, run_tool, write_tiny_config
from tinymim.apis import load_tool
from tinymim.datasets import make_synthetic_ade20k
from tinymim.deploy import export as ex
from tinymim.deploy import quantize as qz
from tinymim.deploy.runtime import OnnxSegmentor

pytestmark = pytest.mark.slow  # ONNX export, ONNX Runtime and INT8 runs end to end

export_tool = load_tool('deploy/export_onnx')
quantize_tool = load_tool('deploy/quantize_onnx')
inference_tool = load_tool('deploy/ort_inference')
# 64x64 sliding windows (stride 48) over the 128x128 test images of the generated set.
SLIDE = ['model.test_cfg.mode=slide', 'model.test_cfg.crop_size=[64,64]', 'model.test_cfg.stride=[48,48]']
SLIDE_OPTIONS = {'model.test_cfg.mode': 'slide', 'model.test_cfg.crop_size': (64, 64),
                 'model.test_cfg.stride': (48, 48)}


def randomise_bias_tables(model):
    """Relative-bias tables start at zero; random values exercise the bias path of the graph."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('relative_position_bias_table'):
                p.normal_(std=0.5)
    return model


def export_and_verify(size: str, shape, tmp_path, dynamic=None):
    model, cfg = ex.load_segmentor(config_path(size), None)
    randomise_bias_tables(model)
    path = str(tmp_path / f'{size}.onnx')
    meta = ex.export_onnx(model, cfg, path, shape=shape, dynamic=dynamic)
    rows = ex.verify_onnx(model, path, ex.verification_images(meta, shape))
    return path, meta, rows


def test_t_config_exports_at_its_crop_size_and_matches_pytorch(tmp_path):
    path, meta, rows = export_and_verify('t', (512, 512), tmp_path)
    assert [r['image'] for r in rows] == ['random', 'real']
    assert all(r['max_rel_diff'] <= 1e-4 for r in rows), rows
    assert meta['input']['shape'] == [512, 512] and meta['num_classes'] == 150 and len(meta['palette']) == 150
    report = ex.file_report(path)
    assert report['opset'] == 18 and report['ops'].get('Softmax', 0) == 12  # one attention per block
    # The relative-bias gather and the 1/std scaling are in the graph: no zero-bias shortcut, no host step.
    assert report['ops'].get('Gather', 0) >= 12 and report['ops'].get('Div', 0) >= 1


@pytest.mark.parametrize('size', ['s', 'b'])
def test_s_and_b_configs_export_at_a_small_size(size, tmp_path):
    _, meta, rows = export_and_verify(size, (64, 64), tmp_path)
    assert all(r['max_rel_diff'] <= 1e-4 for r in rows), rows


def test_adaptive_pooling_for_dynamic_export_matches_pytorch():
    for out in (1, 2, 3, 6, (2, 5)):
        for h, w in ((4, 9), (16, 16), (33, 20)):
            x = torch.randn(2, 3, h, w)
            torch.testing.assert_close(ex.ExportableAdaptiveAvgPool2d(out)(x), torch.nn.AdaptiveAvgPool2d(out)(x))


# ----------------------------------------------------------- tools on a tiny model
@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """A tiny UperNet config on a generated set, a checkpoint in mmengine's
    layout (random weights) and its fixed-shape ONNX export (64x64, logits)."""
    tmp = tmp_path_factory.mktemp('deploy')
    data_root = make_synthetic_ade20k(str(tmp / 'data'), num_train=2, num_val=3, size=64, num_classes=4)
    config = write_tiny_config(str(tmp / 'tiny.py'), data_root)
    torch.manual_seed(0)
    model, _ = ex.load_segmentor(config, None)
    checkpoint = str(tmp / 'tiny.pth')
    torch.save({'state_dict': randomise_bias_tables(model).state_dict(), 'meta': {}}, checkpoint)
    onnx_path = str(tmp / 'tiny.onnx')
    result = export_tool.main([config, checkpoint, onnx_path, '--shape', '64', '64'])
    return dict(tmp=tmp, config=config, checkpoint=checkpoint, onnx=onnx_path, data_root=data_root, export=result)


def test_export_tool_reports_size_opset_and_check(tiny):
    result = tiny['export']
    assert result['report']['opset'] == 18 and result['report']['size_mib'] > 0.1
    assert [c['image'] for c in result['checks']] == ['random', 'real'] and all(c['ok'] for c in result['checks'])
    assert result['meta']['source'] == dict(config='tiny.py', checkpoint='tiny.pth')


def test_dynamic_uint8_mask_export_runs_any_size(tiny, tmp_path):
    """Batch and sides free, uint8 input, argmax output (a 1-block model keeps the dynamic trace short)."""
    path = str(tmp_path / 'dynamic.onnx')
    options = ['model.backbone.arch.num_layers=1', 'model.backbone.out_indices=[0,0,0,0]']
    model, _ = ex.load_segmentor(tiny['config'], None, {'model.backbone.arch.num_layers': 1,
                                                        'model.backbone.out_indices': [0, 0, 0, 0]})
    checkpoint = str(tmp_path / 'one_block.pth')
    torch.save({'state_dict': randomise_bias_tables(model).state_dict()}, checkpoint)
    result = export_tool.main([tiny['config'], checkpoint, path, '--shape', '64', '64', '--dynamic', '--input-dtype',
                               'uint8', '--output', 'mask', '--cfg-options', *options])
    # verified: 64x64, a batch of 2, and the photograph at 32x48 (the pooled pyramid and the bias tables resized)
    assert [c['shape'] for c in result['checks']] == [(1, 3, 64, 64)] * 2 + [(2, 3, 64, 64), (1, 3, 32, 48)]
    assert all(c['compared'] == 'mask' and c['ok'] for c in result['checks'])
    session = OnnxSegmentor(path)
    assert session.fixed_size is None and session.input['dtype'] == 'uint8'
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)  # padded to 64x80 inside
    out = tiny['tmp'] / 'dynamic_out'
    inference_tool.main([path, _write(tiny['tmp'] / 'odd.png', image), '--out', str(out), '--save-labels'])
    labels = mmcv.imread(str(out / 'odd_labels.png'), flag='unchanged')
    assert labels.shape == (50, 70)
    padded = np.broadcast_to(np.asarray(session.input['mean'], np.float32), (64, 80, 3)).copy()
    padded[:50, :70] = image
    expected = ex.reference_logits(model, torch.from_numpy(padded.round().transpose(2, 0, 1)[None]).to(torch.uint8))
    np.testing.assert_array_equal(labels, expected[0].argmax(0).numpy()[:50, :70])


def _write(path, rgb) -> str:
    mmcv.imwrite(rgb[..., ::-1], str(path))
    return str(path)


def test_ort_inference_writes_masks_in_mmsegs_palette(tiny):
    image_dir = osp.join(tiny['data_root'], 'images', 'validation')
    out = tiny['tmp'] / 'masks'
    written = inference_tool.main([tiny['onnx'], image_dir, '--out', str(out), '--save-labels'])
    assert len(written) == 3
    palette = np.asarray(OnnxSegmentor(tiny['onnx']).palette())
    mask = mmcv.imread(written[0], channel_order='rgb')
    labels = mmcv.imread(written[0].replace('.png', '_labels.png'), flag='unchanged')
    np.testing.assert_array_equal(mask, palette[labels])  # --opacity 1: the coloured mask alone
    from mmseg.datasets import ADE20KDataset
    assert palette.tolist() == [list(c) for c in ADE20KDataset.METAINFO['palette']]


def test_test_tool_evaluates_the_onnx_model_like_pytorch(tiny):
    """tools/test.py CONFIG MODEL.onnx: the config's pipeline, sliding windows stitched by mmseg, IoUMetric;
    the same mIoU and the same predictions as the PyTorch model."""
    tmp = tiny['tmp']
    proc = run_tool('tools/test.py', tiny['config'], tiny['onnx'], '--work-dir', str(tmp / 'test_ort'),
                    '--out', str(tmp / 'pred_ort'), '--cfg-options', *SLIDE)
    log = proc.stdout + proc.stderr
    assert 'ONNX Runtime runs' in log and 'tiny.onnx' in log and 'per class results' in log
    ort_miou = float(log.split('mIoU: ')[-1].split()[0])
    cfg = ex.load_config(tiny['config'], SLIDE_OPTIONS)
    model, _ = ex.load_segmentor(tiny['config'], tiny['checkpoint'], SLIDE_OPTIONS)
    predictions = {}
    model.test_step = _recording(model.test_step, predictions)
    torch_miou = qz.evaluate(model, cfg)['metrics']['mIoU']
    assert abs(torch_miou - ort_miou) <= 0.05
    for name, pred in predictions.items():
        np.testing.assert_array_equal(mmcv.imread(str(tmp / 'pred_ort' / f'{name}.png'), flag='unchanged'), pred)


def _recording(test_step, predictions):
    def step(batch):
        outputs = test_step(batch)
        for sample in outputs:
            name = osp.splitext(osp.basename(sample.img_path))[0]
            shift = int(sample.metainfo.get('reduce_zero_label', False))  # IoUMetric writes ADE20K ids
            predictions[name] = (sample.pred_sem_seg.data[0].numpy() + shift).astype(np.uint8)
        return outputs
    return step


def test_quantize_tool_static_int8(tiny):
    out = str(tiny['tmp'] / 'tiny_int8.onnx')
    result = quantize_tool.main([tiny['onnx'], out, '--config', tiny['config'], '--calib-images', '2',
                                 '--cfg-options', *SLIDE])
    assert result['mode'] == 'static' and result['quantized'] > 20 and result['excluded'] == 2
    assert {'fp32', 'int8'} <= set(result) and 0 <= result['int8']['metrics']['mIoU'] <= 100
    int8 = OnnxSegmentor(out)
    assert int8.meta['quantization']['calibration_inputs'] == 2 * 9  # 9 windows per 128x128 image
    import onnx
    ops = {n.op_type for n in onnx.load(out).graph.node}
    assert {'QuantizeLinear', 'DequantizeLinear'} <= ops
    fp32 = OnnxSegmentor(tiny['onnx'])
    x = fp32.prepare(np.random.default_rng(1).integers(0, 256, (1, 3, 64, 64)).astype(np.float32))
    ref, got = fp32.run(x), int8.run(x)
    assert 0 < ex.relative_difference(got, ref) < 0.5  # quantised, still the same model


# ------------------------------------------------------------------- bad input
def test_bad_inputs_are_named(tiny, tmp_path):
    missing = str(tmp_path / 'none.onnx')
    with pytest.raises(FileNotFoundError, match='none.onnx does not exist'):
        OnnxSegmentor(missing)
    notes = tmp_path / 'notes.onnx'
    notes.write_text('hello')
    with pytest.raises(ValueError, match=r"notes.onnx is not an ONNX model .*starts with b'hello'"):
        OnnxSegmentor(str(notes))
    # an image of another size for a fixed-shape model
    image = _write(tmp_path / 'big.png', np.zeros((80, 96, 3), np.uint8))
    with pytest.raises(ValueError, match=r'big.png is 80x96 but .*tiny.onnx was exported for 64x64 inputs only'):
        inference_tool.main([tiny['onnx'], image, '--out', str(tmp_path / 'out')])
    with pytest.raises(FileNotFoundError, match='image .*nothere.png does not exist'):
        inference_tool.main([tiny['onnx'], str(tmp_path / 'nothere.png'), '--out', str(tmp_path / 'out')])
    # a checkpoint that is not a segmentor's
    torch.save({'state_dict': {'cls_token': torch.zeros(1, 1, 64)}}, str(tmp_path / 'vit.pth'))
    with pytest.raises(ValueError, match='does not fit the config.*backbone weights only'):
        export_tool.main([tiny['config'], str(tmp_path / 'vit.pth'), str(tmp_path / 'x.onnx')])
    with pytest.raises(ValueError, match='multiples of the patch size 16'):
        export_tool.main([tiny['config'], tiny['checkpoint'], str(tmp_path / 'x.onnx'), '--shape', '60', '64'])


def test_evaluation_names_a_model_of_another_input_size(tiny):
    # The tiny config tests whole 128x128 images; the model takes 64x64 only.
    cfg = ex.load_config(tiny['config'])
    with pytest.raises(ValueError, match=r'ADE_val_00000001.jpg is 128x128 but .*tiny.onnx was exported for 64x64 '
                                         r'inputs only; resize it, or export with --shape 128 128 or --dynamic'):
        qz.evaluate(qz.build_onnx_segmentor(cfg, tiny['onnx']), cfg, num_images=1)
    cfg.model.test_cfg.update(mode='slide', crop_size=(32, 32), stride=(16, 16))
    with pytest.raises(ValueError, match='exported for 64x64 inputs but the config slides a 32x32 window'):
        qz.build_onnx_segmentor(cfg, tiny['onnx'])


def test_core_package_imports_without_the_deploy_extra_and_tools_name_it():
    block = "import sys; [sys.modules.__setitem__(m, None) for m in ('onnx', 'onnxruntime', 'onnxscript')]; "
    code = block + ("import tinymim, tinymim.deploy\n"
                    "from tinymim.deploy.runtime import OnnxSegmentor\n"
                    "try:\n    OnnxSegmentor('x.onnx')\nexcept ImportError as e:\n    print(e)")
    proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'onnxruntime is not installed' in proc.stdout and 'pip install -e .[deploy]' in proc.stdout
