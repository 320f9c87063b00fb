"""Smoke tests: each benchmark script runs end to end with its smallest
settings and prints its table. Nothing here is timed; the numbers are the
scripts' business (see docs/performance.md)."""
import os.path as osp
import re
import subprocess
import sys

import pytest

from tests.helpers import ROOT

FAST = ['--warmup', '0', '--repeats', '1', '--threads', '1', '--rounds', '1']


def run_script(name, *flags):
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'benchmarks', name), *flags], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def low(cell):
    """The lower end of a 'min–max' cell (or the cell's one figure)."""
    return float(cell.split('–')[0].rstrip('%'))


def table_rows(out, header_start):
    """Data rows of the markdown table whose header starts with ``header_start``."""
    lines = out.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith('| ' + header_start))
    rows = []
    for ln in lines[start + 2:]:
        if not ln.startswith('|'):
            break
        rows.append([c.strip() for c in ln.strip('|').split('|')])
    return rows


@pytest.mark.slow
def test_seg_step_runs():
    out = run_script('seg_step.py', '--archs', 'tiny', '--parts', 'backbone,whole', '--crop', '64', *FAST)
    rows = table_rows(out, 'model')
    assert [r[:2] for r in rows] == [['ViT-T', 'backbone'], ['ViT-T', 'whole']]
    for r in rows:
        assert float(r[2]) > 0 and float(r[3]) > 0  # images/s of both sides
        assert float(r[-1]) < 1e-3  # same weights -> same outputs as mmseg's MAE backbone


@pytest.mark.slow
def test_deploy_runs():
    pytest.importorskip('onnxruntime')
    out = run_script('deploy.py', '--archs', 'tiny-light', '--crop', '64', '--batch', '2', *FAST)
    rows = table_rows(out, 'model')
    assert [r[:2] for r in rows] == [['ViT-T light', side] for side in ('ours', 'mmseg', 'ort-fp32', 'ort-int8')]
    for r in rows:
        assert low(r[2]) > 0 and low(r[4]) > 0  # latency, and its ratio to ours
    fp32 = {r[1]: float(r[-2]) for r in rows}  # max relative difference of the logits vs ours
    assert fp32['mmseg'] < 1e-4 and fp32['ort-fp32'] < 1e-4


@pytest.mark.slow
def test_distill_step_runs():
    out = run_script('distill_step.py', '--pairs', 's-t', '--res', '32', '--batch', '2', '--loss-memory', '32',
                     '--peak-size', '256', *FAST)
    (row,) = table_rows(out, 'pair')
    assert row[:3] == ['S→T', '32', '2'] and float(row[3]) > 0 and row[-1].endswith('%')
    ours_gflop, eager_gflop = float(row[-5]), float(row[-4])  # executed FLOPs, attention included
    assert 0 < ours_gflop and 0.8 < ours_gflop / eager_gflop < 1.2
    (loss_row,) = table_rows(out, 'px')
    assert loss_row[:2] == ['32', '5']
    # checked before timing: the eager baseline computes our loss and gradients
    assert re.search(r'- s-t at 32 px, batch 2: loss [\d.]+ \(ours\) vs [\d.]+ \(eager\), relative difference', out)


@pytest.mark.slow
def test_data_pipeline_runs():
    out = run_script('data_pipeline.py', '--images', '4', '--passes', '1', '--size', '120x90', '--crop', '64',
                     '--rounds', '2')  # alternating fresh workers per side: each figure a min–max range
    rows = table_rows(out, 'pipeline')
    assert [r[0].split()[:2] for r in rows] == [['ours', '(OpenCV'], ['ours', '+'], ['reference', '(PIL']]
    assert all(low(r[1]) > 0 for r in rows) and 'min–max over 2 alternating round(s)' in out


@pytest.mark.slow
@pytest.mark.parametrize('name', ['seg_step.py', 'distill_step.py', 'data_pipeline.py'])
def test_bad_flags_fail_clearly(name):
    flag = {'seg_step.py': ['--archs', 'huge'], 'distill_step.py': ['--pairs', 'x-y'],
            'data_pipeline.py': ['--size', '500']}[name]
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'benchmarks', name), *flag], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode != 0 and flag[1] in proc.stderr


def test_flop_count_includes_cpu_flash_attention():
    """The executed-FLOP count must see SDPA's CPU kernels, forward and backward."""
    import torch
    import torch.nn.functional as F
    sys.path.insert(0, osp.join(ROOT, 'benchmarks'))
    try:
        from distill_step import count_flops
    finally:
        sys.path.remove(osp.join(ROOT, 'benchmarks'))
    b, h, n, d = 2, 3, 17, 8
    q, k, v = (torch.randn(b, h, n, d, requires_grad=True) for _ in range(3))
    forward = 2 * 2 * b * h * n * n * d  # QKᵀ and PV
    assert count_flops(lambda: F.scaled_dot_product_attention(q, k, v)) == forward
    assert count_flops(lambda: F.scaled_dot_product_attention(q, k, v).sum().backward()) == 3.5 * forward


