"""One Vision Transformer for the TinyMIM teacher, the student and the
segmentation backbone.

Parameter names are timm's ``VisionTransformer`` names (``cls_token``,
``pos_embed``, ``patch_embed.proj``, ``blocks.i.{norm1,attn.qkv,attn.proj,
norm2,mlp.fc1,mlp.fc2,ls1.gamma,ls2.gamma}``, ``norm``), so MAE, TinyMIM,
timm and our own checkpoints load without conversion. Segmentation options
(BEiT-style relative position bias, layer scale, linear drop path) are off
by default.

``forward_tap`` is what distillation uses: it runs the embeddings, the
blocks before the tapped one and only as much of the tapped block as the
requested outputs need, and returns Q/K/V split into any number of heads.
"""
from typing import Callable, Dict, Iterable, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from timm.layers import DropPath

from .biased_attention import chunked_biased_attention
from .lean_linear import lean_linear
from .mlp import Mlp
from .norm_linear import norm_linear
from .pos_embed import (
    relative_bias_table_size,
    relative_position_index,
    resize_pos_embed,
    resize_relative_bias_table,
    sincos_2d_pos_embed,
)

# embed_dims / num_layers / num_heads (and patch size where it is not 16).
ARCH_ZOO = {
    'tiny': dict(embed_dims=192, num_layers=12, num_heads=3),
    'small': dict(embed_dims=384, num_layers=12, num_heads=6),
    'base': dict(embed_dims=768, num_layers=12, num_heads=12),
    'large': dict(embed_dims=1024, num_layers=24, num_heads=16),
    'huge': dict(embed_dims=1280, num_layers=32, num_heads=16, patch_size=14),
}
ARCH_ALIASES = {'t': 'tiny', 's': 'small', 'b': 'base', 'l': 'large', 'h': 'huge'}

QKV_OUTPUTS = ('q', 'k', 'v')
FEATURE_OUTPUTS = ('attn', 'ffn', 'block')  # Ĥ_i, H̃_i, F_i in the TinyMIM paper
TAP_OUTPUTS = QKV_OUTPUTS + FEATURE_OUTPUTS
ATTN_IMPLS = ('auto', 'chunked', 'sdpa')


def resolve_arch(arch: Union[str, dict]) -> dict:
    """Return the arch settings for a zoo name (or alias) or a custom dict."""
    if isinstance(arch, str):
        name = ARCH_ALIASES.get(arch.lower(), arch.lower())
        if name not in ARCH_ZOO:
            raise ValueError(f'unknown ViT arch {arch!r}; choose from {sorted(ARCH_ZOO)} '
                             f'(aliases {sorted(ARCH_ALIASES)}) or pass a dict')
        return dict(ARCH_ZOO[name])
    arch = dict(arch)
    missing = {'embed_dims', 'num_layers', 'num_heads'} - set(arch)
    if missing:
        raise ValueError(f'a custom ViT arch needs keys {sorted(missing)}; got {sorted(arch)}')
    return arch


