"""Train a config (distillation or segmentation) with the mmengine Runner.

Mirrors mmsegmentation's ``tools/train.py``; works with any tinymim or mmseg config.
"""
import argparse
import logging

from mmengine.config import Config, DictAction
from mmengine.logging import print_log

from tinymim.engine.config_errors import clear_config_errors
from tinymim.engine.tool_config import build_runner, check_checkpoint_path, load_tool_config, parse_tool_args


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a TinyMIM distiller or a segmentor')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--resume', nargs='?', const='auto', default=None, metavar='CKPT',
                        help="resume training: with no value (or 'auto') from the newest checkpoint in "
                             "the work_dir (or in the checkpoint hook's out_dir), or from the given checkpoint file")
    parser.add_argument('--amp', action='store_true', help='enable automatic mixed precision training')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings in the config, key=value pairs such as '
                             'model.backbone.arch=small train_dataloader.batch_size=4')
    return parse_tool_args(parser, argv)


def build_config(args) -> Config:
    cfg = load_tool_config(args.config, args.launcher, args.cfg_options, args.work_dir)
    if args.amp:
        wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper == 'AmpOptimWrapper':
            print_log('AMP training is already enabled in the config.', logger='current', level=logging.WARNING)
        elif wrapper != 'OptimWrapper':
            raise ValueError(f'--amp needs optim_wrapper.type OptimWrapper, the config has {wrapper}')
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        check_checkpoint_path(args.resume, '--resume checkpoint')
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def main(argv=None):
    args = parse_args(argv)
    cfg = build_config(args)
    with clear_config_errors():  # a misspelled config key names the key and the valid ones
        build_runner(cfg).train()


if __name__ == '__main__':
    main()
