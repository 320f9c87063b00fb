"""The whole TinyMIM chain on this machine in minutes (``make demo``, ``tools/demo.py``).

1. distils a ViT-T student from a ViT-S teacher on the photographs scikit-image
   ships (``mmseg_configs/demo/tinymim_*``, which inherits the real ViT-S -> ViT-T
   distillation config), through ``tools/train.py``;
2. extracts the student (``tools/extract_student.py``), generates a learnable
   ADE20K-format set and fine-tunes UperNet on it (``mmseg_configs/demo/upernet_*``,
   inheriting the real UperNet ViT-T config);
3. evaluates mIoU with ``tools/test.py --show-dir``;
4. draws the relation maps, the training curves and the predictions;
5. exports the fine-tuned model to ONNX (``tools/deploy/export_onnx.py``, checked
   against PyTorch), times it in ONNX Runtime next to PyTorch and draws a mask
   that ONNX Runtime predicts (``tools/deploy/ort_inference.py``); then writes
   ``WORK_DIR/summary.md``.

Every step is the tool users run at scale, called with its command line
(printed in the log and the summary, so it can be rerun alone); the Runner
steps run as child processes.
The teacher's size is read from its checkpoint. Without one the teacher is a
randomly initialised ViT-S, and the output says so: the student then copies
relations that mean nothing, and only the mechanics are shown.
"""
import json
import os
import os.path as osp
import shlex
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

from mmengine.logging import MMLogger

from .checkpoints import checkpoint_arch
from .tools import configs_dir, load_tool, tool_path

# Relative to the working directory, so the logged commands read as typed from the repository root.
DISTILL_CONFIG = osp.relpath(osp.join(configs_dir(), 'demo',
                                      'tinymim_vit-s_to_vit-t_1xb8-100e_demo-photos-128px.py'))
SEGMENT_CONFIG = osp.relpath(osp.join(configs_dir(), 'demo',
                                      'upernet_tinymim-vit-t_1xb8-150_demo-synthetic-128x128.py'))
# scikit-image's bundled photographs (no download needed); grey ones become RGB.
PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket', 'hubble_deep_field', 'immunohistochemistry',
          'motorcycle_left', 'motorcycle_right', 'retina', 'camera', 'coins', 'moon', 'brick', 'grass',
          'gravel', 'clock')
RELATION_IMAGE = 'chelsea'
SHORT = dict(tiny='T', small='S', base='B', large='L', huge='H')

# (full demo, --quick): distillation epochs (2 iterations each), segmentation iterations, generated set sizes.
SCALE = {
    False: dict(distill_epochs=100, seg_iters=150, num_train=200, num_val=40),
    True: dict(distill_epochs=2, seg_iters=4, num_train=16, num_val=4),
}


# ----------------------------------------------------------------- helpers
class Demo:
    """Runs the steps, times them and keeps what the summary reports."""

    def __init__(self, work_dir: str, quick: bool, logger: MMLogger):
        self.work_dir = work_dir
        self.scale = SCALE[quick]
        self.quick = quick
        self.logger = logger
        self.steps: List[Dict] = []  # name, command, seconds

    def path(self, *parts) -> str:
        return osp.join(self.work_dir, *parts)

    def run_tool(self, name: str, argv: Sequence[str], what: str, subprocess_run: bool = False):
        """Run ``tools/<name>.py`` with ``argv``: in a child process for the
        tools that build a Runner (mmengine keeps loggers, visualizers and the
        message hub as per-process instances, and mmseg's visualizer has a
        fixed name, so a second Runner in one process would write into the
        first one's folders), in this process for the others."""
        argv = [str(a) for a in argv]
        command = f'python tools/{name}.py ' + ' '.join(shlex.quote(a) for a in argv)
        self.logger.info(f'[{len(self.steps) + 1}] {what}\n    $ {command}')
        start = time.time()
        if subprocess_run:
            subprocess.run([sys.executable, tool_path(name), *argv], check=True)
            result = None
        else:
            result = load_tool(name).main(argv)
        seconds = time.time() - start
        self.steps.append(dict(what=what, command=command, seconds=seconds))
        self.logger.info(f'[{len(self.steps)}] done in {seconds:.0f} s')
        return result

    def timed(self, what: str, fn, *args, **kwargs):
        start = time.time()
        result = fn(*args, **kwargs)
        self.steps.append(dict(what=what, command=None, seconds=time.time() - start))
        self.logger.info(f'[{len(self.steps)}] {what}: {time.time() - start:.0f} s')
        return result