def check_heads(embed_dims: int, num_heads: int, what: str = 'num_heads') -> None:
    if num_heads <= 0 or embed_dims % num_heads:
        raise ValueError(f'{what}={num_heads} does not divide the width embed_dims={embed_dims}')


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens; any input size divisible by the patch."""

    def __init__(self, patch_size: int, in_channels: int, embed_dims: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, embed_dims, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        h, w = x.shape[-2:]
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f'input size {h}x{w} is not divisible by the patch size {p}; '
                             'resize or pad the image (mmseg data preprocessors pad with size_divisor)')
        x = self.proj(x)
        return x.flatten(2).transpose(1, 2), (h // p, w // p)


class Attention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention``.

    With ``window`` set, a BEiT relative position bias (zero-initialised) is
    added as the attention mask; it is bicubically resized when the token
    grid differs from the window it was built for.

    ``attn_impl`` chooses how attention runs while the bias table trains:
    ``'chunked'`` (``biased_attention.py``: no B×H×N×N maps kept for
    backward), ``'sdpa'``, or ``'auto'``: chunked on CPU, where SDPA has no
    fused kernel with a bias gradient, and SDPA on other devices. Without a
    bias gradient (inference, a frozen table), attention dropout or fp16/bf16
    inputs, SDPA always runs.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.,
                 proj_drop: float = 0., window: Optional[Tuple[int, int]] = None, attn_impl: str = 'auto',
                 num_prefix_tokens: int = 1):
        super().__init__()
        check_heads(dim, num_heads)
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f'attn_impl must be one of {ATTN_IMPLS}, got {attn_impl!r}')
        self.attn_impl = attn_impl
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.window = tuple(window) if window else None
        self.num_prefix_tokens = num_prefix_tokens
        if self.window:
            self.relative_position_bias_table = nn.Parameter(
                torch.zeros(relative_bias_table_size(self.window, num_prefix_tokens), num_heads))
            self.register_buffer('relative_position_index', relative_position_index(self.window, num_prefix_tokens),
                                 persistent=False)

    def split_heads(self, x: torch.Tensor, num_heads: Optional[int] = None, norm: Optional[nn.LayerNorm] = None):
        """Q, K, V of ``x`` (of ``norm(x)`` when given) as (B, heads, N, dim/heads) each.

        ``num_heads`` may differ from the block's own: splitting has no
        parameters, so any divisor of the width gives valid relations.
        """
        b, n, c = x.shape
        heads = num_heads or self.num_heads
        if heads != self.num_heads:
            check_heads(c, heads, 'relation heads')
        qkv = self.qkv(x) if norm is None else norm_linear(x, norm, self.qkv)
        qkv = qkv.reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        return qkv.unbind(0)

    def relative_bias(self, grid: Tuple[int, int]) -> torch.Tensor:
        """The (heads, N, N) bias, contiguous.

        Gathering rows of the transposed table gives the heads-first layout
        directly; ``table[index].permute(2, 0, 1)`` would be a strided view
        that SDPA copies (together ~1/4 of a ViT-B forward at 512 px on CPU,
        see benchmarks/seg_step.py). Without autograd (inference, sliding
        windows) the bias is cached until the table's values change. They
        are compared with a copy of the table (a few thousand numbers per
        block), not by the tensor's version counter: fused AdamW and
        ``param.data`` updates (EMA weight swaps) change values without
        bumping it. Compiled code builds the bias in the graph instead: the
        cache check cannot be traced, and would break the graph per block.
        """
        if torch.compiler.is_compiling():
            return self.gather_bias(grid)
        table = self.relative_position_bias_table.detach()
        key = (tuple(grid), table.dtype, table.device, torch.is_inference_mode_enabled())
        cache = getattr(self, '_bias_cache', None)
        if torch.is_grad_enabled():
            self._bias_cache = None
            return self.gather_bias(grid)
        if cache is not None and cache[0] == key and torch.equal(cache[1], table):
            return cache[2]
        bias = self.gather_bias(grid)
        self._bias_cache = (key, table.clone(), bias)
        return bias

    def gather_bias(self, grid: Tuple[int, int]) -> torch.Tensor:
        table_t, index = self.bias_table_and_index(grid)
        n = index.shape[0]
        return table_t.index_select(1, index.view(-1)).view(-1, n, n)

    def bias_table_and_index(self, grid: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """The heads-first (heads, T) table, resized to ``grid``, and the
        (N, N) index into it."""
        table = self.relative_position_bias_table
        if tuple(grid) == self.window:
            index = self.relative_position_index
        else:
            table = resize_relative_bias_table(table, grid, self.window, self.num_prefix_tokens)
            index = relative_position_index(grid, self.num_prefix_tokens).to(table.device)
        return table.t().contiguous(), index

    def use_chunked(self, q: torch.Tensor) -> bool:
        """Whether the chunked bias-gradient attention runs (see the class doc)."""
        if self.attn_impl == 'sdpa' or (self.attn_impl == 'auto' and q.device.type != 'cpu'):
            return False
        return (torch.is_grad_enabled() and self.relative_position_bias_table.requires_grad
                and not (self.training and self.attn_drop) and q.dtype in (torch.float32, torch.float64))

    def forward(self, x: torch.Tensor, grid: Tuple[int, int], norm: Optional[nn.LayerNorm] = None,
                gamma: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Attention over ``x`` (over ``norm(x)`` when given: the block's LN1,
        fused with the qkv projection, see ``norm_linear``), times the layer
        scale ``gamma`` when given (inside the projection's lean backward
        while autograd records, see ``lean_linear``)."""
        b, n, c = x.shape
        q, k, v = self.split_heads(x, norm=norm)
        if self.window and n != grid[0] * grid[1] + self.num_prefix_tokens:
            raise ValueError('relative position bias needs the full token grid plus the prefix tokens '
                             f'({grid[0]}x{grid[1]}+{self.num_prefix_tokens}), got {n} tokens (masked input?)')
        if self.window and self.use_chunked(q):
            x = chunked_biased_attention(q, k, v, *self.bias_table_and_index(grid))
        else:
            mask = self.relative_bias(grid).unsqueeze(0).to(q.dtype) if self.window else None
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                               dropout_p=self.attn_drop if self.training else 0.)
        x = x.transpose(1, 2).reshape(b, n, c)
        if gamma is not None and torch.is_grad_enabled():  # dropout commutes with the per-channel scale
            return self.proj_drop(lean_linear(x, self.proj.weight, self.proj.bias, gamma))
        x = self.proj_drop(self.proj(x))
        return x if gamma is None else x * gamma


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_value: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x):
        return x * self.gamma


