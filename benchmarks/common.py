"""Shared pieces of the benchmark scripts: timing, peak memory, the machine's
matmul peak, worker subprocesses and markdown tables.

Every measured configuration runs in a fresh worker process (the script
re-invoked with ``--worker SPEC``), so one configuration's allocations,
caches and thread pools cannot change another's numbers, and so peak
memory can be read per configuration:

* CPU: the process's resident-set high-water mark. After the models,
  weights and inputs are built, ``malloc_trim`` returns freed heap pages to
  the OS and ``/proc/self/clear_refs`` resets VmHWM to the current VmRSS;
  the peak is VmHWM minus that RSS after the measured steps (warm-up
  included). It counts activations, gradients, optimizer
  state and allocator slack, not the weights.
* CUDA: ``torch.cuda.max_memory_allocated`` minus the memory allocated at
  the same point.

Each run is timed twice: wall-clock seconds and the worker's CPU seconds
(``time.process_time``, all threads). Workers run with
``OMP_WAIT_POLICY=PASSIVE`` so idle OpenMP threads sleep instead of spinning
and CPU time counts work, not waiting. On a machine shared with other jobs
wall time mostly measures the contention; CPU time is much steadier, so the
ratios are given on both clocks. Both are the best of ``--repeats`` runs
after ``--warmup`` runs.

Each side runs in ``--rounds`` fresh workers (default 3), the sides
alternating, and every figure in a table is the range (min-max) over the
rounds: the same model runs a few per cent apart from one process to the
next. A ratio compares the two sides' workers of the same round, which ran
one after the other.
"""
import argparse
import contextlib
import ctypes
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

RESULT_TAG = 'BENCH_RESULT '
DEFAULT_ROUNDS = 3


# ------------------------------------------------------------- arguments
def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda' (default cpu)")
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: all cores)')
    parser.add_argument('--warmup', type=int, default=1, help='untimed runs per configuration')
    parser.add_argument('--repeats', type=int, default=2, help='timed runs per configuration (best is kept)')
    parser.add_argument('--rounds', type=int, default=DEFAULT_ROUNDS,
                        help='fresh worker processes per side, alternating the sides; every figure is the range '
                             f'over the rounds (default {DEFAULT_ROUNDS})')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision: bf16 autocast on both sides')
    parser.add_argument('--compile', action='store_true', help='torch.compile our model(s)')
    parser.add_argument('--worker', default=None, help=argparse.SUPPRESS)


def check_device(device: str) -> None:
    if device not in ('cpu', 'cuda'):
        raise SystemExit(f"--device must be 'cpu' or 'cuda', got {device!r}")
    if device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: no CUDA device is visible to torch')


# ------------------------------------------------------- timing & memory
def sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def time_runs(fn: Callable[[], object], device: str, warmup: int, repeats: int) -> List[Tuple[float, float]]:
    """(wall, CPU) seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(max(1, repeats)):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        sync(device)
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
    return times


def _proc_status_kib(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'/proc/self/status has no {field} line')


class PeakMemory:
    """Peak memory above the moment ``start()`` is called, in MiB (see module doc)."""

    def __init__(self, device: str):
        self.device = device
        self.base = 0

    def start(self) -> None:
        if self.device == 'cuda':
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return
        # Hand freed heap pages back to the OS first: otherwise the run reuses
        # memory left resident by setup (e.g. a loaded state dict) and the
        # high-water mark never moves.
        ctypes.CDLL('libc.so.6').malloc_trim(0)
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # resets VmHWM to the current VmRSS (Linux >= 4.0)
        self.base = _proc_status_kib('VmRSS') * 1024

    def peak_mib(self) -> float:
        if self.device == 'cuda':
            torch.cuda.synchronize()
            return (torch.cuda.max_memory_allocated() - self.base) / 2**20
        return (_proc_status_kib('VmHWM') * 1024 - self.base) / 2**20


def measure(fn: Callable[[], object], device: str, warmup: int, repeats: int) -> Dict[str, float]:
    """Best seconds per call and peak memory (MiB) of ``fn``."""
    memory = PeakMemory(device)
    memory.start()
    times = time_runs(fn, device, warmup, repeats)
    return dict(seconds=min(t[0] for t in times), cpu_seconds=min(t[1] for t in times),
                peak_mib=memory.peak_mib(), times=times)


def matmul_peak(device: str, size: int = 4096, repeats: int = 10, dtype=torch.float32) -> Dict[str, float]:
    """``torch.mm`` of two (size x size) matrices: FLOP/s on the wall clock and
    FLOP per CPU-second, best of ``repeats``."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    times = time_runs(lambda: torch.mm(a, b), device, warmup=2, repeats=repeats)
    flops = 2 * size ** 3
    return dict(flops_per_s=flops / min(t[0] for t in times), flops_per_cpu_s=flops / min(t[1] for t in times))


