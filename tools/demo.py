"""The whole TinyMIM chain on this machine in minutes (``make demo``).

    python tools/demo.py                      # random-init teacher
    TEACHER=checkpoints/tinymim_vit-small.pth python tools/demo.py
    python tools/demo.py --quick              # a few iterations: checks the chain, learns nothing

Distillation, student extraction, UperNet fine-tuning, evaluation, relation maps and
curves, ONNX export and ONNX Runtime inference, each through the tool users run at
scale; ``WORK_DIR/summary.md`` reports them (``tinymim.apis.demo``).
The teacher is the checkpoint in ``$TEACHER`` (or ``--teacher``); without one it is a
randomly initialised ViT-S, and the output says so.
"""
import argparse
import os


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description='Run the TinyMIM chain end to end on shipped and generated data')
    parser.add_argument('--work-dir', default='work_dirs/demo', help='where everything is written')
    parser.add_argument('--teacher', default=os.environ.get('TEACHER') or None,
                        help='teacher checkpoint (default: $TEACHER; unset: a random-init ViT-S)')
    parser.add_argument('--quick', action='store_true',
                        help='a few iterations per step: checks the chain in under a minute, learns nothing')
    args = parser.parse_args(argv)
    from tinymim.apis.demo import run_demo
    return run_demo(args.work_dir, args.teacher, args.quick)


if __name__ == '__main__':
    main()
