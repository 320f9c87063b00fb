# Runtime for TinyMIM distillation: tinymim's runtime, epoch-based logging.
_base_ = ['./default_runtime.py']

# 'skipped_images' (see SkippedImagesHook) is a running total: log its current value.
log_processor = dict(by_epoch=True, custom_cfg=[dict(data_src='skipped_images', method_name='current')])