def write_photos(out_dir: str, names: Sequence[str] = PHOTOS) -> List[str]:
    """scikit-image's sample photographs as RGB JPEGs in ``out_dir``."""
    import mmcv
    import numpy as np
    from skimage import color, data

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name in names:
        if name.startswith('motorcycle_'):
            left, right, _ = data.stereo_motorcycle()
            img = left if name.endswith('left') else right
        else:
            img = getattr(data, name)()
        if img.ndim == 2:
            img = color.gray2rgb(img)
        img = np.ascontiguousarray(img[..., :3]).astype(np.uint8)
        path = osp.join(out_dir, f'{name}.jpg')
        mmcv.imwrite(img[..., ::-1], path)  # mmcv writes BGR
        paths.append(path)
    return paths


def random_teacher(path: str, arch: str, img_size: int) -> str:
    """Save a randomly initialised ViT (MAE's init, seed 0) to stand in for the teacher."""
    import torch

    from tinymim.models import VisionTransformer
    torch.manual_seed(0)
    torch.save(VisionTransformer(arch=arch, img_size=img_size).state_dict(), path)
    return path


def newest(pattern_dir: str, suffix: str) -> str:
    """The newest file ending with ``suffix`` in a folder (checkpoints, logs)."""
    files = [osp.join(pattern_dir, f) for f in os.listdir(pattern_dir) if f.endswith(suffix)]
    if not files:
        raise FileNotFoundError(f'no *{suffix} in {pattern_dir}')
    return max(files, key=osp.getmtime)


def first_last(scalars_json: str, key: str):
    """First and last logged value of ``key`` (``None`` when it was never logged)."""
    values = []
    with open(scalars_json) as f:
        for line in f:
            record = json.loads(line)
            if key in record:
                values.append(record[key])
    return (values[0], values[-1]) if values else None


def test_metrics(work_dir: str) -> dict:
    """The metrics ``tools/test.py`` logged: the newest run's ``<timestamp>/<timestamp>.json``."""
    runs = sorted(d for d in os.listdir(work_dir) if osp.isdir(osp.join(work_dir, d)))
    for run in reversed(runs):
        path = osp.join(work_dir, run, f'{run}.json')
        if osp.isfile(path):
            with open(path) as f:
                return json.load(f)
    raise FileNotFoundError(f'no test metrics json under {work_dir}')


# ------------------------------------------------------------------- steps
def prepare_teacher(demo: Demo, teacher: str):
    """(checkpoint, arch name, how the summary describes it)."""
    if teacher:
        arch = checkpoint_arch(teacher)
        demo.logger.info(f'teacher: {teacher} (a ViT-{SHORT[arch]})')
        return teacher, arch, f'`{teacher}`'
    path = random_teacher(demo.path('teacher_random-init_vit-small.pth'), 'small', 128)
    demo.logger.warning('TEACHER is not set: the teacher is a RANDOMLY INITIALISED ViT-S, not a pre-trained one. '
                        'The student learns to copy relations that mean nothing; set TEACHER=path/to/vit.pth '
                        '(an MAE or TinyMIM ViT) for a meaningful teacher.')
    return path, 'small', ('a **randomly initialised** ViT-S (no `TEACHER` checkpoint given): the student copies '
                           'relations of an untrained network, so only the mechanics are shown')


def teacher_options(arch: str) -> list:
    """``--cfg-options`` for a teacher of ``arch``. The config's 12 relation
    heads are those the previous chain step trained into a TinyMIM ViT-S;
    a teacher of another size splits into its own head count."""
    return [f'model.teacher.arch={arch}'] + ([] if arch == 'small' else ['model.relation_heads=None'])


