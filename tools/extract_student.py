"""Write the bare student weights (timm keys) of a TinyMIM distillation checkpoint.

    python tools/extract_student.py work_dirs/RUN/epoch_300.pth tinymim_vit-small.pth

The output is ``{'state_dict': weights}`` (``--wrap model`` for MAE's
``{'model': ...}``, ``--wrap none`` for a plain state dict). tinymim loads the
training checkpoint itself just as well (as a teacher or a backbone); this is
for other tools (timm, mmpretrain) and for a smaller file without optimizer state
(``tinymim.apis.save_student``).
"""
import argparse
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Extract the student ViT from a TinyMIM distillation checkpoint')
    parser.add_argument('checkpoint', help='distillation checkpoint written by the Runner')
    parser.add_argument('out', help='output file')
    parser.add_argument('--wrap', choices=['state_dict', 'model', 'none'], default='state_dict',
                        help="container key of the output (default state_dict; 'none' for a plain state dict)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from tinymim.apis import save_student
    save_student(args.checkpoint, args.out, args.wrap)


if __name__ == '__main__':
    sys.exit(main())
