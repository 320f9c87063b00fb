# ImageNet-1K train images without labels, two views (TinyMIM paper).
dataset_type = 'UnlabeledImageDataset'
data_root = 'data/imagenet'

train_pipeline = [
    dict(type='LoadImageRGB'),
    dict(type='RandomResizedCropFlip', size=224, scale=(0.2, 1.0), interpolation='bicubic', flip_prob=0.5),
    dict(type='StudentColorJitter', brightness=0.4, contrast=0.4, saturation=0.4),
    dict(type='PackTwoViewInputs'),
]
train_dataloader = dict(
    batch_size=128,
    num_workers=10,
    persistent_workers=True,
    pin_memory=True,
    drop_last=True,
    sampler=dict(type='ResumableSampler', shuffle=True),  # resumes mid-epoch, per-sample augmentation seeds
    collate_fn=dict(type='default_collate'),  # stacks the uint8 views in the workers
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix=dict(img_path='train'),
                 pipeline=train_pipeline))
val_dataloader = None
val_cfg = None
val_evaluator = None

# Unreadable images are skipped and counted; more than 1 % of a batch stops the run.
custom_hooks = [dict(type='SkippedImagesHook', max_skipped_ratio=0.01)]
