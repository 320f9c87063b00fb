from .hooks import AtomicCheckpointHook, ExactResumeHook, NonFiniteLossError, NonFiniteLossHook, SkippedImagesHook
from .optimizers import TinyMIMLayerDecayOptimizerConstructor
from .resumable_sampler import ResumableSampler, SampleSeededDataset
from .runner import CheckpointLoadError, CheckpointWriteError, TinyMIMRunner

__all__ = ['AtomicCheckpointHook', 'CheckpointLoadError', 'CheckpointWriteError', 'ExactResumeHook',
           'NonFiniteLossError', 'NonFiniteLossHook', 'ResumableSampler', 'SampleSeededDataset',
           'SkippedImagesHook',
           'TinyMIMLayerDecayOptimizerConstructor', 'TinyMIMRunner']
