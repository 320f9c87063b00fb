"""The reference TinyMIM segmentation models (mmseg 0.x), written out plainly from
their documented key layout, to build checkpoints and expected logits for tests.

``Segmentation/TinyMIM`` (ViT-B) and ``Segmentation/TinyMIMstar-T`` of the
reference repository save a BEiT-style backbone with the pyramid inside it:

    backbone.cls_token, [backbone.dist_token,] backbone.pos_embed, backbone.patch_embed.proj.*,
    backbone.blocks.i.{norm1, attn.qkv, attn.proj, attn.relative_position_bias_table,
                       attn.relative_position_index, gamma_1, gamma_2, norm2, mlp.fc1, mlp.fc2}.*,
    [backbone.conv1x1.{0,1}.*,] backbone.fpn1.{0,1,3}.*, backbone.fpn2.0.*, [backbone.fpn3.*, backbone.fpn4.0.*,]
    decode_head.* (UPerHead), auxiliary_head.* (FCNHead)

Nothing here comes from tinymim: attention, the relative-position index (with
the distillation token's three extra rows) and the pyramids are spelled out
so that the expected logits are independent of the code under test.
"""
from typing import Optional

import torch
import torch.nn as nn
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS


def reference_index(wh: int, ww: int, prefix: int) -> torch.Tensor:
    """The reference's relative-position index, pair by pair."""
    num_rel = (2 * wh - 1) * (2 * ww - 1)
    n = wh * ww
    index = torch.zeros(n + prefix, n + prefix, dtype=torch.long)
    for a in range(n):
        for b in range(n):
            dy, dx = a // ww - b // ww + wh - 1, a % ww - b % ww + ww - 1
            index[prefix + a, prefix + b] = dy * (2 * ww - 1) + dx
    size = num_rel + 3 * prefix
    if prefix == 2:  # assigned in this order; later rows overwrite earlier ones
        index[1, :] = size - 6  # dist -> token
        index[:, 1] = size - 5  # token -> dist
        index[1, 1] = size - 4  # dist -> dist
    index[0, :] = size - 3  # cls -> token
    index[:, 0] = size - 2  # token -> cls
    index[0, 0] = size - 1  # cls -> cls
    return index


class RefAttention(nn.Module):
    def __init__(self, dim, heads, window, prefix):
        super().__init__()
        self.heads, self.window = heads, window
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        size = (2 * window[0] - 1) * (2 * window[1] - 1) + 3 * prefix
        self.relative_position_bias_table = nn.Parameter(torch.zeros(size, heads))
        self.register_buffer('relative_position_index', reference_index(*window, prefix))

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q * (c // self.heads) ** -0.5) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = (attn + bias.permute(2, 0, 1)).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class RefMlp(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class RefBlock(nn.Module):
    def __init__(self, dim, heads, window, prefix):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = RefAttention(dim, heads, window, prefix)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = RefMlp(dim)
        self.gamma_1 = nn.Parameter(torch.ones(dim))
        self.gamma_2 = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        x = x + self.gamma_1 * self.attn(self.norm1(x))
        return x + self.gamma_2 * self.mlp(self.norm2(x))


class RefBackbone(nn.Module):
    """The reference backbone, pyramid included (``fpn1..fpn4``).

    ``star=False``: TinyMIM-B's (CLS only; x4 ConvT-BN-GELU-ConvT, x2 ConvT,
    x1 identity, x0.5 max pooling, all at the ViT's width).
    ``star=True``: TinyMIM*-T's (CLS + distillation token, ``conv1x1`` on
    the last block; x4 ConvT C->2C, BN, GELU, ConvT 2C->out; x2 ConvT C->out;
    x1 Conv1x1 C->out; x0.5 Conv3x3/2 proj->out).
    """

    def __init__(self, dim, depth, heads, grid, star=False, proj_dims: Optional[int] = None, out: int = None):
        super().__init__()
        self.prefix = 2 if star else 1
        self.grid = grid
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, 16, 16)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        if star:
            self.dist_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid[0] * grid[1] + self.prefix, dim))
        self.blocks = nn.ModuleList(RefBlock(dim, heads, grid, self.prefix) for _ in range(depth))
        if star:
            self.conv1x1 = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, proj_dims), nn.GELU())
            self.fpn1 = nn.Sequential(nn.ConvTranspose2d(dim, 2 * dim, 2, 2), nn.BatchNorm2d(2 * dim), nn.GELU(),
                                      nn.ConvTranspose2d(2 * dim, out, 2, 2))
            self.fpn2 = nn.Sequential(nn.ConvTranspose2d(dim, out, 2, 2))
            self.fpn3 = nn.Conv2d(dim, out, 1)
            self.fpn4 = nn.Sequential(nn.Conv2d(proj_dims, out, 3, stride=2, padding=1))
        else:
            self.fpn1 = nn.Sequential(nn.ConvTranspose2d(dim, dim, 2, 2), nn.BatchNorm2d(dim), nn.GELU(),
                                      nn.ConvTranspose2d(dim, dim, 2, 2))
            self.fpn2 = nn.Sequential(nn.ConvTranspose2d(dim, dim, 2, 2))
            self.fpn3 = nn.Identity()
            self.fpn4 = nn.MaxPool2d(2, 2)

    def features(self, img):
        """The maps of every block before the pyramid (the last one projected by conv1x1)."""
        b = img.shape[0]
        x = self.patch_embed.proj(img).flatten(2).transpose(1, 2)
        tokens = [self.cls_token.expand(b, -1, -1)]
        if self.prefix == 2:
            tokens.append(self.dist_token.expand(b, -1, -1))
        x = torch.cat(tokens + [x], 1) + self.pos_embed
        features = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i == len(self.blocks) - 1 and self.prefix == 2:
                x = self.conv1x1(x)
            features.append(x[:, self.prefix:].transpose(1, 2).reshape(b, -1, *self.grid))
        return features

    def forward(self, img):
        return [fpn(f) for fpn, f in zip((self.fpn1, self.fpn2, self.fpn3, self.fpn4), self.features(img))]