def distill(demo: Demo, teacher: str, arch: str) -> str:
    """Distillation on the Runner; returns the training checkpoint."""
    epochs = demo.scale['distill_epochs']
    demo.run_tool('train', [
        DISTILL_CONFIG, '--work-dir', demo.path('distill'), '--cfg-options',
        f'model.teacher.checkpoint={teacher}', *teacher_options(arch),
        f'train_dataloader.dataset.data_root={demo.path("images")}',
        f'train_cfg.max_epochs={epochs}', f'default_hooks.checkpoint.interval={epochs}',
    ], f'distil ViT-{SHORT[arch]} -> ViT-T on the photographs', subprocess_run=True)
    return newest(demo.path('distill'), '.pth')


def segment(demo: Demo, student: str) -> dict:
    """UperNet fine-tuning on a generated ADE20K-format set, then the test with pictures; returns the metrics."""
    from tinymim.datasets import make_synthetic_ade20k
    scale = demo.scale
    data_root = demo.timed('generate the ADE20K-format set', make_synthetic_ade20k, demo.path('synthetic_ade'),
                           num_train=scale['num_train'], num_val=scale['num_val'], size=128)
    options = [f'model.pretrained={student}'] + [f'{split}_dataloader.dataset.data_root={data_root}'
                                                  for split in ('train', 'test')]
    iters = scale['seg_iters']
    demo.run_tool('train', [
        SEGMENT_CONFIG, '--work-dir', demo.path('segment'), '--cfg-options', *options,
        f'train_cfg.max_iters={iters}', f'default_hooks.checkpoint.interval={iters}',
    ], 'fine-tune UperNet + distilled ViT-T on the generated set', subprocess_run=True)
    shutil.rmtree(demo.path('predictions'), ignore_errors=True)
    # mmseg's SegVisualizationHook draws every `interval`-th test image: about 8 pictures.
    draw_every = max(1, scale['num_val'] // 8)
    demo.run_tool('test', [
        SEGMENT_CONFIG, newest(demo.path('segment'), '.pth'), '--work-dir', demo.path('test'),
        '--show-dir', demo.path('predictions'), '--cfg-options', *options,
        f'default_hooks.visualization.interval={draw_every}',
    ], 'evaluate mIoU, save predictions', subprocess_run=True)
    return test_metrics(demo.path('test'))


def draw_pictures(demo: Demo, distill_ckpt: str, teacher: str, arch: str) -> dict:
    figures = demo.path('figures')
    relations = demo.run_tool('visualize_relations', [
        DISTILL_CONFIG, distill_ckpt, demo.path('images', f'{RELATION_IMAGE}.jpg'), '--teacher', teacher,
        '--out', osp.join(figures, 'relations.png'), '--cfg-options', *teacher_options(arch),
    ], 'draw teacher/student relations')
    curves = {}
    for run, title in (('distill', 'distillation'), ('segment', 'UperNet fine-tuning')):
        curves[run] = demo.run_tool('plot_logs', [demo.path(run), '--out', osp.join(figures, f'{run}_curves.png'),
                                                  '--title', title], f'plot the {title} curves')
    return dict(relations=relations, distill_curves=curves['distill'], segment_curves=curves['segment'])


def compare_latency(config: str, checkpoint: str, onnx_path: str, size: int, repeats: int = 5) -> dict:
    """Best-of-``repeats`` milliseconds of one ``size`` x ``size`` image: PyTorch
    (the data preprocessor and ``encode_decode``, as ``tools/test.py`` runs the
    model) and ONNX Runtime, with the same number of threads."""
    import numpy as np
    import torch

    from tinymim.deploy.export import load_segmentor, reference_logits
    from tinymim.deploy.runtime import OnnxSegmentor, latency
    model, _ = load_segmentor(config, checkpoint)
    image = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1, 3, size, size), dtype=np.uint8))
    reference_logits(model, image)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        reference_logits(model, image)
        times.append(time.perf_counter() - start)
    ort = latency(OnnxSegmentor(onnx_path, threads=torch.get_num_threads()), repeats=repeats)
    return dict(pytorch_ms=min(times) * 1000, onnxruntime_ms=ort * 1000, threads=torch.get_num_threads())


