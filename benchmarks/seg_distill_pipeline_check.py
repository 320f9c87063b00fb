"""UperNet on the generated ADE20K-format set: a ViT backbone from scratch
against the same ViT distilled (TinyMIM relations) from a supervised teacher.

A pipeline check at CPU scale, not an ADE20K result. No MAE teacher can be
downloaded where this runs, so the teacher is a wider, deeper ViT trained
*supervised* (UperNet) on the same generated set; its segmentor checkpoint is
read by the ViT loader (its ``backbone.`` weights). Steps, each one
``tools/train.py`` run in its own process with a config this script writes
next to the runs (each inherits a real config and overrides only sizes, data
and schedule):

1. generate the set (``make_synthetic_ade20k``, same defaults as the tool);
2. teacher: UperNet + a ``--teacher-layers`` x ``--teacher-width`` ViT,
   supervised, ``--teacher-iters`` iterations;
3. for each of ``--seg-seeds``, a distillation with that seed: the real
   distillation config (``tinymim_mae-vit-b_to_vit-s_32xb128-300e_in1k.py``)
   with the teacher's last block distilled into the student's last block, on
   the *training images only*, as unlabeled images;
4. for each of ``--seg-seeds``, the two compared rows with the same
   settings and seed: UperNet + the 4-block x 96-wide student ViT from random
   init ("scratch") and from that seed's distillation checkpoint
   ("distilled"), ``--seg-iters`` iterations each. So the spread over seeds
   covers the distillation's randomness as well as the fine-tuning's.

With ``--parallel``, runs that do not depend on each other (the teacher and
the first from-scratch run; the distillations; then each seed's pair) train
side by side. Each run
uses ``--threads`` threads (default 1). ``--skip-done`` reuses steps that already finished in the work
dir (their wall times are kept in ``times.json``).

Prints a markdown table of aAcc / mIoU / mAcc (mmseg's ``IoUMetric`` on the
validation images, whole 128x128 images) and the wall time of each step,
then the mean and standard deviation over the seeds. ``--random-teacher-control``
adds a third row: the same distillation from the teacher's ViT at random
init (untrained), which separates what the teacher taught from what the
distillation recipe alone gives the student.

    python benchmarks/seg_distill_pipeline_check.py --parallel --seg-seeds 0 1 2 --random-teacher-control
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time
from typing import Dict, List, Sequence

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SEG_BASE = osp.join(ROOT, 'mmseg_configs/upernet/upernet_tinymim-vit-t_1xb8-400_ade20k-synthetic-128x128.py')
DISTILL_BASE = osp.join(ROOT, 'mmseg_configs/distill/tinymim_mae-vit-b_to_vit-s_32xb128-300e_in1k.py')

# The UperNet settings of the from-scratch row in docs/segmentation.md:
# 64x64 random crops of the 128-px images (no resize, no photometric
# distortion), UPerHead/FCN widths 64, fp32 AdamW lr 4e-4, layer decay 0.8,
# linear warm-up then poly, batch 8, whole-image test.
SEG_TEMPLATE = '''_base_ = {base!r}

crop_size = (64, 64)
data_root = {data_root!r}
max_iters = {iters}
warmup_iters = {warmup}

model = dict(
    pretrained={pretrained!r},
    backbone=dict(arch=dict(_delete_=True, embed_dims={width}, num_layers={layers}, num_heads={heads}),
                  out_indices={out_indices}, img_size=crop_size),
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(channels=64),
    auxiliary_head=dict(channels=64))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='ValidateSegLabels', num_classes=150),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
train_dataloader = dict(num_workers={workers}, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(num_workers={workers}, persistent_workers=False, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader

# (no weight decay on pos_embed, cls_token and the bias tables, as in the runs docs/segmentation.md reports)
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(lr=4e-4),
                     paramwise_cfg=dict(layer_decay_rate=0.8, decay_no_weight_decay_names=False))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=warmup_iters, end=max_iters),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(logger=dict(interval=20), checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
randomness = dict(seed={seed})
'''

# The real distillation config at the student's size: 64-px views of the
# training images (the recipe's RandomResizedCrop, flip, student colour
# jitter), the teacher built like the segmentation backbone it was trained as
# (relative position bias, layer scale, no final norm) so its relations are
# those of the trained network.
DISTILL_TEMPLATE = '''_base_ = {base!r}

img_size = 64
max_epochs = {epochs}
warmup_epochs = {warmup}

model = dict(
    teacher=dict(arch=dict(_delete_=True, embed_dims={t_width}, num_layers={t_layers}, num_heads={t_heads}),
                 img_size=img_size, checkpoint={teacher!r}, use_rel_pos_bias=True, layer_scale_init_value=1.0,
                 final_norm=False),
    student=dict(arch=dict(_delete_=True, embed_dims={width}, num_layers={layers}, num_heads={heads}),
                 img_size=img_size),
    teacher_block={t_layers},
    relation_chunk_size=None)

train_dataloader = dict(
    batch_size={batch}, num_workers={workers}, persistent_workers=False, pin_memory=False,
    dataset=dict(data_root={image_root!r}, data_prefix=dict(img_path='training'),
                 pipeline=[
                     dict(type='LoadImageRGB'),
                     dict(type='RandomResizedCropFlip', size=img_size, scale=(0.2, 1.0), interpolation='bicubic',
                          flip_prob=0.5),
                     dict(type='StudentColorJitter', brightness=0.4, contrast=0.4, saturation=0.4),
                     dict(type='PackTwoViewInputs'),
                 ]))
optim_wrapper = dict(optimizer=dict(lr={lr}))
auto_scale_lr = dict(enable=False)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=warmup_epochs, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, eta_min=0.0, by_epoch=True,
         begin=warmup_epochs, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
randomness = dict(seed={seed})
'''


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--work-dir', default='work_dirs/seg_distill_pipeline_check')
    p.add_argument('--seg-iters', type=int, default=300, help='UperNet iterations of both compared rows')
    p.add_argument('--seg-warmup', type=int, default=30, help='warm-up iterations of both compared rows')
    p.add_argument('--teacher-iters', type=int, default=600, help='UperNet iterations of the supervised teacher')
    p.add_argument('--teacher-layers', type=int, default=6)
    p.add_argument('--teacher-width', type=int, default=192)
    p.add_argument('--teacher-heads', type=int, default=3)
    p.add_argument('--distill-epochs', type=int, default=100)
    p.add_argument('--distill-warmup', type=int, default=5, help='warm-up epochs of the distillation')
    p.add_argument('--distill-batch', type=int, default=32)
    p.add_argument('--distill-lr', type=float, default=1e-3, help='AdamW lr (auto_scale_lr is off)')
    p.add_argument('--num-train', type=int, default=200)
    p.add_argument('--num-val', type=int, default=50)
    p.add_argument('--seed', type=int, default=0, help='data set and training seed')
    p.add_argument('--workers', type=int, default=0, help='data loader workers per run')
    p.add_argument('--seg-seeds', type=int, nargs='+', default=None,
                   help='seeds of the distillations and of the compared UperNet runs (both rows; seed s '
                        'fine-tunes the student distilled with seed s); default --seed')
    p.add_argument('--parallel', action='store_true',
                   help='train independent runs side by side (the teacher and the first from-scratch run; the '
                        'distillations; each seed\'s distilled and from-scratch runs; the control\'s runs)')
    p.add_argument('--random-teacher-control', action='store_true',
                   help='also distil from the teacher ViT at random init and fine-tune that student (a control)')
    p.add_argument('--threads', type=int, default=1,
                   help='torch threads per run (default 1: these models are too small to gain from more)')
    p.add_argument('--skip-done', action='store_true',
                   help='reuse steps whose work dir already holds a final checkpoint (of a run with the same '
                        'arguments: the settings are not compared)')
    return p.parse_args(argv)


# The student: the backbone of the from-scratch row.
STUDENT = dict(layers=4, width=96, heads=3)


def out_indices(layers: int) -> List[int]:
    """Four blocks for the neck's four levels: the last one and three spread below it."""
    if layers < 4:
        raise SystemExit(f'the UperNet neck takes 4 levels: --teacher-layers must be >= 4, got {layers}')
    return sorted({round(layers * k / 4) - 1 for k in (1, 2, 3)} | {layers - 1})