@pytest.mark.slow
def test_gpu_script_runs_all_tables(tmp_path):
    """``benchmarks/run_gpu.sh`` end to end, on CPU with the smallest
    settings (its GPU defaults need a CUDA device, which must be named as
    missing)."""
    import os

    import torch
    script = osp.join(ROOT, 'benchmarks', 'run_gpu.sh')
    env = dict(os.environ, PYTHON=sys.executable)
    if not torch.cuda.is_available():  # with a GPU the defaults would run the full GPU tables
        proc = subprocess.run(['bash', script, str(tmp_path / 'gpu')], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=120)
        assert proc.returncode != 0 and 'no CUDA device' in proc.stderr
    env.update(DEVICE='cpu', COMPILE='0', PAIRS='s-t', RES='32', LOSS_MEMORY='32', BATCH='2', ARCHS='tiny',
               PARTS='backbone', CROP='64', WARMUP='0', REPEATS='1', ROUNDS='1', PEAK_SIZE='256', IMAGES='4',
               PEAK_TFLOPS='1')
    proc = subprocess.run(['bash', script, str(tmp_path / 'cpu')], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tables = {name: (tmp_path / 'cpu' / f'{name}.md').read_text() for name in ('distill_step', 'seg_step',
                                                                              'data_pipeline')}
    (row,) = table_rows(tables['distill_step'], 'pair')
    assert row[:3] == ['S→T', '32', '2'] and row[-1].endswith('%')  # MFU against the given 1 TFLOP/s
    assert 'bf16 autocast' in tables['distill_step'] and 'datasheet peak 1 TFLOP/s' in tables['distill_step']
    assert [r[:2] for r in table_rows(tables['seg_step'], 'model')] == [['ViT-T', 'backbone']]
    assert len(table_rows(tables['data_pipeline'], 'pipeline')) == 3


@pytest.mark.slow  # the benchmark starts its worker processes
def test_a_failing_configuration_is_a_row_and_the_rest_still_run(monkeypatch, capsys):
    """A worker that fails (out of memory on a GPU, say) gives a row naming the error; the other
    configurations and tables still run, and the exit status says something failed."""
    sys.path.insert(0, osp.join(ROOT, 'benchmarks'))
    try:
        import distill_step
        from common import WorkerFailed
    finally:
        sys.path.remove(osp.join(ROOT, 'benchmarks'))
    real = distill_step.run_sides

    def out_of_memory_at_32px(script, specs, args):
        if specs['ours']['res'] == 32 and not specs['ours'].get('loss_memory'):
            raise WorkerFailed('worker failed', 'torch.OutOfMemoryError: CUDA out of memory.')
        return real(script, specs, args)
    monkeypatch.setattr(distill_step, 'run_sides', out_of_memory_at_32px)
    monkeypatch.setattr(sys, 'argv', ['distill_step.py', '--pairs', 's-t', '--res', '32,48', '--batch', '2',
                                      '--loss-memory', '32', '--peak-size', '256', *FAST])
    with pytest.raises(SystemExit, match=r'1 configuration\(s\) failed'):
        distill_step.main()
    out = capsys.readouterr().out
    failed, ok = table_rows(out, 'pair')
    assert failed[:4] == ['S→T', '32', '2', 'failed: torch.OutOfMemoryError: CUDA out of memory.']
    assert ok[:3] == ['S→T', '48', '2'] and float(ok[3]) > 0
    assert table_rows(out, 'px')[0][:2] == ['32', '5']  # the loss-memory table still ran


@pytest.mark.slow  # the benchmark starts its worker processes
def test_a_baseline_that_computes_something_else_is_not_timed(monkeypatch, capsys):
    """The same-work check runs before timing: an eager relation loss 1 % off fails the row, names the
    loss, and no worker times it."""
    sys.path.insert(0, osp.join(ROOT, 'benchmarks'))
    try:
        import distill_step
    finally:
        sys.path.remove(osp.join(ROOT, 'benchmarks'))
    real = distill_step.eager_relation_kl
    monkeypatch.setattr(distill_step, 'eager_relation_kl', lambda *taps: 1.01 * real(*taps))
    monkeypatch.setattr(distill_step, 'run_sides', lambda *a: pytest.fail('timed a baseline that does other work'))
    monkeypatch.setattr(sys, 'argv', ['distill_step.py', '--pairs', 's-t', '--res', '32', '--batch', '2',
                                      '--loss-memory', '', '--peak-size', '256', *FAST])
    with pytest.raises(SystemExit, match=r'1 configuration\(s\) failed'):
        distill_step.main()
    (row,) = table_rows(capsys.readouterr().out, 'pair')
    assert row[:3] == ['S→T', '32', '2']
    assert re.match(r'failed: same-work check: s-t at 32 px, batch 2: the eager baseline computes another loss', row[3])
