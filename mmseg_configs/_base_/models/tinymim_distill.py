# TinyMIM relation distillation (TinyMIM paper). Block numbers are 1-based, as in the
# paper ("block 18 of 24"); None means the last block.
model = dict(
    type='TinyMIMDistiller',
    # ImageNet mean/std on RGB uint8 views.
    data_preprocessor=dict(type='TwoViewDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375]),
    # The frozen teacher: any ViT checkpoint tinymim loads (MAE file, the
    # previous step's distillation checkpoint, timm weights). Required.
    teacher=dict(arch='base', img_size=224, checkpoint=None),
    # Student as in the reference: fixed sin-cos positions, constant drop path
    # 0.1 (0 on the distilled block), MAE init.
    student=dict(arch='small', img_size=224, pos_embed_type='sincos', drop_path_rate=0.1,
                 drop_path_schedule='constant'),
    teacher_block=None,
    student_block=None,
    # QK and VV relations, KL(teacher || student), equal weights. Switches:
    # pairs qq/kk; dict(type='feature', feature='block'|'attn'|'ffn'|'q'|'k'|'v',
    # loss='smooth_l1'|'cosine'); dict(type='cls', loss='kl').
    targets=[dict(type='relation', pairs=('qk', 'vv'), weight=1.0)],
    relation_heads=None,  # None: the teacher's head count (TinyMIM paper)
    mask_ratio=0.0,  # > 0: MAE random masking of the student's input
    relation_chunk_size=64)  # query rows per relation chunk: bounds the N x N memory