def write(path: str, text: str) -> str:
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)
    return path


def seg_config(args, name: str, arch: dict, iters: int, seed: int, pretrained=None) -> str:
    data_root = osp.abspath(osp.join(args.work_dir, 'synthetic_ade', 'ADEChallengeData2016'))
    return write(osp.join(args.work_dir, 'configs', f'{name}.py'), SEG_TEMPLATE.format(
        base=SEG_BASE, data_root=data_root, iters=iters, warmup=min(args.seg_warmup, iters), pretrained=pretrained,
        out_indices=out_indices(arch['layers']), workers=args.workers, seed=seed, **arch))


def distill_config(args, name: str, teacher: str, image_root: str, seed: int) -> str:
    return write(osp.join(args.work_dir, 'configs', f'{name}.py'), DISTILL_TEMPLATE.format(
        base=DISTILL_BASE, epochs=args.distill_epochs, warmup=args.distill_warmup, teacher=teacher,
        t_layers=args.teacher_layers, t_width=args.teacher_width, t_heads=args.teacher_heads,
        batch=args.distill_batch, workers=args.workers, image_root=image_root, lr=args.distill_lr, seed=seed,
        **STUDENT))


def random_teacher(args, path: str) -> str:
    """The teacher's ViT at its initialisation, untrained: the control that tells what the distillation
    itself (the recipe, the student's sin-cos positions) gives without anything learnt to copy."""
    import torch

    from tinymim.models.vit import VisionTransformer
    torch.manual_seed(args.seed)
    # The constructor initialises the weights (MAE's init).
    vit = VisionTransformer(arch=dict(embed_dims=args.teacher_width, num_layers=args.teacher_layers,
                                      num_heads=args.teacher_heads), img_size=64, use_rel_pos_bias=True,
                            layer_scale_init_value=1.0, final_norm=False)
    torch.save(vit.state_dict(), path)
    return path


