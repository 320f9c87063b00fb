"""Load any supported ViT checkpoint into ``VisionTransformer``.

Checkpoints are recognised by their keys and converted in memory to timm
names (the names ``VisionTransformer`` uses):

* official MAE / TinyMIM files, ``{'model': timm keys, 'args': Namespace}``;
  fine-tuned ones carry ``fc_norm``/``head`` (dropped) instead of ``norm``;
* timm state dicts, including layer scale ``ls1.gamma``/``ls2.gamma``;
* mmseg ``MAE``/``BEiT`` (``layers.i.ln1``, ``attn.q_bias``/``v_bias``,
  ``gamma_1``, ``ffn.layers.0.0``, ``patch_embed.projection``, final ``ln1``)
  and mmseg ``VisionTransformer`` (``attn.attn.in_proj_weight``, ``out_proj``);
* BEiT-style keys (``blocks.i.gamma_1``/``gamma_2``), as the reference
  TinyMIM segmentation code (mmseg 0.x) saves its backbones; their
  ``fpn1..fpn4`` pyramid is not a ViT weight (the segmentor moves it to the
  neck, see ``segmentors.segmentor_checkpoint``);
* mmengine checkpoints (``{'state_dict': ..., 'meta': ...}``): ours, mmseg
  segmentors (``backbone.`` weights) and the distiller (``student.``
  weights; ``teacher.`` weights are ignored);
* the prefixes ``module.``, ``student.``, ``backbone.``, ``encoder.``.

Loading never leaves a model partly loaded: a checkpoint of another width
or depth, or one that lacks weights the model cannot start fresh, raises
before any weight is copied.
"""
import argparse
import fnmatch
import io
import math
import os.path as osp
import re
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from mmengine import fileio
from mmengine.logging import print_log

from .pos_embed import resize_pos_embed, resize_relative_bias_table

# Where the weights sit in a checkpoint dict, in order of preference.
CONTAINERS = {
    'state_dict': "mmengine checkpoint ({'state_dict': ...})",
    'model': "official MAE/TinyMIM file ({'model': ...})",
}
# Prefixes stripped when no ViT key is at the top level; keys outside the
# chosen prefix (teacher, decode heads, ...) are dropped.
PREFIXES = ('module.', 'student.', 'backbone.', 'encoder.')
LAYOUTS = {
    'timm': 'timm keys',
    'beit': 'BEiT-style keys (blocks.i.gamma_1)',
    'mmseg-mae': 'mmseg MAE keys',
    'mmseg-beit': 'mmseg BEiT keys',
    'mmseg-vit': 'mmseg VisionTransformer keys',
}
# Heads, fine-tuning norms, MAE decoder and derived buffers: never backbone weights.
NON_BACKBONE_KEYS = ('head.*', 'head_dist.*', 'fc_norm.*', 'mask_token', 'decoder_*', 'decoder.*',
                     '*.relative_position_index', 'fpn1.*', 'fpn2.*', 'fpn3.*', 'fpn4.*')
# Keys a model may lack in a checkpoint and keep at their initial value.
FRESH_BY_DESIGN = ('*.relative_position_bias_table', '*.ls1.gamma', '*.ls2.gamma')

# mmseg MAE/BEiT/VisionTransformer -> timm names.
MMSEG_RENAMES = [
    (r'^patch_embed\.projection\.', 'patch_embed.proj.'),
    (r'^ln1\.', 'norm.'),
    (r'^layers\.(\d+)\.ln1\.', r'blocks.\1.norm1.'),
    (r'^layers\.(\d+)\.ln2\.', r'blocks.\1.norm2.'),
    (r'^layers\.(\d+)\.gamma_1$', r'blocks.\1.ls1.gamma'),
    (r'^layers\.(\d+)\.gamma_2$', r'blocks.\1.ls2.gamma'),
    (r'^layers\.(\d+)\.ffn\.layers\.0\.0\.', r'blocks.\1.mlp.fc1.'),
    (r'^layers\.(\d+)\.ffn\.layers\.1\.', r'blocks.\1.mlp.fc2.'),
    (r'^layers\.(\d+)\.attn\.attn\.in_proj_(weight|bias)$', r'blocks.\1.attn.qkv.\2'),
    (r'^layers\.(\d+)\.attn\.attn\.out_proj\.', r'blocks.\1.attn.proj.'),
    (r'^layers\.(\d+)\.attn\.', r'blocks.\1.attn.'),
    (r'^blocks\.(\d+)\.gamma_1$', r'blocks.\1.ls1.gamma'),  # BEiT-style layer scale
    (r'^blocks\.(\d+)\.gamma_2$', r'blocks.\1.ls2.gamma'),
]


