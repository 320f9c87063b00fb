"""Shared pieces of the distillation tests: tiny ViTs, teacher files, images."""
import os.path as osp

import cv2
import numpy as np
import torch

from tinymim.models.vit import VisionTransformer

TINY_TEACHER = dict(embed_dims=64, num_layers=3, num_heads=4)
TINY_STUDENT = dict(embed_dims=32, num_layers=2, num_heads=2)


def write_teacher(path, arch=TINY_TEACHER, img_size=32, seed=0) -> VisionTransformer:
    """A random ViT saved as an MAE-style file ({'model': timm keys})."""
    torch.manual_seed(seed)
    vit = VisionTransformer(arch=arch, img_size=img_size)
    torch.save({'model': vit.state_dict()}, str(path))
    return vit


def distiller_cfg(teacher_path, **kwargs) -> dict:
    checkpoint = None if teacher_path is None else str(teacher_path)
    cfg = dict(type='TinyMIMDistiller',
               teacher=dict(arch=TINY_TEACHER, img_size=32, checkpoint=checkpoint),
               student=dict(arch=TINY_STUDENT, img_size=32, pos_embed_type='sincos', drop_path_rate=0.1,
                            drop_path_schedule='constant'),
               teacher_block=2)
    cfg.update(kwargs)
    return cfg


def write_images(folder, count, size=(40, 48), ext='.png', seed=0):
    """``count`` random RGB images (HxW ``size``) written with OpenCV; returns their paths."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = osp.join(str(folder), f'img_{i:03d}{ext}')
        img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        assert cv2.imwrite(path, img)
        paths.append(path)
    return paths


def naive_relation_kl(s_a, s_b, t_a, t_b):
    """TinyMIM's relation KL with softmax and KL written out by hand, float64."""
    def softmax(a, b):
        logits = a.double() @ b.double().transpose(-2, -1) / a.shape[-1] ** 0.5
        e = torch.exp(logits - logits.max(dim=-1, keepdim=True).values)
        return e / e.sum(dim=-1, keepdim=True)

    p_t, p_s = softmax(t_a, t_b), softmax(s_a, s_b)
    kl_rows = (p_t * (torch.log(p_t) - torch.log(p_s))).sum(dim=-1)  # B x H x N
    return kl_rows.sum() / kl_rows.numel()