class Steps:
    """Runs ``tools/train.py`` steps (each logs to ``<work_dir>.log``) and keeps their wall times in
    ``times.json``, so ``--skip-done`` can reuse a finished step with the time it took."""

    def __init__(self, args):
        self.args = args
        self.times_file = osp.join(args.work_dir, 'times.json')
        self.seconds = {}
        if osp.isfile(self.times_file):
            with open(self.times_file) as f:
                self.seconds = json.load(f)

    def dir(self, name: str) -> str:
        return osp.join(self.args.work_dir, name)

    def done(self, name: str) -> bool:
        return self.args.skip_done and osp.isfile(osp.join(self.dir(name), 'last_checkpoint'))

    def run(self, configs: Dict[str, str]) -> None:
        """Train ``{name: config}`` side by side (one thread each) with ``--parallel``, else one after another."""
        todo = {name: cfg for name, cfg in configs.items() if not self.done(name)}
        for name in set(configs) - set(todo):
            print(f'{name}: finished earlier, reused (--skip-done)', flush=True)
        groups = [todo] if self.args.parallel else [{n: c} for n, c in todo.items()]
        for group in groups:
            threads = str(self.args.threads)
            # PASSIVE: idle OpenMP threads sleep; spinning threads on a busy machine slow a small model ~30x.
            env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, OMP_WAIT_POLICY='PASSIVE')
            running = {}
            for name, cfg in group.items():
                command = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), cfg, '--work-dir', self.dir(name)]
                print(f'[{time.strftime("%H:%M:%S")}] start {name}: {" ".join(command)}', flush=True)
                log = open(f'{self.dir(name)}.log', 'w')
                proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
                running[name] = (proc, log, time.time())
            while running:
                time.sleep(1)
                for name, (proc, log, start) in list(running.items()):
                    if proc.poll() is None:
                        continue
                    log.close()
                    del running[name]
                    self.seconds[name] = time.time() - start
                    print(f'[{time.strftime("%H:%M:%S")}] {name}: exit {proc.returncode} after '
                          f'{self.seconds[name]:.0f} s', flush=True)
                    if proc.returncode:
                        raise SystemExit(f'{name} failed (exit {proc.returncode}); see {self.dir(name)}.log')
                    with open(self.times_file, 'w') as f:
                        json.dump(self.seconds, f, indent=1)

    def checkpoint(self, name: str) -> str:
        with open(osp.join(self.dir(name), 'last_checkpoint')) as f:
            return f.read().strip()

    def metrics(self, name: str) -> dict:
        """aAcc / mIoU / mAcc of the last validation in the newest run's ``vis_data/scalars.json``."""
        work_dir = self.dir(name)
        runs = sorted(d for d in os.listdir(work_dir)
                      if osp.isfile(osp.join(work_dir, d, 'vis_data', 'scalars.json')))
        if not runs:
            raise FileNotFoundError(f'no vis_data/scalars.json under {work_dir}')
        metrics = None
        with open(osp.join(work_dir, runs[-1], 'vis_data', 'scalars.json')) as f:
            for line in f:
                record = json.loads(line)
                if 'mIoU' in record:
                    metrics = record
        if metrics is None:
            raise ValueError(f'{work_dir}: the run logged no validation mIoU')
        return metrics

    def wall(self, name: str) -> str:
        return f'{self.seconds[name]:.0f}' if name in self.seconds else '?'


