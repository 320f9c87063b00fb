"""A sampler that resumes mid-epoch and makes each sample's augmentation reproducible.

mmengine's ``DefaultSampler`` restarts an interrupted epoch from its first batch, and
the random augmentation of a sample depends on which data-loader worker loaded it and
what that worker loaded before. Both break exact resume and make a 2-process run see
different augmentations than a 1-process run.

``ResumableSampler`` yields ``(index, sample_seed)`` pairs. ``SampleSeededDataset``
(which ``TinyMIMRunner`` wraps around the data set of a loader whose sampler asks for
it) seeds ``random``, ``numpy`` and torch's CPU RNG from ``sample_seed`` while it loads the
sample and restores the caller's RNG states afterwards. The seed is a function of
(sampler seed, epoch, index) only, so augmentations do not depend on the number of
workers, processes, or where a run was resumed.
"""
import random
from contextlib import contextmanager
from typing import Iterator, Tuple

import numpy as np
import torch
from mmengine.dataset import DefaultSampler
from mmseg.registry import DATA_SAMPLERS, DATASETS


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed, well mixed (SeedSequence) from the three numbers."""
    words = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


@contextmanager
def seeded_rngs(seed: int):
    """Seed python/numpy/torch (CPU) RNGs for the block, then restore their states.

    CUDA generators are left alone: ``torch.manual_seed`` would reseed them too, and
    with ``num_workers=0`` loading a sample would then reset the model's CUDA RNG.
    """
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


@DATA_SAMPLERS.register_module()
class ResumableSampler(DefaultSampler):
    """``DefaultSampler`` (same order, same rank split) that can start mid-epoch.

    ``skip_once(n)`` drops the first ``n`` indices of this rank the next time the
    sampler is iterated; the hook that restores a run calls it with the number of
    samples the interrupted epoch had already trained on.
    """
    yields_sample_seeds = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._skip = 0

    def skip_once(self, num_samples: int) -> None:
        if not 0 <= num_samples <= self.num_samples:
            raise ValueError(f'cannot skip {num_samples} samples of an epoch of {self.num_samples}')
        self._skip = num_samples

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        indices = list(super().__iter__())[self._skip:]
        self._skip = 0
        return iter([(index, sample_seed(self.seed, self.epoch, index)) for index in indices])


@DATASETS.register_module()
class SampleSeededDataset(torch.utils.data.Dataset):
    """Loads ``dataset[index]`` under the RNG seed that comes with the index.

    Plain integer indices (e.g. from another sampler) load without seeding. Attributes
    such as ``metainfo`` are those of the wrapped data set.
    """

    def __init__(self, dataset) -> None:
        self.dataset = DATASETS.build(dataset) if isinstance(dataset, dict) else dataset

    def __getitem__(self, item):
        if isinstance(item, tuple):
            index, seed = item
            with seeded_rngs(seed):
                return self.dataset[index]
        return self.dataset[item]

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name):
        # Only called for attributes this wrapper lacks; guard `dataset` itself so that
        # unpickling in a worker (before __init__ ran) cannot recurse.
        if name == 'dataset':
            raise AttributeError(name)
        return getattr(self.dataset, name)