def randomize(module: nn.Module, scale: float = 0.2) -> nn.Module:
    """Random weights, non-trivial norms and BN statistics; eval mode."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.normal_(0, scale)
            if name.endswith('weight') and p.ndim == 1:
                p.add_(1)
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.num_batches_tracked.fill_(1000)
    return module.eval()


def reference_heads(in_channels: int, channels: int, aux_channels: int):
    """mmseg's UPerHead and FCNHead as the reference configs set them (BN for SyncBN on a CPU)."""
    init_default_scope('mmseg')
    bn = dict(type='BN', requires_grad=True)
    head = MODELS.build(dict(type='UPerHead', in_channels=[in_channels] * 4, in_index=[0, 1, 2, 3],
                             pool_scales=(1, 2, 3, 6), channels=channels, dropout_ratio=0.1, num_classes=150,
                             norm_cfg=bn, align_corners=False,
                             loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)))
    aux = MODELS.build(dict(type='FCNHead', in_channels=in_channels, in_index=2, channels=aux_channels, num_convs=1,
                            concat_input=False, dropout_ratio=0.1, num_classes=150, norm_cfg=bn, align_corners=False,
                            loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)))
    return randomize(head), randomize(aux)


def reference_checkpoint(backbone: nn.Module, head: nn.Module, aux: nn.Module) -> dict:
    """What mmcv 1.x's save_checkpoint wrote for the reference runs."""
    state = {f'backbone.{k}': v for k, v in backbone.state_dict().items()}
    state.update({f'decode_head.{k}': v for k, v in head.state_dict().items()})
    state.update({f'auxiliary_head.{k}': v for k, v in aux.state_dict().items()})
    meta = dict(mmcv_version='1.3.0', time='Thu Dec 29 10:00:00 2022', iter=160000, epoch=1,
                CLASSES=tuple(f'class{i}' for i in range(150)), PALETTE=[[i, i, i] for i in range(150)])
    return dict(meta=meta, state_dict=state, optimizer=dict(state={}, param_groups=[]))


def ft_tstar_file(path, backbone: RefBackbone, grid_side: int) -> dict:
    """TinyMIM-FT-Tstar.pth's layout, {'model': ...} from the ImageNet fine-tune at 224 px
    (here a ``grid_side``-square grid): no gamma, no relative tables, plus fc_norm, head and
    head_dist on the projected width."""
    state = {k: v for k, v in backbone.state_dict().items()
             if k.startswith(('cls_token', 'dist_token', 'patch_embed', 'blocks', 'conv1x1'))
             and not k.endswith(('gamma_1', 'gamma_2', 'relative_position_bias_table', 'relative_position_index'))}
    dim, proj = backbone.cls_token.shape[-1], backbone.conv1x1[1].out_features
    state['pos_embed'] = torch.randn(1, 2 + grid_side ** 2, dim) * 0.2
    state.update({'fc_norm.weight': torch.ones(proj), 'fc_norm.bias': torch.zeros(proj),
                  'head.weight': torch.randn(1000, proj), 'head.bias': torch.zeros(1000),
                  'head_dist.weight': torch.randn(1000, proj), 'head_dist.bias': torch.zeros(1000)})
    torch.save({'model': state}, path)
    return state


@torch.no_grad()
def reference_logits(backbone, head, img):
    return head(backbone(img))
