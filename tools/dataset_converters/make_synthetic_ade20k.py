"""Write a small, learnable data set in the ADE20K layout.

    python tools/dataset_converters/make_synthetic_ade20k.py data/synthetic_ade \
        --num-train 200 --num-val 50 --size 128

creates ``data/synthetic_ade/ADEChallengeData2016/{images,annotations}/{training,validation}``
(JPEG images, PNG labels with ADE20K ids, 0 = ignore). The same seed gives the same files.
"""
import argparse

from tinymim.datasets import make_synthetic_ade20k
from tinymim.datasets.synthetic_ade import DEFAULT_CLASS_IDS


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Generate a small ADE20K-format data set')
    parser.add_argument('out_dir', help='folder to create ADEChallengeData2016/ in')
    parser.add_argument('--num-train', type=int, default=200, help='training images')
    parser.add_argument('--num-val', type=int, default=50, help='validation images')
    parser.add_argument('--size', type=int, default=128, help='image side in pixels')
    parser.add_argument('--num-classes', type=int, default=12, choices=range(1, len(DEFAULT_CLASS_IDS) + 1),
                        metavar=f'1..{len(DEFAULT_CLASS_IDS)}', help='how many ADE20K classes appear')
    parser.add_argument('--seed', type=int, default=0, help='random seed (same seed, same files)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    make_synthetic_ade20k(args.out_dir, num_train=args.num_train, num_val=args.num_val, size=args.size,
                          num_classes=args.num_classes, seed=args.seed)


if __name__ == '__main__':
    main()
