# tinymim's runtime: mmseg's defaults, run by TinyMIMRunner. It writes checkpoints
# atomically (CheckpointHook becomes AtomicCheckpointHook), resumes exactly (RNG
# states, mid-epoch position with ResumableSampler) from the newest complete
# checkpoint, stops at the first non-finite loss (NonFiniteLossHook), and uses
# gloo instead of nccl when there is no GPU.
_base_ = 'mmseg::_base_/default_runtime.py'

custom_imports = dict(imports=['tinymim'], allow_failed_imports=False)
runner_type = 'TinyMIMRunner'