class CheckpointFormat(NamedTuple):
    container: Optional[str]  # a key of CONTAINERS, or None for a bare state dict
    prefix: str  # the prefixes stripped, e.g. 'module.student.'
    layout: str  # a key of LAYOUTS
    finetuned: bool = False  # official fine-tuned file: fc_norm/head instead of norm
    note: str = ''

    def __str__(self):
        parts = [CONTAINERS.get(self.container, 'state dict')]
        if self.note:
            parts.append(self.note)
        if self.finetuned:
            parts.append('fine-tuned')
        if self.prefix:
            parts.append(f"'{self.prefix}' weights")
        parts.append(LAYOUTS[self.layout])
        return ', '.join(parts)


class ConvertedCheckpoint(NamedTuple):
    state_dict: Dict[str, torch.Tensor]  # timm names
    format: CheckpointFormat
    dropped: List[str]  # source keys that are not backbone weights
    filled: List[str]  # zeros standing in for weights the source model does not have (exact)
    lacks: List[str]  # keys this format leaves out by design (a fine-tuned file's final norm)
    grid: Optional[Tuple[int, int]] = None  # pos_embed grid, when the checkpoint records it


# --------------------------------------------------------------- reading
def read_checkpoint(path: str, map_location='cpu') -> dict:
    """``torch.load(weights_only=True)`` a local file (or any mmengine fileio URI);
    ``*.safetensors`` files are read with safetensors.

    The ``argparse.Namespace`` that official MAE/TinyMIM files store as
    ``args`` is the only class allowed besides mmengine's (see
    ``tinymim.utils.safe_globals``).
    """
    path = str(path)
    local = '://' not in path
    if local and not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint file {path} does not exist')
    if path.endswith('.safetensors'):  # timm / Hugging Face hub weights
        from safetensors.torch import load
        try:
            return load(fileio.get(path))
        except Exception as err:
            raise ValueError(f'{path} is not a readable safetensors file: {err}') from err
    if local:
        with open(path, 'rb') as f:
            header = f.read(8)
        source = path
    else:
        source = io.BytesIO(fileio.get(path))
        header = source.getvalue()[:8]
    with torch.serialization.safe_globals([argparse.Namespace]):
        try:
            checkpoint = torch.load(source, map_location=map_location, weights_only=True)
        except Exception as err:  # torch raises KeyError, UnpicklingError, RuntimeError... for bad files
            raise _load_error(path, header, err) from err
    if not isinstance(checkpoint, dict):
        raise ValueError(f'{path} holds a {type(checkpoint).__name__}, not a checkpoint dict or state dict')
    return checkpoint


def _load_error(path: str, header: bytes, err: Exception) -> Exception:
    # torch.save writes a zip archive (or, before torch 1.6, a pickle starting with 0x80).
    if not (header.startswith(b'PK\x03\x04') or header.startswith(b'\x80')):
        return ValueError(f'{path} is not a PyTorch checkpoint (it starts with {header!r})')
    if 'Weights only load failed' in str(err):
        blocked = re.search(r'Unsupported global: ([^\n]+)', str(err))
        what = blocked.group(1).strip() if blocked else str(err).splitlines()[-1]
        return RuntimeError(f'{path} holds an object that is not allowed in a weights-only load ({what}); '
                            'convert it with tools/convert_checkpoint.py where it came from, or re-save '
                            'just its state dict')
    return RuntimeError(f'{path} could not be read as a PyTorch checkpoint: {err}')


# ------------------------------------------------------------ conversion
def _is_tensor_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(torch.is_tensor(v) for v in obj.values())


def _has_vit_keys(state: dict) -> bool:
    return any(k.split('.')[0] in ('blocks', 'layers', 'cls_token', 'pos_embed') for k in state)


