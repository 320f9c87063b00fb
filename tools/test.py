"""Test (and evaluate) a segmentor checkpoint with the mmengine Runner.

Mirrors mmsegmentation's ``tools/test.py``: the config's ``test_evaluator``
(mmseg's ``IoUMetric``) reports aAcc / mIoU / mAcc and the per-class table.

    python tools/test.py CONFIG CHECKPOINT [--tta] [--show-dir DIR] [--out DIR]
    python tools/test.py CONFIG MODEL.onnx      # an exported model, in ONNX Runtime

A ``.onnx`` file (or ``--backend onnxruntime``) is evaluated in ONNX Runtime
through the same config, pipeline, sliding window and metric
(``tinymim.deploy.ONNXRuntimeSegmentor``).
"""
import argparse

from mmengine.config import Config, DictAction

from tinymim.engine.config_errors import clear_config_errors
from tinymim.engine.tool_config import build_runner, check_checkpoint_path, load_tool_config, parse_tool_args


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and evaluate) a TinyMIM segmentor')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file, or an exported .onnx model')
    parser.add_argument('--backend', choices=['pytorch', 'onnxruntime'],
                        help='how to run the model (default: onnxruntime for a .onnx file, else pytorch)')
    parser.add_argument('--ort-threads', type=int, help='ONNX Runtime threads (default: all physical cores)')
    parser.add_argument('--work-dir', help='the dir to save logs and the metrics json')
    parser.add_argument('--out', help='dir to save the predictions as PNG label maps for offline evaluation')
    parser.add_argument('--show', action='store_true', help='show prediction results in a window')
    parser.add_argument('--show-dir', help='dir to save images painted with the predictions and ground truth '
                                           '(under DIR/vis_data/vis_image)')
    parser.add_argument('--wait-time', type=float, default=2, help='the interval of --show (s)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings in the config, key=value pairs such as '
                             'model.test_cfg.mode=whole test_dataloader.dataset.data_root=DIR')
    parser.add_argument('--tta', action='store_true',
                        help="test-time augmentation: the config's tta_pipeline (multi-scale + flip) and tta_model")
    return parse_tool_args(parser, argv)


def enable_visualization(cfg: Config, args) -> None:
    """Let ``SegVisualizationHook`` draw (and show or save) every test prediction."""
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise KeyError("--show/--show-dir need default_hooks.visualization=dict(type='SegVisualizationHook')")
    hook['draw'] = True
    # mmseg's hook paints every 50th image by default; a test asked to show paints all
    # (unless the config sets an interval).
    hook.setdefault('interval', 1)
    if args.show:
        hook['show'] = True
        hook['wait_time'] = args.wait_time
    if args.show_dir:
        cfg.visualizer['save_dir'] = args.show_dir


def build_config(args) -> Config:
    check_checkpoint_path(args.checkpoint, 'checkpoint')
    cfg = load_tool_config(args.config, args.launcher, args.cfg_options, args.work_dir)
    backend = args.backend or ('onnxruntime' if args.checkpoint.endswith('.onnx') else 'pytorch')
    if backend == 'onnxruntime':
        from tinymim.deploy.ort_segmentor import onnxruntime_model_cfg
        cfg.model = onnxruntime_model_cfg(cfg.model, args.checkpoint, args.ort_threads)
        cfg.load_from = None
    else:
        cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        enable_visualization(cfg, args)
    if args.tta:
        missing = [key for key in ('tta_model', 'tta_pipeline') if key not in cfg]
        if missing:
            raise KeyError(f'--tta needs {missing} in the config (mmseg ADE20K bases define them)')
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model
    if args.out is not None:
        cfg.test_evaluator['output_dir'] = args.out
    return cfg


def main(argv=None):
    cfg = build_config(parse_args(argv))
    with clear_config_errors():  # a misspelled config key names the key and the valid ones
        return build_runner(cfg).test()


if __name__ == '__main__':
    main()
