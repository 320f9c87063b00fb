"""Plot training curves from mmengine's scalar logs.

    python tools/plot_logs.py work_dirs/my_run                     # newest run in the work dir
    python tools/plot_logs.py work_dirs/my_run/20240101_120000/vis_data/scalars.json \
        --keys loss loss_qk loss_vv --out curves.png

The Runner's ``LocalVisBackend`` writes one JSON object per logging step to
``WORK_DIR/<timestamp>/vis_data/scalars.json``: training lines carry the
losses, ``lr``, ``time`` and ``step`` (the iteration); validation lines carry
the metrics (``mIoU``, ``aAcc``...). Each requested key gets its own panel
against ``step``. By default every loss and validation metric found is drawn.
"""
import argparse
import glob
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use('Agg')  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
from mmengine.logging import print_log  # noqa: E402

# Keys that are bookkeeping, never curves worth a default panel.
NOT_CURVES = {'step', 'iter', 'epoch', 'time', 'data_time', 'memory', 'base_lr', 'lr'}
DEFAULT_METRICS = ('mIoU', 'mAcc', 'aAcc')

Series = Dict[str, Tuple[List[float], List[float]]]


def find_scalars(path: str) -> str:
    """``path`` itself if it is a file, else the newest ``*/vis_data/scalars.json`` under the work dir."""
    if osp.isfile(path):
        return path
    if not osp.isdir(path):
        raise FileNotFoundError(f'{path} is neither a scalars.json file nor a work dir')
    candidates = glob.glob(osp.join(path, 'vis_data', 'scalars.json')) + \
        glob.glob(osp.join(path, '*', 'vis_data', 'scalars.json'))
    if not candidates:
        raise FileNotFoundError(f'no vis_data/scalars.json under {path}: was it a work dir of the mmengine Runner '
                                'with the default LocalVisBackend?')
    return max(candidates, key=osp.getmtime)


def read_scalars(path: str) -> Series:
    """``{key: (steps, values)}`` from a scalars.json (one JSON object per line)."""
    series: Series = {}
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f'{path}:{line_no} is not a JSON line: {err}') from err
            step = record.get('step', record.get('iter'))
            if step is None:
                continue
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    steps, values = series.setdefault(key, ([], []))
                    steps.append(step)
                    values.append(float(value))
    if not series:
        raise ValueError(f'{path} holds no scalars')
    return series


def default_keys(series: Series) -> List[str]:
    """Every loss (``loss``, ``loss_qk``, ``decode.loss_ce``...) and validation metric present."""
    losses = [k for k in series if k not in NOT_CURVES and 'loss' in k.split('.')[-1]]
    metrics = [k for k in DEFAULT_METRICS if k in series]
    return losses + metrics


def plot_curves(series: Series, keys: Sequence[str], out: str, title: Optional[str] = None) -> str:
    """One panel per key against the step; writes ``out`` (PNG) and returns it."""
    missing = [k for k in keys if k not in series]
    if missing:
        raise KeyError(f'keys {missing} are not in the log; it has {sorted(series)}')
    cols = min(3, len(keys))
    rows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        steps, values = series[key]
        ax.plot(steps, values, marker='o' if len(steps) < 20 else None, markersize=3)
        ax.set_title(key)
        ax.set_xlabel('iteration')
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis('off')
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if osp.dirname(out):
        os.makedirs(osp.dirname(out), exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Plot training curves from mmengine scalar logs')
    parser.add_argument('log', help='a work dir (its newest run is used) or a vis_data/scalars.json file')
    parser.add_argument('--keys', nargs='+', help='scalars to plot (default: every loss and mIoU/mAcc/aAcc)')
    parser.add_argument('--out', help='output PNG (default: curves.png next to the work dir\'s scalars.json)')
    parser.add_argument('--title', help='figure title')
    return parser.parse_args(argv)


def main(argv=None) -> str:
    args = parse_args(argv)
    path = find_scalars(args.log)
    series = read_scalars(path)
    keys = args.keys or default_keys(series)
    if not keys:
        raise ValueError(f'{path} has no loss or metric; choose --keys from {sorted(series)}')
    out = args.out or osp.join(osp.dirname(path), 'curves.png')
    plot_curves(series, keys, out, args.title)
    print_log(f'plotted {", ".join(keys)} from {path} to {out}', logger='current')
    return out


if __name__ == '__main__':
    main()
