"""Draw the teacher's and the student's token relations over an image.

    python tools/visualize_relations.py CONFIG CKPT IMAGE [--queries cls 7,7 3,10] [--out relations.png]

CONFIG is a distillation config (it names the teacher, its checkpoint and
the distilled blocks); CKPT holds the student: a distillation checkpoint
from the work dir, or bare student weights (``tools/extract_student.py``).
For each query token, one row shows the image with the query marked, then
the QK and VV relation rows of that token over the image's patches, teacher
next to student, each student panel titled with the KL(teacher ‖ student) of
that row (``tinymim.apis.relations``).
"""
import argparse
import os.path as osp

from mmengine.config import DictAction
from mmengine.logging import print_log

from tinymim.apis.relations import build_distiller, parse_query, visualize


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Teacher vs student QK/VV relation maps over an image')
    parser.add_argument('config', help='distillation config (teacher, blocks, relation heads)')
    parser.add_argument('checkpoint', help='student weights: a distillation checkpoint or extracted student')
    parser.add_argument('image', help='an image file')
    parser.add_argument('--queries', nargs='+', type=parse_query, metavar='Q',
                        help="query tokens: 'cls' or ROW,COL patch coordinates (default: cls, the centre and "
                             'two off-centre patches)')
    parser.add_argument('--pairs', nargs='+', default=['qk', 'vv'], help='relations to draw (qk vv qq kk)')
    parser.add_argument('--size', type=int, help="image side in pixels (default: the student's img_size)")
    parser.add_argument('--teacher', help="teacher checkpoint (default: the config's model.teacher.checkpoint)")
    parser.add_argument('--out', default='relations.png', help='output PNG')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    return parser.parse_args(argv)


def main(argv=None) -> str:
    args = parse_args(argv)
    model = build_distiller(args.config, args.checkpoint, args.cfg_options, args.teacher)
    title = f'{osp.basename(args.image)}: teacher block {model.teacher_block}, student block {model.student_block}'
    out = visualize(model, args.image, args.out, args.queries, args.size, args.pairs, title)
    print_log(f'relation maps written to {out}', logger='current')
    return out


if __name__ == '__main__':
    main()