def autocast(device: str, enabled: bool, dtype=torch.bfloat16):
    """Autocast to ``dtype`` (default bf16) when ``enabled``; a no-op context otherwise."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=dtype)


# --------------------------------------------------------------- workers
class WorkerFailed(RuntimeError):
    """A worker exited with an error; ``reason`` is the last line of its stderr
    (e.g. ``torch.OutOfMemoryError: CUDA out of memory...``). Scripts print it
    as the configuration's row and go on with the next one."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def failed_row(label: Sequence[object], err: WorkerFailed, width: int) -> list:
    """A table row of ``width`` cells for a configuration whose worker failed:
    its label cells, the error, then blanks."""
    return [*label, f'failed: {err.reason}'] + [None] * (width - len(label) - 1)


def exit_if_failed(count: int) -> None:
    """After the tables: a non-zero exit status when any configuration failed."""
    if count:
        sys.exit(f'{count} configuration(s) failed; see the rows above and the errors on stderr')


def run_worker(script: str, spec: dict, args: argparse.Namespace) -> dict:
    """Run ``script --worker SPEC`` in a fresh process and return its result dict."""
    cmd = [sys.executable, script, '--worker', json.dumps(spec), '--device', args.device,
           '--warmup', str(args.warmup), '--repeats', str(args.repeats)]
    if args.threads:
        cmd += ['--threads', str(args.threads)]
    env = dict(os.environ, OMP_WAIT_POLICY='PASSIVE')  # see the module doc
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode or not lines:
        errors = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        print(proc.stderr[-4000:], file=sys.stderr)
        raise WorkerFailed(f'benchmark worker {spec} failed (exit {proc.returncode})',
                           errors[-1][:200] if errors else f'exit {proc.returncode}')
    return json.loads(lines[-1][len(RESULT_TAG):])


def run_sides(script: str, specs: Dict[str, dict], args: argparse.Namespace) -> Dict[str, List[dict]]:
    """Each side's worker ``args.rounds`` times, the sides alternating: per
    side, its results in round order (see ``span`` and ``per_round``)."""
    results: Dict[str, List[dict]] = {side: [] for side in specs}
    for _ in range(max(1, args.rounds)):
        for side, spec in specs.items():
            results[side].append(run_worker(script, spec, args))
    return results


def per_round(fn: Callable[..., Optional[float]], *sides: List[dict]) -> List[Optional[float]]:
    """``fn`` of the sides' results round by round, e.g. a ratio of two sides' workers that ran one after
    the other."""
    return [fn(*results) for results in zip(*sides)]


def worker_setup(args: argparse.Namespace) -> dict:
    """Parse the worker spec and set threads; call first in ``--worker`` mode."""
    if args.threads:
        torch.set_num_threads(args.threads)
    return json.loads(args.worker)


def emit(result: dict) -> None:
    print(RESULT_TAG + json.dumps(result), flush=True)


def scratch_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix='tinymim_bench_')


# ---------------------------------------------------------------- output
def machine_line(device: str, threads: Optional[int] = None) -> str:
    """CPU model, cores and the workers' torch threads (``threads``, default
    this process's), the GPU, torch version and current load."""
    cpu = platform.processor() or 'unknown CPU'
    with contextlib.suppress(OSError):
        with open('/proc/cpuinfo') as f:
            cpu = next((ln.split(':', 1)[1].strip() for ln in f if ln.startswith('model name')), cpu)
    parts = [f'{cpu}, {os.cpu_count()} cores, {threads or torch.get_num_threads()} torch threads']
    if device == 'cuda':
        parts.append(torch.cuda.get_device_name())
    parts.append(f'torch {torch.__version__}')
    with contextlib.suppress(OSError):
        parts.append('load average {:.2f} {:.2f} {:.2f}'.format(*os.getloadavg()))
    return '; '.join(parts)


def number(v: float) -> str:
    """A figure as the tables print it: 3 significant digits, whole numbers from 100 on."""
    return f'{v:.3g}' if abs(v) < 100 else f'{v:.0f}'


def percent(v: float) -> str:
    return f'{v:.0%}'


def span(values: Sequence[Optional[float]], fmt: Callable[[float], str] = number) -> Optional[str]:
    """The range of ``values`` over the rounds, ``'min–max'`` (one figure when both print alike);
    None (a '-' cell) when there is none."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    low, high = fmt(min(values)), fmt(max(values))
    return low if low == high else f'{low}–{high}'


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v):
        if v is None:
            return '-'
        if isinstance(v, float):
            return number(v)
        return str(v)
    lines = ['| ' + ' | '.join(headers) + ' |', '|' + '---|' * len(headers)]
    lines += ['| ' + ' | '.join(cell(v) for v in row) + ' |' for row in rows]
    return '\n'.join(lines)


def ratio(ours: float, ref: float) -> Optional[float]:
    return ours / ref if ref else None


def cpu_time_ratio(device: str, baseline: dict, ours: dict) -> Optional[float]:
    """Speed ratio on the CPU-time clock; none on CUDA, where the host's CPU
    time does not measure the GPU's work."""
    return ratio(baseline['cpu_seconds'], ours['cpu_seconds']) if device == 'cpu' else None