def _matches(key: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def _select_weights(checkpoint: dict, prefix: Optional[str]):
    """Unwrap the container and strip prefixes: (container, prefix, state, dropped)."""
    container = next((k for k in CONTAINERS if _is_tensor_dict(checkpoint.get(k))), None)
    state = checkpoint[container] if container else {k: v for k, v in checkpoint.items() if torch.is_tensor(v)}
    if not state:
        raise ValueError(f'no weights found: the checkpoint has the keys {sorted(checkpoint)[:10]} '
                         f'and none of {sorted(CONTAINERS)} holds a state dict')
    dropped, stripped = [], ''
    wanted = [prefix if prefix.endswith('.') else prefix + '.'] if prefix else []
    while wanted or not _has_vit_keys(state):
        candidates = wanted or [p for p in PREFIXES if any(k.startswith(p) for k in state)]
        if not candidates:
            break
        p = candidates[0]
        inside = {k[len(p):]: v for k, v in state.items() if k.startswith(p)}
        if not inside:
            tops = sorted({k.split('.')[0] + '.' for k in state})
            raise ValueError(f"no weights under the prefix '{p}'; the checkpoint's top-level names are {tops[:10]}")
        dropped += [stripped + k for k in state if not k.startswith(p)]
        state, stripped, wanted = inside, stripped + p, []
    return container, stripped, state, dropped


def _detect_layout(state: dict) -> str:
    keys = list(state)
    if any(k.startswith('layers.') for k in keys):
        if any('.attn.attn.in_proj_weight' in k for k in keys):
            return 'mmseg-vit'
        if any(k.endswith('.attn.q_bias') for k in keys) or 'pos_embed' not in state:
            return 'mmseg-beit'
        return 'mmseg-mae'
    if any(k.startswith('blocks.') for k in keys):
        return 'beit' if any(k.endswith(('.gamma_1', '.q_bias')) for k in keys) else 'timm'
    raise ValueError(f'no ViT weights found: expected blocks.* or layers.* keys, got {keys[:8]}')


def _describe(checkpoint: dict, container: Optional[str], stripped: str, state: dict) -> CheckpointFormat:
    note = ''
    args = checkpoint.get('args')
    if container == 'model' and isinstance(args, argparse.Namespace) and getattr(args, 'model', None):
        note = f'args.model={args.model}'
    return CheckpointFormat(container, stripped, _detect_layout(state), 'fc_norm.weight' in state, note)


def detect_format(checkpoint: dict, prefix: Optional[str] = None) -> CheckpointFormat:
    """Container, prefix and key layout of a loaded checkpoint (or bare state dict)."""
    container, stripped, state, _ = _select_weights(checkpoint, prefix)
    return _describe(checkpoint, container, stripped, state)


def _from_mmseg(state: dict, layout: str) -> Tuple[dict, List[str]]:
    """Rename mmseg (and BEiT-style) keys to timm keys; returns the new dict and the zero-filled keys."""
    out = {}
    for key, value in state.items():
        for pattern, repl in MMSEG_RENAMES:
            new_key, hit = re.subn(pattern, repl, key)
            if hit:
                key = new_key
                break
        out[key] = value
    filled = []
    for q_key in [k for k in out if k.endswith('.attn.q_bias')]:
        # BEiT keeps separate q and v biases and no k bias: qkv bias = [q, 0, v].
        base = q_key[:-len('q_bias')]
        q, v = out.pop(q_key), out.pop(base + 'v_bias')
        out[base + 'qkv.bias'] = torch.cat([q, torch.zeros_like(q), v])
    if layout == 'mmseg-beit' and 'pos_embed' not in out:
        # BEiT has no absolute position embedding: a zero one is the same model.
        table = out.get('blocks.0.attn.relative_position_bias_table')
        if table is None:
            raise ValueError('an mmseg BEiT checkpoint without pos_embed needs relative position bias tables')
        side = (int(round((table.shape[0] - 3) ** 0.5)) + 1) // 2
        out['pos_embed'] = out['cls_token'].new_zeros(1, side * side + 1, out['cls_token'].shape[-1])
        filled.append('pos_embed')
    if 'patch_embed.proj.bias' not in out and 'patch_embed.proj.weight' in out:
        # mmseg VisionTransformer defaults to patch_bias=False.
        out['patch_embed.proj.bias'] = out['patch_embed.proj.weight'].new_zeros(out['patch_embed.proj.weight'].shape[0])
        filled.append('patch_embed.proj.bias')
    for w_key in [k for k in out if k.endswith('.attn.qkv.weight')]:
        b_key = w_key[:-len('weight')] + 'bias'
        if b_key not in out:  # BEiT with qv_bias=False
            out[b_key] = out[w_key].new_zeros(out[w_key].shape[0])
            filled.append(b_key)
    return out, filled


def to_timm_state_dict(checkpoint: dict, prefix: Optional[str] = None) -> ConvertedCheckpoint:
    """Convert a loaded checkpoint of any supported format to timm names.

    Only renaming happens here; matching a model (resizing, layer-scale
    folding, shape checks) is ``load_vit_checkpoint``'s job.
    """
    container, stripped, state, dropped = _select_weights(checkpoint, prefix)
    fmt = _describe(checkpoint, container, stripped, state)
    dropped += [k for k in state if _matches(k, NON_BACKBONE_KEYS)]
    state = {k: v for k, v in state.items() if not _matches(k, NON_BACKBONE_KEYS)}
    filled = []
    if fmt.layout != 'timm':
        state, filled = _from_mmseg(state, fmt.layout)
    lacks = [] if 'norm.weight' in state else ['norm.weight', 'norm.bias']
    grid = (checkpoint.get('meta') or {}).get('grid_size') if isinstance(checkpoint.get('meta'), dict) else None
    return ConvertedCheckpoint(state, fmt, dropped, filled, lacks, tuple(grid) if grid else None)


# --------------------------------------------------------------- loading
def num_blocks(state: dict) -> int:
    ids = [int(m.group(1)) for m in (re.match(r'blocks\.(\d+)\.', k) for k in state) if m]
    return max(ids) + 1 if ids else 0


def summarize_keys(keys: Sequence[str], limit: int = 3) -> str:
    """'N (a, b, ...)' naming keys that differ only in block index once
    (``blocks.*.ls1.gamma x12``), or by first name when there are many kinds."""
    if not keys:
        return '0'
    groups = {}
    for k in keys:
        groups.setdefault(re.sub(r'\.\d+(?=\.|$)', '.*', k), []).append(k)
    if len(groups) > limit:
        groups = {}
        for k in keys:
            groups.setdefault(k.split('.')[0] + ('.*' if '.' in k else ''), []).append(k)
    names = [group[0] if len(group) == 1 else f'{name} x{len(group)}' for name, group in groups.items()]
    more = ', ...' if len(names) > limit else ''
    return f'{len(keys)} ({", ".join(names[:limit])}{more})'


def _fold_layer_scale(state: dict, gamma_key: str) -> None:
    """Fold a layer-scale gamma into the linear layer before it (exact)."""
    block, which = gamma_key.rsplit('.', 2)[0], gamma_key.split('.')[-2]
    linear = f'{block}.attn.proj' if which == 'ls1' else f'{block}.mlp.fc2'
    gamma = state.pop(gamma_key)
    state[f'{linear}.weight'] = state[f'{linear}.weight'] * gamma[:, None]
    state[f'{linear}.bias'] = state[f'{linear}.bias'] * gamma


def checkpoint_grid(state: dict, grid: Optional[Sequence[int]], source: str,
                    prefix_tokens: int = 1) -> Tuple[int, int]:
    """The token grid (H, W) a checkpoint's ``pos_embed`` and relative-bias
    tables were made for: its ``meta.grid_size``, else square (official MAE,
    TinyMIM and mmseg files are). Weights that do not fit that grid raise: a
    non-square grid is never guessed. ``prefix_tokens``: CLS (1), or CLS and
    the TinyMIM*-T distillation token (2)."""
    pos = state.get('pos_embed')
    rows = sorted({v.shape[0] for k, v in state.items() if k.endswith('relative_position_bias_table')})
    extra = 3 * prefix_tokens  # bias-table rows of the prefix tokens
    if grid is None:
        side = (math.isqrt(pos.shape[1] - prefix_tokens) if pos is not None
                else (math.isqrt(rows[-1] - extra) + 1) // 2)
        grid, problem = (side, side), 'records no grid (meta.grid_size) and its weights do not fit a square one'
    else:
        grid = tuple(int(g) for g in grid)
        problem = f'records the grid {grid[0]}x{grid[1]} (meta.grid_size), which its weights do not fit'
    if ((pos is not None and pos.shape[1] - prefix_tokens != grid[0] * grid[1])
            or any(r != (2 * grid[0] - 1) * (2 * grid[1] - 1) + extra for r in rows)):
        found = ', '.join(([f'pos_embed with {pos.shape[1] - prefix_tokens} patches'] if pos is not None else [])
                          + ([f'relative-bias tables of {"/".join(map(str, rows))} rows'] if rows else []))
        raise ValueError(f'{source} {problem} ({found}): it was trained on non-square inputs. Give the token '
                         'grid it was trained for (patch rows and columns): python tools/convert_checkpoint.py '
                         'CHECKPOINT OUT --grid H W records it as meta.grid_size')
    return grid


def _match_model(model: torch.nn.Module, conv: ConvertedCheckpoint, source: str) -> Tuple[dict, List[str], List[str]]:
    """Adapt the converted weights to ``model``: returns (state, dropped, notes)."""
    state, target = dict(conv.state_dict), model.state_dict()
    src_depth, dst_depth = num_blocks(state), num_blocks(target)
    if src_depth != dst_depth:
        raise ValueError(f'{source} has {src_depth} blocks but the model has {dst_depth}: '
                         'choose the arch the checkpoint was trained with')
    if ('dist_token' in state) != ('dist_token' in target) and 'cls_token' in state:
        has, lacks = ('the checkpoint', 'the model') if 'dist_token' in state else ('the model', 'the checkpoint')
        raise ValueError(f'{source}: {has} has a distillation token (dist_token, TinyMIM*-T) and {lacks} has '
                         'none; build the ViT with dist_token=' + str('dist_token' in state))
    prefix_tokens = getattr(model, 'num_prefix_tokens', 1)
    dropped, folded, resized = [], [], []
    for key in [k for k in state if k not in target]:
        if key.endswith(('.ls1.gamma', '.ls2.gamma')):
            _fold_layer_scale(state, key)  # the model has no layer scale: an exact rewrite
            folded.append(key)
        elif (key in conv.filled  # a zero stand-in the model does not need
              or (key.startswith('norm.') and 'norm.weight' not in target)  # model built without final norm
              or (key.endswith('.relative_position_bias_table') and not state[key].any())):  # adds nothing
            dropped.append(key)
            del state[key]
    for key, value in list(state.items()):
        want = target.get(key)
        if want is None or value.shape == want.shape or value.shape[-1] != want.shape[-1]:
            continue  # a width mismatch is reported below, not resized
        if key == 'pos_embed':
            grid = checkpoint_grid(conv.state_dict, conv.grid, source, prefix_tokens)
            state[key] = resize_pos_embed(value, model.grid_size, grid, prefix_tokens)
            resized.append(f'pos_embed {value.shape[1] - prefix_tokens}->{want.shape[1] - prefix_tokens} patches')
        elif key.endswith('.relative_position_bias_table'):
            window = model.get_submodule(key.rsplit('.', 1)[0]).window
            grid = checkpoint_grid(conv.state_dict, conv.grid, source, prefix_tokens)
            state[key] = resize_relative_bias_table(value, window, grid, prefix_tokens)
            resized.append(key)
    mismatched = [(k, tuple(v.shape), tuple(target[k].shape)) for k, v in state.items()
                  if k in target and v.shape != target[k].shape]
    if mismatched:
        widths = ''
        if 'cls_token' in state:
            widths = f', checkpoint width {state["cls_token"].shape[-1]} vs model width {target["cls_token"].shape[-1]}'
        detail = '; '.join(f'{k}: checkpoint {a} vs model {b}' for k, a, b in mismatched[:3])
        raise ValueError(f'{source} does not fit the model ({len(mismatched)} weights differ in shape{widths}): '
                         f'{detail}')
    notes = [f'resized {summarize_keys(resized)}'] if resized else []
    if folded:
        notes.append(f'folded {summarize_keys(folded)} into attn.proj/mlp.fc2')
    return state, dropped, notes


class PreparedWeights(NamedTuple):
    state_dict: Dict[str, torch.Tensor]  # every key of the model: converted weights, fresh ones at the model's values
    format: CheckpointFormat
    missing: List[str]
    unexpected: List[str]
    fresh: List[str]
    dropped: List[str]
    notes: List[str]

    def report(self) -> dict:
        return dict(missing=self.missing, unexpected=self.unexpected, fresh=self.fresh, dropped=self.dropped)

    def summary(self) -> str:
        extra = ''.join(f', {n}' for n in self.notes)
        return (f'{len(self.state_dict) - len(self.missing) - len(self.fresh)} tensors, '
                f'missing {summarize_keys(self.missing)}, unexpected {summarize_keys(self.unexpected)}, '
                f'fresh {summarize_keys(self.fresh)}, dropped {summarize_keys(self.dropped)}{extra}')


def prepare_vit_state_dict(model: torch.nn.Module, checkpoint: dict, source: str = 'the given checkpoint',
                           prefix: Optional[str] = None, fresh_keys: Sequence[str] = (), strict: bool = True,
                           fresh_by_design: bool = True) -> PreparedWeights:
    """Convert a loaded checkpoint for ``model`` without loading it (see ``load_vit_checkpoint``).

    With ``fresh_by_design=False`` only ``fresh_keys`` may be missing (a
    segmentation checkpoint must bring every backbone weight).
    """
    try:
        conv = to_timm_state_dict(checkpoint, prefix)
    except ValueError as err:
        raise ValueError(f'{source}: {err}') from err
    state, dropped, notes = _match_model(model, conv, source)
    target = model.state_dict()
    fresh_patterns = list(fresh_keys)
    if fresh_by_design:
        fresh_patterns += list(FRESH_BY_DESIGN) + list(conv.lacks)
        if getattr(model, 'pos_embed_type', None) == 'sincos':
            fresh_patterns.append('pos_embed')
    missing = [k for k in target if k not in state]
    fresh = [k for k in missing if _matches(k, fresh_patterns)]
    missing = [k for k in missing if k not in fresh]
    unexpected = [k for k in state if k not in target]
    if strict and (missing or unexpected):
        hint = ''
        if any(k.endswith('relative_position_bias_table') for k in unexpected):
            hint = 'the checkpoint has relative position bias: build the model with use_rel_pos_bias=True; '
        if any(k.startswith('conv1x1.') for k in unexpected + missing):
            hint += ('conv1x1 is the TinyMIM*-T last-block projection: build the ViT with last_proj_dims '
                     'matching the checkpoint (1280), or without; ')
        raise ValueError(f'{source} [{conv.format}] does not match the model: missing {summarize_keys(missing)}, '
                         f'unexpected {summarize_keys(unexpected)}; {hint}pass fresh_keys for weights that may '
                         'start fresh, or strict=False to load only what matches')
    # Fresh keys keep the model's current values, so nothing is ever half-loaded.
    merged = {**target, **{k: v for k, v in state.items() if k in target}}
    return PreparedWeights(merged, conv.format, missing, unexpected, fresh, list(conv.dropped) + dropped, notes)


def load_vit_checkpoint(model: torch.nn.Module, filename_or_state_dict: Union[str, dict],
                        map_location='cpu', prefix: Optional[str] = None, logger='current',
                        fresh_keys: Sequence[str] = (), strict: bool = True) -> dict:
    """Load a checkpoint of any supported format into a ``VisionTransformer``.

    ``pos_embed`` and relative-bias tables are bicubically resized to the
    model's grid. Weights the model has and the checkpoint lacks are
    "fresh" (left at their initial values) when that is by design:
    relative-bias tables, layer-scale gammas, a final norm the checkpoint
    format leaves out, a fixed sin-cos ``pos_embed``, and the fnmatch
    patterns in ``fresh_keys``. Anything else missing or unexpected raises
    (unless ``strict=False``); a shape mismatch always raises.

    Returns ``dict(missing=, unexpected=, fresh=, dropped=)`` lists of keys.
    """
    if isinstance(filename_or_state_dict, dict):
        checkpoint, source = filename_or_state_dict, 'the given checkpoint'
    else:
        source = str(filename_or_state_dict)
        checkpoint = read_checkpoint(source, map_location)
    prepared = prepare_vit_state_dict(model, checkpoint, source, prefix, fresh_keys, strict)
    model.load_state_dict(prepared.state_dict, strict=True)
    print_log(f'Loaded {source} [{prepared.format}]: {prepared.summary()}', logger=logger)
    return prepared.report()
