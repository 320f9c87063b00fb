"""Teacher and student token relations over an image (``tools/visualize_relations.py``).

For each query token, one row shows the image with the query marked, then the QK and
VV relation rows ``softmax(q Kᵀ/√d)`` / ``softmax(v Vᵀ/√d)`` of that token over the
image's patches, teacher next to student, averaged over the relation heads. Each
student panel is titled with the KL(teacher ‖ student) of that row, the quantity
distillation minimises.
"""
import argparse
import os
import os.path as osp
from typing import Dict, List, Sequence, Tuple, Union

import mmcv
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from mmengine.config import Config
from mmengine.registry import init_default_scope

from ..models.losses import relation_matrix
from ..models.vit_weights import load_vit_checkpoint

Query = Union[str, Tuple[int, int]]  # 'cls' or a (row, col) patch of the token grid


def parse_query(text: str) -> Query:
    """'cls' or 'ROW,COL' (0-based patch coordinates)."""
    if text.lower() == 'cls':
        return 'cls'
    try:
        row, col = (int(v) for v in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a query is 'cls' or ROW,COL of a patch, got {text!r}") from None
    return row, col


def default_queries(grid: Tuple[int, int]) -> List[Query]:
    """CLS, the centre patch and two off-centre patches."""
    h, w = grid
    return ['cls', (h // 2, w // 2), (h // 4, w // 4), (3 * h // 4, 3 * w // 4)]


def query_index(query: Query, grid: Tuple[int, int]) -> int:
    """Token index of a query (CLS is token 0, patches follow row by row)."""
    if query == 'cls':
        return 0
    row, col = query
    if not (0 <= row < grid[0] and 0 <= col < grid[1]):
        raise ValueError(f'query patch {row},{col} is outside the {grid[0]}x{grid[1]} token grid')
    return 1 + row * grid[1] + col


def load_image(path: str, size: int) -> np.ndarray:
    """RGB uint8, short side resized to ``size`` (bicubic), centre-cropped to a square."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'image {path} does not exist')
    img = mmcv.imread(path, channel_order='rgb')
    if img is None:
        raise ValueError(f'{path} is not a readable image')
    h, w = img.shape[:2]
    scale = size / min(h, w)
    img = mmcv.imresize(img, (max(size, round(w * scale)), max(size, round(h * scale))), interpolation='bicubic')
    top, left = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
    return img[top:top + size, left:left + size]


def build_distiller(config: str, checkpoint: str, cfg_options: dict = None, teacher: str = None):
    """The distiller of ``config`` with the student weights of ``checkpoint``."""
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if teacher:
        cfg.model.teacher.checkpoint = teacher
    if cfg.model.get('type') != 'TinyMIMDistiller':
        raise ValueError(f'{config} is not a distillation config (model.type is {cfg.model.get("type")!r}, '
                         'expected TinyMIMDistiller)')
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    from mmseg.registry import MODELS

    model = MODELS.build(cfg.model)
    load_vit_checkpoint(model.student, checkpoint)
    model.mask_ratio = 0.  # relations of the whole image, even for a config that masks the student's input
    return model.eval()


@torch.no_grad()
def compute_relations(model, image: np.ndarray, pairs: Sequence[str]) -> Dict[str, Dict[str, torch.Tensor]]:
    """``{role: {pair: (heads, N, N)}}`` for one RGB uint8 image, both models."""
    data = model.data_preprocessor(dict(inputs=[torch.from_numpy(image).permute(2, 0, 1).contiguous()]))
    taps = model(data['inputs'], mode='tensor')
    out = {}
    for role in ('teacher', 'student'):
        out[role] = {}
        for pair in pairs:
            rel = taps[role].get(f'relation_{pair}')
            if rel is None:
                if not set(pair) <= set(taps[role]):
                    raise KeyError(f'the config distils no Q/K/V, so relation {pair!r} cannot be drawn')
                rel = relation_matrix(taps[role][pair[0]], taps[role][pair[1]])
            out[role][pair] = rel[0]
    return out


def row_kl(teacher_row: torch.Tensor, student_row: torch.Tensor) -> float:
    """KL(teacher ‖ student) of one relation row (heads, N), averaged over heads."""
    t, s = teacher_row.clamp_min(1e-12), student_row.clamp_min(1e-12)
    return float((t * (t.log() - s.log())).sum(-1).mean())


def draw_relations(image: np.ndarray, relations, queries: Sequence[Query], grid: Tuple[int, int], out: str,
                   title: str = None) -> str:
    """The figure: one row per query, columns image | teacher/student per pair."""
    pairs = list(relations['teacher'])
    cols = 1 + 2 * len(pairs)
    # A bare Figure (no pyplot): no GUI backend, nothing global to close, safe on servers.
    fig = Figure(figsize=(2.3 * cols, 2.4 * len(queries)))
    axes = fig.subplots(len(queries), cols, squeeze=False)
    size = image.shape[0]
    cell = size / grid[0]
    for r, query in enumerate(queries):
        q = query_index(query, grid)
        label = 'CLS token' if query == 'cls' else f'patch {query[0]},{query[1]}'
        panels = [(axes[r, 0], None, f'query: {label}', None)]
        for p, pair in enumerate(pairs):
            teacher, student = relations['teacher'][pair][:, q], relations['student'][pair][:, q]
            # Mean over heads; the CLS key is left out so the map covers the image's patches.
            heat = {role: rel[:, 1:].mean(0).reshape(grid).cpu().numpy()
                    for role, rel in (('teacher', teacher), ('student', student))}
            # One colour scale for teacher and student, so equal colours mean equal relations.
            limits = (min(h.min() for h in heat.values()), max(h.max() for h in heat.values()))
            panels.append((axes[r, 1 + 2 * p], heat['teacher'], f'teacher {pair.upper()}', limits))
            panels.append((axes[r, 2 + 2 * p], heat['student'],
                           f'student {pair.upper()}\nKL {row_kl(teacher, student):.3f}', limits))
        for ax, heat, name, limits in panels:
            ax.imshow(image)
            if heat is not None:
                ax.imshow(heat, cmap='jet', alpha=0.55, extent=(0, size, size, 0), interpolation='nearest',
                          vmin=limits[0], vmax=limits[1])
            if query != 'cls':
                ax.add_patch(Rectangle((query[1] * cell, query[0] * cell), cell, cell, fill=False,
                                       edgecolor='white', linewidth=1.5))
            ax.set_title(name, fontsize=8)
            ax.axis('off')
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    os.makedirs(osp.dirname(out) or '.', exist_ok=True)
    fig.savefig(out, dpi=90)
    return out


def visualize(model, image_path: str, out: str, queries: Sequence[Query] = None, size: int = None,
              pairs: Sequence[str] = ('qk', 'vv'), title: str = None) -> str:
    """Relation figure of ``model`` (a ``TinyMIMDistiller``) on one image."""
    patch = model.student.patch_size
    size = size or model.student.grid_size[0] * patch
    if size % patch:
        raise ValueError(f'--size {size} is not a multiple of the patch size {patch}')
    image = load_image(image_path, size)
    grid = (size // patch, size // patch)
    queries = list(queries or default_queries(grid))
    for query in queries:
        query_index(query, grid)  # fail before the forward pass
    relations = compute_relations(model, image, pairs)
    return draw_relations(image, relations, queries, grid, out, title)