def deploy(demo: Demo) -> dict:
    """The fine-tuned UperNet as ONNX: export (checked), latency next to PyTorch, a mask from ONNX Runtime."""
    from tinymim.deploy.runtime import OnnxSegmentor
    size = 128  # the demo config's crop and test size
    checkpoint = newest(demo.path('segment'), '.pth')
    onnx_path = demo.path('deploy', f'upernet_vit-t_{size}x{size}.onnx')
    exported = demo.run_tool('deploy/export_onnx', [SEGMENT_CONFIG, checkpoint, onnx_path, '--shape', size, size],
                             'export the fine-tuned UperNet to ONNX, check it against PyTorch')
    speed = demo.timed('time ONNX Runtime and PyTorch', compare_latency, SEGMENT_CONFIG, checkpoint, onnx_path, size)
    demo.logger.info(f'ONNX Runtime {speed["onnxruntime_ms"]:.0f} ms vs PyTorch {speed["pytorch_ms"]:.0f} ms per '
                     f'{size}x{size} image ({speed["threads"]} threads)')
    image = demo.path('synthetic_ade', 'ADEChallengeData2016', 'images', 'validation', 'ADE_val_00000001.jpg')
    masks = demo.run_tool('deploy/ort_inference', [onnx_path, image, '--out', demo.path('figures', 'onnxruntime'),
                                                   '--opacity', '0.6'], 'segment an image with ONNX Runtime')
    return dict(path=onnx_path, size_mib=exported['report']['size_mib'], opset=exported['report']['opset'],
                max_rel_diff=max(c['max_rel_diff'] for c in exported['checks']), masks=masks,
                input=OnnxSegmentor(onnx_path).describe_input(), **speed)


def run_demo(work_dir: str = 'work_dirs/demo', teacher: Optional[str] = None, quick: bool = False) -> dict:
    """Every step of the chain in ``work_dir``, with ``teacher`` (a ViT checkpoint; None: a
    random-init ViT-S); ``quick``: a few iterations per step. Returns what the summary reports."""
    if teacher and not osp.isfile(teacher):
        raise FileNotFoundError(f'TEACHER={teacher} does not exist')

    start = time.time()
    os.makedirs(work_dir, exist_ok=True)
    logger = MMLogger.get_instance(f'tinymim_demo_{time.time_ns()}', logger_name='tinymim_demo',
                                   log_file=osp.join(work_dir, 'demo.log'), file_mode='w')
    demo = Demo(work_dir, quick, logger)
    images = demo.timed('write the scikit-image photographs', write_photos, demo.path('images'))
    logger.info(f'{len(images)} photographs in {demo.path("images")}')
    teacher_ckpt, arch, teacher_note = prepare_teacher(demo, teacher)
    distill_ckpt = distill(demo, teacher_ckpt, arch)
    student = demo.path('student_vit-tiny.pth')
    demo.run_tool('extract_student', [distill_ckpt, student], 'extract the student weights')
    metrics = segment(demo, student)
    figures = draw_pictures(demo, distill_ckpt, teacher_ckpt, arch)
    deployed = deploy(demo)

    find_scalars = load_tool('plot_logs').find_scalars
    distill_log, seg_log = find_scalars(demo.path('distill')), find_scalars(demo.path('segment'))
    result = dict(
        teacher=teacher_note, quick=quick, num_val=demo.scale['num_val'], metrics=metrics, figures=figures,
        losses={key: first_last(distill_log, key) for key in ('loss', 'loss_qk', 'loss_vv')},
        seg_loss=first_last(seg_log, 'loss'), deploy=deployed,
        predictions=sorted(osp.join(root, f) for root, _, files in os.walk(demo.path('predictions'))
                           for f in files if f.endswith('.png')),
        steps=demo.steps, seconds=time.time() - start)
    summary = write_summary(demo.path('summary.md'), result, work_dir)
    logger.info(f'mIoU on the generated validation set: {metrics["mIoU"]:.2f} % '
                '(a pipeline check, not an ADE20K result)')
    if not teacher:
        logger.warning('the teacher was RANDOMLY INITIALISED (TEACHER not set)')
    logger.info(f'demo finished in {result["seconds"]:.0f} s; summary: {summary}')
    return result


