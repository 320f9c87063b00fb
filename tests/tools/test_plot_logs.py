import json
import os
import os.path as osp
import time

import matplotlib.image as mpimg
import pytest

from tinymim.apis import load_tool

plot_logs = load_tool('plot_logs')


def write_scalars(work_dir, timestamp, records):
    """A work dir as the mmengine Runner's LocalVisBackend leaves it."""
    vis = osp.join(work_dir, timestamp, 'vis_data')
    os.makedirs(vis)
    path = osp.join(vis, 'scalars.json')
    with open(path, 'w') as f:
        for record in records:
            f.write(json.dumps(record) + '\n')
    return path


TRAIN = [dict(lr=1e-3, loss=1.0 / i, loss_qk=0.6 / i, loss_vv=0.4 / i, time=0.5, data_time=0.1, iter=i, step=i,
              epoch=1) for i in range(1, 6)]
VAL = [dict(aAcc=70.0, mIoU=40.5, mAcc=50.0, step=5)]


def test_default_keys_are_losses_and_metrics(tmp_path):
    path = write_scalars(str(tmp_path), '20240101_000000', TRAIN + VAL)
    series = plot_logs.read_scalars(path)
    assert plot_logs.default_keys(series) == ['loss', 'loss_qk', 'loss_vv', 'mIoU', 'mAcc', 'aAcc']
    steps, values = series['loss_qk']
    assert steps == [1, 2, 3, 4, 5] and values[-1] == pytest.approx(0.12)
    assert series['mIoU'] == ([5], [40.5])


def test_main_picks_the_newest_run_and_writes_a_png(tmp_path):
    work_dir = str(tmp_path)
    old = write_scalars(work_dir, '20240101_000000', [dict(old_loss=1.0, step=1)])
    past = time.time() - 100
    os.utime(old, (past, past))
    write_scalars(work_dir, '20240102_000000', TRAIN)
    out = plot_logs.main([work_dir, '--keys', 'loss', 'lr', '--out', str(tmp_path / 'fig' / 'curves.png')])
    image = mpimg.imread(out)
    assert image.shape[0] > 100 and image.shape[1] > 300  # two panels side by side
    with pytest.raises(KeyError, match="old_loss"):
        plot_logs.main([work_dir, '--keys', 'old_loss'])  # only in the older run


def test_default_output_sits_next_to_the_log(tmp_path):
    path = write_scalars(str(tmp_path), '20240101_000000', TRAIN)
    out = plot_logs.main([path])
    assert out == osp.join(osp.dirname(path), 'curves.png') and osp.isfile(out)


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match='no vis_data/scalars.json'):
        plot_logs.main([str(tmp_path)])
    with pytest.raises(FileNotFoundError, match='neither'):
        plot_logs.main([str(tmp_path / 'missing')])
    path = write_scalars(str(tmp_path), 'run', TRAIN)
    with open(path, 'a') as f:
        f.write('{not json\n')
    with pytest.raises(ValueError, match=r'scalars.json:6 is not a JSON line'):
        plot_logs.read_scalars(path)
    with pytest.raises(KeyError, match='not in the log'):
        plot_logs.plot_curves(plot_logs.read_scalars(write_scalars(str(tmp_path), 'run2', TRAIN)), ['mIoU'],
                              str(tmp_path / 'x.png'))