def add_residual(x: torch.Tensor, branch: Callable[[torch.Tensor], torch.Tensor],
                 drop_path: nn.Module) -> torch.Tensor:
    """``x + drop_path(branch(x))``, running the branch only on the samples
    that drop path keeps.

    timm's ``DropPath`` computes the branch for the whole batch and then
    multiplies the dropped samples by zero: with rate 0.1 that is a tenth of
    the branch's work, forward and backward, for nothing. The mask is drawn
    as timm draws it (one Bernoulli(1 - rate) per sample, kept samples
    scaled by 1 / (1 - rate)), only before the branch instead of after: the
    same masks whenever the branch itself draws no random numbers.
    """
    if (not isinstance(drop_path, DropPath) or not drop_path.training or drop_path.drop_prob == 0
            or torch.compiler.is_compiling()):
        # Compiled code takes timm's path: the kept-sample index has a
        # data-dependent size, which would break the graph in every block.
        return x + drop_path(branch(x))
    keep_prob = 1 - drop_path.drop_prob
    scale = 1 / keep_prob if keep_prob > 0 and drop_path.scale_by_keep else 1
    kept = x.new_empty((x.shape[0],)).bernoulli_(keep_prob).nonzero().flatten()
    if kept.numel() == x.shape[0]:
        return x + branch(x) * scale
    if kept.numel() == 0:
        # Rare (rate^batch): run the branch and zero it, as timm does, so its
        # parameters get zero gradients rather than none, which DDP
        # (find_unused_parameters=False) and the optimizer expect.
        return x + branch(x) * 0
    out = branch(x.index_select(0, kept))
    # Under autocast the branch returns bf16/fp16; the residual stream keeps x's dtype, as ``x + out`` would.
    return x.index_add(0, kept, (out * scale).to(x.dtype))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4., qkv_bias: bool = True,
                 drop: float = 0., attn_drop: float = 0., drop_path: float = 0.,
                 layer_scale: Optional[float] = None, window: Optional[Tuple[int, int]] = None,
                 norm_eps: float = 1e-6, attn_impl: str = 'auto', num_prefix_tokens: int = 1):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop, window, attn_impl, num_prefix_tokens)
        self.ls1 = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.ls2 = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward_parts(self, x: torch.Tensor, grid: Tuple[int, int],
                      outputs: Iterable[str] = FEATURE_OUTPUTS) -> Dict[str, torch.Tensor]:
        """The block's attention stage Ĥ = x + MHSA(LN(x)), FFN output
        H̃ = FFN(LN(Ĥ)) and output F = Ĥ + H̃ (residual branches scaled and
        dropped as in ``forward``). With only 'attn' asked for, the FFN
        does not run."""
        parts = dict(attn=add_residual(x, lambda t: self.attn(t, grid, self.norm1, self.gamma1), self.drop_path1))
        if set(outputs) & {'ffn', 'block'}:
            parts['ffn'] = self.mlp(parts['attn'], self.norm2)
            parts['block'] = parts['attn'] + self.drop_path2(self.ls2(parts['ffn']))
        return {name: parts[name] for name in outputs if name in parts}

    def forward(self, x: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        # The norms and layer scales run inside attention and the MLP, fused with their first and last
        # projections (norm_linear.py, lean_linear.py): fewer activations kept for backward.
        x = add_residual(x, lambda t: self.attn(t, grid, self.norm1, self.gamma1), self.drop_path1)
        return add_residual(x, lambda t: self.mlp(t, self.norm2, self.gamma2), self.drop_path2)

    @property
    def gamma1(self) -> Optional[torch.Tensor]:
        return getattr(self.ls1, 'gamma', None)

    @property
    def gamma2(self) -> Optional[torch.Tensor]:
        return getattr(self.ls2, 'gamma', None)


class VisionTransformer(BaseModule):
    """ViT with a CLS token and timm parameter names.

    Args:
        arch: a name in ``ARCH_ZOO`` (or alias t/s/b/l/h) or a dict with
            ``embed_dims``, ``num_layers``, ``num_heads`` (optionally
            ``mlp_ratio``, ``patch_size``).
        img_size: the size the position embedding (and relative-bias
            window) is built for; other sizes are resized at run time.
        num_heads: overrides the arch's head count for every block.
        relation_heads: default head count used by ``forward_tap`` (TinyMIM
            splits the student's relation block with the teacher's count).
        pos_embed_type: ``'learned'`` or ``'sincos'`` (fixed, not trained).
        use_rel_pos_bias: BEiT relative position bias per block, zero init.
        attn_impl: ``'auto'``, ``'chunked'`` or ``'sdpa'``: how attention
            with a trainable relative position bias runs (see ``Attention``).
        layer_scale_init_value: layer scale γ init; ``None``/0 disables it.
        drop_path_rate / drop_path_schedule: stochastic depth, ``'linear'``
            (0 -> rate over depth) or ``'constant'`` (rate on every block).
        final_norm: build the final ``norm``.
        dist_token: a DeiT-style distillation token after the CLS token, as
            TinyMIM*-T has (``pos_embed`` then covers 2 + H*W tokens and the
            relative-bias tables hold 3 more rows, see
            ``pos_embed.relative_position_index``).
        last_proj_dims: TinyMIM*-T's extra projection of the last block:
            ``conv1x1 = LayerNorm(embed_dims) -> Linear(embed_dims,
            last_proj_dims) -> GELU`` (the reference's module and key names;
            LayerNorm with PyTorch's default eps 1e-5, as there). The
            segmentation backbone applies it to the last block's tokens.
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH)`` loads any
            supported checkpoint format (see ``tinymim.models.vit_weights``);
            optional ``prefix``, ``map_location`` and ``fresh_keys``.
    """

    def __init__(self, arch: Union[str, dict] = 'base', img_size: Union[int, Sequence[int]] = 224,
                 patch_size: Optional[int] = None, in_channels: int = 3,
                 num_heads: Optional[int] = None, relation_heads: Optional[int] = None,
                 mlp_ratio: Optional[float] = None, qkv_bias: bool = True,
                 pos_embed_type: str = 'learned', use_rel_pos_bias: bool = False,
                 layer_scale_init_value: Optional[float] = None, drop_rate: float = 0.,
                 attn_drop_rate: float = 0., drop_path_rate: float = 0.,
                 drop_path_schedule: str = 'linear', final_norm: bool = True,
                 norm_eps: float = 1e-6, attn_impl: str = 'auto', dist_token: bool = False,
                 last_proj_dims: Optional[int] = None, init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        settings = resolve_arch(arch)
        self.embed_dims = settings['embed_dims']
        self.num_layers = settings['num_layers']
        self.num_heads = num_heads or settings['num_heads']
        check_heads(self.embed_dims, self.num_heads)
        self.relation_heads = relation_heads or self.num_heads
        check_heads(self.embed_dims, self.relation_heads, 'relation_heads')
        self.patch_size = patch_size or settings.get('patch_size', 16)
        mlp_ratio = mlp_ratio or settings.get('mlp_ratio', 4.)
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if img_size[0] % self.patch_size or img_size[1] % self.patch_size:
            raise ValueError(f'img_size {img_size} is not divisible by the patch size {self.patch_size}')
        self.grid_size = (img_size[0] // self.patch_size, img_size[1] // self.patch_size)
        if pos_embed_type not in ('learned', 'sincos'):
            raise ValueError(f"pos_embed_type must be 'learned' or 'sincos', got {pos_embed_type!r}")
        if drop_path_schedule not in ('linear', 'constant'):
            raise ValueError(f"drop_path_schedule must be 'linear' or 'constant', got {drop_path_schedule!r}")
        self.pos_embed_type = pos_embed_type
        self.num_prefix_tokens = 2 if dist_token else 1

        self.patch_embed = PatchEmbed(self.patch_size, in_channels, self.embed_dims)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dims))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, self.embed_dims)) if dist_token else None
        num_tokens = self.grid_size[0] * self.grid_size[1] + self.num_prefix_tokens
        # A fixed sin-cos table stays a (frozen) parameter, as in MAE, so the
        # state dict keeps timm's keys.
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, self.embed_dims),
                                      requires_grad=pos_embed_type == 'learned')
        self.pos_drop = nn.Dropout(drop_rate)
        if drop_path_schedule == 'linear':
            rates = torch.linspace(0, drop_path_rate, self.num_layers).tolist()
        else:
            rates = [drop_path_rate] * self.num_layers
        window = self.grid_size if use_rel_pos_bias else None
        self.blocks = nn.ModuleList([
            Block(self.embed_dims, self.num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate,
                  rates[i], layer_scale_init_value, window, norm_eps, attn_impl, self.num_prefix_tokens)
            for i in range(self.num_layers)])
        self.norm = nn.LayerNorm(self.embed_dims, eps=norm_eps) if final_norm else None
        if last_proj_dims is not None and last_proj_dims <= 0:
            raise ValueError(f'last_proj_dims must be a positive width or None, got {last_proj_dims}')
        self.last_proj_dims = last_proj_dims
        self.conv1x1 = nn.Sequential(nn.LayerNorm(self.embed_dims), nn.Linear(self.embed_dims, last_proj_dims),
                                     nn.GELU()) if last_proj_dims else None
        self.reset_parameters()

    # ----------------------------------------------------------------- init
    def reset_parameters(self) -> None:
        """MAE's initialisation: xavier-uniform Linear layers and patch
        projection, CLS token N(0, 0.02), sin-cos or N(0, 0.02) positions."""
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.proj.bias)
        nn.init.normal_(self.cls_token, std=.02)
        if self.dist_token is not None:
            nn.init.normal_(self.dist_token, std=.02)
        if self.pos_embed_type == 'sincos':
            self.pos_embed.data.zero_()  # zero prefix-token entries, as MAE's CLS entry
            self.pos_embed.data[:, self.num_prefix_tokens:] = sincos_2d_pos_embed(self.embed_dims, self.grid_size,
                                                                                  cls_token=False)
        else:
            nn.init.trunc_normal_(self.pos_embed, std=.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def init_weights(self) -> None:
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            from .vit_weights import load_vit_checkpoint
            load_vit_checkpoint(self, cfg['checkpoint'], map_location=cfg.get('map_location', 'cpu'),
                                prefix=cfg.get('prefix'), fresh_keys=cfg.get('fresh_keys', ()))
            self._is_init = True
        else:
            super().init_weights()

    def no_weight_decay(self) -> set:
        """Parameter names that should not be weight-decayed (besides biases and norms)."""
        names = {'cls_token', 'pos_embed'} | ({'dist_token'} if self.dist_token is not None else set())
        names.update(n for n, _ in self.named_parameters() if n.endswith('relative_position_bias_table'))
        return names

    def get_layer_depth(self, param_name: str, prefix: str = '') -> Tuple[int, int]:
        """Layer id for layer-wise lr decay, and the number of layer ids.

        Embeddings are layer 0, block i is layer i + 1, everything else
        (final norm, ``conv1x1``, anything outside ``prefix``) is layer
        ``num_layers + 1``. So is ``dist_token``: the reference's rule names
        only ``cls_token``, ``pos_embed`` and ``patch_embed`` as embeddings,
        and its TinyMIM*-T run trained the distillation token at the full lr.
        """
        num_ids = self.num_layers + 2
        if not param_name.startswith(prefix):
            return num_ids - 1, num_ids
        name = param_name[len(prefix):]
        if name in ('cls_token', 'pos_embed') or name.startswith('patch_embed'):
            return 0, num_ids
        if name.startswith('blocks.'):
            return int(name.split('.')[1]) + 1, num_ids
        return num_ids - 1, num_ids

    # -------------------------------------------------------------- forward
    def embed(self, x: torch.Tensor, token_index: Optional[torch.Tensor] = None):
        """Patch + position embedding with CLS (and the distillation token) prepended.

        ``token_index`` (B, K) keeps only those patch tokens (MAE masking;
        the prefix tokens are always kept). Returns tokens and the full patch grid.
        """
        x, grid = self.patch_embed(x)
        pos, p = self.pos_embed, self.num_prefix_tokens
        if grid != self.grid_size:
            pos = resize_pos_embed(pos, grid, self.grid_size, p)
        x = x + pos[:, p:]
        if token_index is not None:
            x = torch.gather(x, 1, token_index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        prefix = self.cls_token if self.dist_token is None else torch.cat([self.cls_token, self.dist_token], 1)
        prefix = (prefix + pos[:, :p]).expand(x.shape[0], -1, -1)
        return self.pos_drop(torch.cat([prefix, x], dim=1)), grid

    def forward_blocks(self, x: torch.Tensor, out_indices: Iterable[int]) -> Dict[int, torch.Tensor]:
        """Outputs of the blocks in ``out_indices`` (0-based); stops after the last one."""
        out_indices = sorted(set(out_indices))
        tokens, grid = self.embed(x)
        outs = {}
        for i, blk in enumerate(self.blocks[:out_indices[-1] + 1]):
            tokens = blk(tokens, grid)
            if i in out_indices:
                outs[i] = tokens
        return outs

    def forward_tap(self, x: torch.Tensor, block_index: int, outputs: Sequence[str] = QKV_OUTPUTS,
                    num_heads: Optional[int] = None,
                    token_index: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Q/K/V and/or features of block ``block_index`` (0-based).

        Only the embeddings, the blocks before it and the part of the tapped
        block that ``outputs`` need are computed: for Q/K/V alone that is the
        block's LN1 and qkv projection. Q/K/V are split into ``num_heads``
        (default ``relation_heads``) as (B, heads, N, dim/heads); features
        are (B, N, C) token maps ('attn' = Ĥ, 'ffn' = H̃, 'block' = F).
        """
        if not -self.num_layers <= block_index < self.num_layers:
            raise ValueError(f'block_index {block_index} is out of range for a ViT with '
                             f'{self.num_layers} blocks')
        block_index %= self.num_layers
        unknown = set(outputs) - set(TAP_OUTPUTS)
        if unknown or not outputs:
            raise ValueError(f'unknown tap outputs {sorted(unknown)}; choose from {TAP_OUTPUTS}')
        tokens, grid = self.embed(x, token_index)
        for blk in self.blocks[:block_index]:
            tokens = blk(tokens, grid)
        blk = self.blocks[block_index]
        result = {}
        if set(outputs) & set(QKV_OUTPUTS):
            q, k, v = blk.attn.split_heads(tokens, num_heads or self.relation_heads, blk.norm1)
            result.update((name, t) for name, t in zip(QKV_OUTPUTS, (q, k, v)) if name in outputs)
        if set(outputs) & set(FEATURE_OUTPUTS):
            result.update(blk.forward_parts(tokens, grid, [n for n in FEATURE_OUTPUTS if n in outputs]))
        return result

    def forward_features(self, x: torch.Tensor, token_index: Optional[torch.Tensor] = None) -> torch.Tensor:
        tokens, grid = self.embed(x, token_index)
        for blk in self.blocks:
            tokens = blk(tokens, grid)
        return self.norm(tokens) if self.norm is not None else tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)