KEYS = ('aAcc', 'mIoU', 'mAcc')


def mean_std(values: Sequence[float]) -> str:
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f'{mean:.2f}'
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f'{mean:.2f} ± {std:.2f}'


def main(argv=None):
    args = parse_args(argv)
    args.work_dir = osp.abspath(args.work_dir)
    start = time.time()
    from tinymim.datasets import make_synthetic_ade20k
    make_synthetic_ade20k(osp.join(args.work_dir, 'synthetic_ade'), num_train=args.num_train, num_val=args.num_val,
                          size=128, seed=args.seed)
    image_root = osp.join(args.work_dir, 'synthetic_ade', 'ADEChallengeData2016', 'images')
    teacher_arch = dict(layers=args.teacher_layers, width=args.teacher_width, heads=args.teacher_heads)
    steps = Steps(args)
    seeds = args.seg_seeds or [args.seed]

    # The teacher and the first from-scratch run do not depend on each other.
    first = {'teacher': seg_config(args, 'teacher', teacher_arch, args.teacher_iters, args.seed),
             f'scratch_seed{seeds[0]}': seg_config(args, f'scratch_seed{seeds[0]}', STUDENT, args.seg_iters,
                                                   seeds[0])}
    steps.run(first)
    teacher = steps.checkpoint('teacher')
    steps.run({f'distill_seed{seed}': distill_config(args, f'distill_seed{seed}', teacher, image_root, seed)
               for seed in seeds})
    for i, seed in enumerate(seeds):
        pair = {f'distilled_seed{seed}': seg_config(args, f'distilled_seed{seed}', STUDENT, args.seg_iters, seed,
                                                    pretrained=steps.checkpoint(f'distill_seed{seed}'))}
        if i:
            pair[f'scratch_seed{seed}'] = seg_config(args, f'scratch_seed{seed}', STUDENT, args.seg_iters, seed)
        steps.run(pair)
    if args.random_teacher_control:
        teacher = random_teacher(args, osp.join(args.work_dir, 'teacher_random-init.pth'))
        steps.run({f'distill-random_seed{seed}': distill_config(args, f'distill-random_seed{seed}', teacher,
                                                                image_root, seed) for seed in seeds})
        steps.run({f'distilled-random_seed{seed}': seg_config(
            args, f'distilled-random_seed{seed}', STUDENT, args.seg_iters, seed,
            pretrained=steps.checkpoint(f'distill-random_seed{seed}')) for seed in seeds})

    t, s = teacher_arch, STUDENT
    m = steps.metrics('teacher')
    print(f'\n| backbone | seed | {" | ".join(KEYS)} | wall (s) |\n|---|---|---|---|---|---|')
    print(f'| teacher: {t["layers"]} blocks x {t["width"]}, supervised, {args.teacher_iters} it | {args.seed} | '
          + ' | '.join(f'{m[k]:.2f}' for k in KEYS) + f' | {steps.wall("teacher")} |')
    rows = {'scratch': 'random init (from scratch)', 'distilled': f'distilled ({args.distill_epochs} epochs)'}
    if args.random_teacher_control:
        rows['distilled-random'] = f'distilled from the random-init teacher ({args.distill_epochs} epochs)'
    summary = {}
    for kind, label in rows.items():
        results = []
        for seed in seeds:
            m = steps.metrics(f'{kind}_seed{seed}')
            results.append(m)
            print(f'| student {s["layers"]} x {s["width"]}, {label}, {args.seg_iters} it | {seed} | '
                  + ' | '.join(f'{m[k]:.2f}' for k in KEYS) + f' | {steps.wall(f"{kind}_seed{seed}")} |')
        summary[kind] = ' | '.join(mean_std([r[k] for r in results]) for k in KEYS)
    if len(seeds) > 1:
        print(f'\nmean ± std over seeds {seeds}:\n\n| backbone | {" | ".join(KEYS)} |\n|---|---|---|---|')
        for kind, label in rows.items():
            print(f'| {label} | {summary[kind]} |')
    walls = ', '.join(f'seed {seed} {steps.wall(f"distill_seed{seed}")} s' for seed in seeds)
    print(f'\ndistillations: {walls}; this invocation took {time.time() - start:.0f} s '
          f'({"independent runs side by side" if args.parallel else "one run at a time"}, '
          f'{args.threads} thread(s) per run)')


if __name__ == '__main__':
    main()
