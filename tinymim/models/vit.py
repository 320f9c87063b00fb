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
requested outputs need, and returns Q/K/V split into any number of heads,
block features and, when asked, the CLS token after the final norm. The
layers themselves (attention, MLP, the memory-saving autograd functions)
are in ``tinymim/models/layers/``.
"""
from typing import Collection, Dict, Iterable, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from timm.layers import DropPath

from .layers import Attention, LayerScale, Mlp, PatchEmbed, add_residual, check_heads
from .pos_embed import resize_pos_embed, sincos_2d_pos_embed

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
CLS_OUTPUT = 'cls'  # the CLS token after the last block and the final norm
TAP_OUTPUTS = QKV_OUTPUTS + FEATURE_OUTPUTS + (CLS_OUTPUT,)


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

    def forward(self, x: torch.Tensor, grid: Tuple[int, int],
                outputs: Collection[str] = ()) -> Union[torch.Tensor, Dict[str, torch.Tensor]]:
        """The block's output F = Ĥ + ls2(FFN(LN2(Ĥ))), Ĥ = x + ls1(MHSA(LN1(x))),
        each residual branch under drop path.

        The norms and layer scales run inside attention and the MLP, fused
        with their first and last projections (``layernorm_linear``,
        ``recompute_linear``): fewer activations kept for backward.

        With ``outputs`` (names in ``FEATURE_OUTPUTS``) a dict of those parts
        instead: 'attn' Ĥ, 'ffn' H̃ = FFN(LN2(Ĥ)) (before the layer scale, for
        every sample) and 'block' F. With 'attn' alone the FFN does not run.
        """
        attn = add_residual(x, lambda t: self.attn(t, grid, self.norm1, self.gamma1), self.drop_path1)
        if outputs and not {'ffn', 'block'} & set(outputs):
            return {'attn': attn}
        parts = dict(attn=attn)
        if 'ffn' in outputs:  # H̃ is a tap of its own: the layer scale cannot run fused inside fc2
            parts['ffn'] = self.mlp(attn, self.norm2)
            parts['block'] = attn + self.drop_path2(self.ls2(parts['ffn']))
        else:
            parts['block'] = add_residual(attn, lambda t: self.mlp(t, self.norm2, self.gamma2), self.drop_path2)
        return {name: parts[name] for name in outputs} if outputs else parts['block']

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
        """Q/K/V and/or features of block ``block_index`` (0-based), and the
        final-norm CLS token.

        Only the embeddings, the blocks before it and the part of the tapped
        block that ``outputs`` need are computed: for Q/K/V alone that is the
        block's LN1 and qkv projection; the later blocks and the final norm
        run only for 'cls'. Q/K/V are split into ``num_heads`` (default
        ``relation_heads``) as (B, heads, N, dim/heads); features are (B, N, C)
        token maps ('attn' = Ĥ, 'ffn' = H̃, 'block' = F); 'cls' is (B, C).
        ``token_index`` keeps only those patch tokens (see ``embed``).
        """
        if not -self.num_layers <= block_index < self.num_layers:
            raise ValueError(f'block_index {block_index} is out of range for a ViT with '
                             f'{self.num_layers} blocks')
        block_index %= self.num_layers
        unknown = set(outputs) - set(TAP_OUTPUTS)
        if unknown or not outputs:
            raise ValueError(f'unknown tap outputs {sorted(unknown)}; choose from {TAP_OUTPUTS}')
        if CLS_OUTPUT in outputs and self.norm is None:
            raise ValueError("the 'cls' tap is the CLS token after the final norm; build the ViT with final_norm=True")
        tokens, grid = self.embed(x, token_index)
        for blk in self.blocks[:block_index]:
            tokens = blk(tokens, grid)
        blk = self.blocks[block_index]
        result = {}
        if set(outputs) & set(QKV_OUTPUTS):
            q, k, v = blk.attn.split_heads(tokens, num_heads or self.relation_heads, blk.norm1)
            result.update((name, t) for name, t in zip(QKV_OUTPUTS, (q, k, v)) if name in outputs)
        features = [n for n in FEATURE_OUTPUTS if n in outputs or (n == 'block' and CLS_OUTPUT in outputs)]
        if features:
            parts = blk(tokens, grid, features)
            result.update((name, parts[name]) for name in features if name in outputs)
        if CLS_OUTPUT in outputs:
            tokens = parts['block']
            for blk in self.blocks[block_index + 1:]:
                tokens = blk(tokens, grid)
            result[CLS_OUTPUT] = self.norm(tokens)[:, 0]
        return result

    def forward_features(self, x: torch.Tensor, token_index: Optional[torch.Tensor] = None) -> torch.Tensor:
        tokens, grid = self.embed(x, token_index)
        for blk in self.blocks:
            tokens = blk(tokens, grid)
        return self.norm(tokens) if self.norm is not None else tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)
