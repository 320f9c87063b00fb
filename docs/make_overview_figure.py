"""Draw the README's overview figure: TinyMIM relation distillation, then segmentation.

    python docs/make_overview_figure.py            # writes docs/figures/tinymim_overview.png

A diagram, not a result: a frozen MAE teacher's target block gives Q, K, V;
their relations softmax(QKᵀ/√d) and softmax(VVᵀ/√d) are the targets the
student's last block learns by KL; the student then becomes the backbone of
UperNet. The small relation heat maps are drawn from a fixed random seed and
only illustrate the shapes.
"""
import argparse
import os
import os.path as osp

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

TEACHER_COLOUR = '#4C72B0'
STUDENT_COLOUR = '#DD8452'
TARGET_COLOUR = '#C44E52'
SEG_COLOUR = '#55A868'


def box(ax, x, y, w, h, text, colour, alpha=0.9, fontsize=9, text_colour='white'):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle='round,pad=0.02,rounding_size=0.08',
                                facecolor=colour, edgecolor='black', linewidth=0.6, alpha=alpha))
    ax.text(x + w / 2, y + h / 2, text, ha='center', va='center', fontsize=fontsize, color=text_colour)


def arrow(ax, start, end, text=None, colour='black', style='-|>', offset=(0, 0.12)):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=12, color=colour, linewidth=1.2))
    if text:
        ax.text((start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1], text,
                ha='center', va='bottom', fontsize=8, color=colour)


def vit_stack(ax, x, y, n_blocks, tapped, colour, label, width=1.5, height=0.28):
    """A column of blocks, bottom to top; the tapped (1-based) block is outlined in red."""
    for i in range(n_blocks):
        is_tapped = i + 1 == tapped
        face = TARGET_COLOUR if is_tapped else colour
        alpha = 0.95 if i < tapped else 0.25  # blocks after the tapped one are never computed
        box(ax, x, y + i * (height + 0.06), width, height, f'block {i + 1}', face, alpha, fontsize=7)
    ax.text(x + width / 2, y - 0.35, label, ha='center', va='top', fontsize=10, weight='bold')
    return x + width, y + (tapped - 1) * (height + 0.06) + height / 2


def relation_map(ax, rect, seed, title, cmap):
    """A small illustrative N×N heat map (rows sum to 1, like a softmax relation)."""
    inner = ax.inset_axes(rect, transform=ax.transData)
    logits = np.random.default_rng(seed).normal(size=(10, 10)) * 1.5 + np.eye(10) * 2.5
    rel = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    inner.imshow(rel, cmap=cmap)
    inner.set_xticks([])
    inner.set_yticks([])
    inner.set_title(title, fontsize=8, pad=2)


def draw(out: str) -> str:
    fig, ax = plt.subplots(figsize=(11, 5.2))
    ax.set_xlim(0, 11)
    ax.set_ylim(-1.3, 4.4)
    ax.axis('off')

    # Teacher (frozen MAE ViT, target block 6 of 8 drawn; ViT-L uses block 18 of 24).
    tx, ty = vit_stack(ax, 0.3, 0.6, 8, 6, TEACHER_COLOUR, 'teacher ViT (MAE, frozen)')
    # Student: its last block is distilled.
    _, sty = vit_stack(ax, 8.9, 0.6, 4, 4, STUDENT_COLOUR, 'student ViT (small)')

    # Q/K/V of the tapped blocks: LN1 + qkv projection only.
    box(ax, 2.3, ty - 0.25, 1.1, 0.5, 'LN1 → qkv\nQ, K, V', TEACHER_COLOUR, fontsize=8)
    arrow(ax, (tx, ty), (2.3, ty))
    box(ax, 7.5, sty - 0.25, 1.1, 0.5, 'LN1 → qkv\nQ, K, V', STUDENT_COLOUR, fontsize=8)
    arrow(ax, (8.9, sty), (8.6, sty))

    # Relations on both sides and the KL between them.
    relation_map(ax, [3.7, 2.3, 1.0, 1.0], 0, 'teacher QKᵀ', 'Blues')
    relation_map(ax, [3.7, 0.55, 1.0, 1.0], 1, 'teacher VVᵀ', 'Blues')
    relation_map(ax, [6.2, 2.3, 1.0, 1.0], 2, 'student QKᵀ', 'Oranges')
    relation_map(ax, [6.2, 0.55, 1.0, 1.0], 3, 'student VVᵀ', 'Oranges')
    arrow(ax, (3.4, ty), (3.7, 2.8))
    arrow(ax, (3.4, ty - 0.2), (3.7, 1.05))
    arrow(ax, (7.5, sty), (7.2, 2.8))
    arrow(ax, (7.5, sty - 0.2), (7.2, 1.05))
    arrow(ax, (4.75, 2.8), (6.15, 2.8), 'KL(teacher ‖ student)', TARGET_COLOUR, style='<|-|>')
    arrow(ax, (4.75, 1.05), (6.15, 1.05), 'KL(teacher ‖ student)', TARGET_COLOUR, style='<|-|>')
    ax.text(5.45, 3.75, 'R = softmax(X Yᵀ / √d) per head, over N+1 tokens (CLS included)',
            ha='center', fontsize=9)
    ax.text(5.45, 0.05, 'loss = KL(R_QK) + KL(R_VV), summed over keys, mean over batch × heads × queries',
            ha='center', fontsize=8.5)

    # Then: the student is the segmentation backbone.
    box(ax, 8.7, -1.25, 1.9, 0.45, 'UperNet on ADE20K', SEG_COLOUR, fontsize=9)
    arrow(ax, (9.65, -0.2), (9.65, -0.78), 'fine-tune', SEG_COLOUR, offset=(0.5, -0.1))

    ax.set_title('TinyMIM: distil token relations of a MIM teacher into a small ViT, then segment',
                 fontsize=11)
    fig.tight_layout()
    os.makedirs(osp.dirname(out) or '.', exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description='Draw the README overview figure')
    parser.add_argument('--out', default=osp.join(osp.dirname(osp.abspath(__file__)), 'figures',
                                                  'tinymim_overview.png'), help='output PNG')
    args = parser.parse_args(argv)
    print(draw(args.out))


if __name__ == '__main__':
    main()