def _fmt(pair) -> str:
    return 'not logged' if pair is None else f'{pair[0]:.4f} → {pair[1]:.4f}'


def write_summary(path: str, r: dict, work_dir: str) -> str:
    rel = lambda p: osp.relpath(p, work_dir)  # noqa: E731  (links work from the summary's folder)
    m = r['metrics']
    lines = [
        '# TinyMIM demo',
        '',
        f'Finished in {r["seconds"]:.0f} s' + (' (`--quick`: a few iterations, the numbers mean nothing).'
                                               if r['quick'] else '.'),
        '',
        f'**Teacher:** {r["teacher"]}.',
        '',
        '## What ran',
        '',
        '| step | seconds | command |',
        '|---|---|---|',
    ]
    for s in r['steps']:
        lines.append(f'| {s["what"]} | {s["seconds"]:.0f} | {"`" + s["command"] + "`" if s["command"] else ""} |')
    lines += [
        '',
        '## Numbers',
        '',
        '| what | first → last |',
        '|---|---|',
    ]
    for key, pair in r['losses'].items():
        lines.append(f'| distillation `{key}` | {_fmt(pair)} |')
    lines.append(f'| segmentation `loss` | {_fmt(r["seg_loss"])} |')
    lines += [
        '',
        f'**mIoU {m["mIoU"]:.2f} %**, mAcc {m["mAcc"]:.2f} %, aAcc {m["aAcc"]:.2f} % on the generated '
        f'validation set ({r["num_val"]} images; mmseg\'s `IoUMetric`, 150-class head, the mean over the classes '
        'that occur in the labels or the predictions). This checks the pipeline; it is not an ADE20K result.',
        '',
        '## Pictures',
        '',
        f'- teacher vs student relations: [{rel(r["figures"]["relations"])}]({rel(r["figures"]["relations"])})',
        f'- distillation curves: [{rel(r["figures"]["distill_curves"])}]({rel(r["figures"]["distill_curves"])})',
        f'- segmentation curves: [{rel(r["figures"]["segment_curves"])}]({rel(r["figures"]["segment_curves"])})',
        f'- predictions next to the ground truth ({len(r["predictions"])} images), e.g.:',
    ]
    lines += [f'  - [{rel(p)}]({rel(p)})' for p in r['predictions'][:3]]
    d = r['deploy']
    lines += [
        '',
        '## Deployment',
        '',
        f'The fine-tuned model as ONNX: [{rel(d["path"])}]({rel(d["path"])}), {d["size_mib"]:.1f} MiB, '
        f'opset {d["opset"]}, input {d["input"]} RGB pixels with the normalisation in the graph; ONNX Runtime '
        f'matches PyTorch to {d["max_rel_diff"]:.1e} (max relative difference of the logits).',
        '',
        '| runtime | ms per image | speed |',
        '|---|---|---|',
        f'| PyTorch (eager) | {d["pytorch_ms"]:.0f} | 1.00x |',
        f'| ONNX Runtime | {d["onnxruntime_ms"]:.0f} | {d["pytorch_ms"] / d["onnxruntime_ms"]:.2f}x |',
        '',
        f'({d["threads"]} threads each, best of 5.) A mask predicted by ONNX Runtime:',
        '',
        f'![ONNX Runtime mask]({rel(d["masks"][0])})',
    ]
    lines += ['', f'![relations]({rel(r["figures"]["relations"])})', '']
    with open(path, 'w') as f:
        f.write('\n'.join(lines))
    return path
