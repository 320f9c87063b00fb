"""Save and restore what mmengine's resume leaves out: RNG states and the epoch position."""
import logging
import random

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop
from mmseg.registry import HOOKS


def capture_rng_state() -> dict:
    """The global RNG states, as tensors and plain Python types only.

    numpy's MT19937 key is stored as an int64 tensor so that the checkpoint still
    loads under torch's ``weights_only=True`` without allowing more numpy classes.
    """
    np_state = np.random.get_state(legacy=False)
    state = dict(
        python=random.getstate(),
        numpy=dict(key=torch.from_numpy(np_state['state']['key'].astype(np.int64)),
                   pos=int(np_state['state']['pos']),
                   has_gauss=int(np_state['has_gauss']), gauss=float(np_state['gauss'])),
        torch=torch.get_rng_state())
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state()  # the current device: the one this rank trains on
    return state


def _own_cuda_state(saved):
    """This rank's CUDA RNG state from a checkpoint.

    Older checkpoints hold ``get_rng_state_all()`` of rank 0, a list over all devices:
    only element 0, rank 0's own device, was ever drawn from, and with equal seeds on
    all ranks it is the state every rank's current device should continue from.
    """
    return saved[0] if isinstance(saved, (list, tuple)) else saved


def restore_rng_state(state: dict) -> None:
    """Inverse of ``capture_rng_state``.

    mmengine's resume maps the checkpoint to the training device, so the tensors may
    arrive on CUDA: numpy and the ``set_rng_state`` functions need CPU tensors.
    """
    random.setstate(state['python'])
    np_state = state['numpy']
    np.random.set_state(dict(
        bit_generator='MT19937',
        state=dict(key=np_state['key'].cpu().numpy().astype(np.uint32), pos=np_state['pos']),
        has_gauss=np_state['has_gauss'], gauss=np_state['gauss']))
    torch.set_rng_state(state['torch'].cpu())
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(_own_cuda_state(state['cuda']).cpu())


def _sampler_of(dataloader):
    sampler = getattr(dataloader, 'sampler', None)
    if sampler is None or not hasattr(sampler, 'set_epoch'):
        sampler = getattr(getattr(dataloader, 'batch_sampler', None), 'sampler', None)
    return sampler


@HOOKS.register_module()
class ExactResumeHook(Hook):
    """Makes a resumed run continue exactly like the uninterrupted one.

    - Saves the python/numpy/torch(/CUDA) RNG states in each checkpoint and restores
      them right before the first resumed iteration, i.e. after the data loader has
      been rebuilt and (iteration-based loops) fast-forwarded, which may draw numbers.
    - Epoch-based loops: mmengine restarts an interrupted epoch from its first batch;
      with a ``ResumableSampler`` the epoch continues after the batches already trained.

    With ``diff_rank_seed=False`` (mmengine's default) all ranks draw the same numbers,
    each on its own current CUDA device, so the states rank 0 saves (CPU and its current
    device) are every rank's states, and each rank restores them on its current device.
    """
    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self._pending_rng = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['rng_state'] = capture_rng_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._pending_rng = checkpoint.get('rng_state')

    def before_train(self, runner) -> None:
        if runner.iter == 0:  # a `load_from` fine-tune, not a resume
            self._pending_rng = None
            return
        if self._pending_rng is None:
            print_log('The resumed checkpoint has no RNG state (not written by TinyMIMRunner): random '
                      'numbers after the resume differ from an uninterrupted run.',
                      logger='current', level=logging.WARNING)
        if isinstance(runner.train_loop, EpochBasedTrainLoop):
            self._skip_trained_part_of_epoch(runner)

    def _skip_trained_part_of_epoch(self, runner) -> None:
        dataloader = runner.train_loop.dataloader
        batches_done = runner.iter - runner.epoch * len(dataloader)
        if batches_done <= 0:
            return
        sampler = _sampler_of(dataloader)
        if not hasattr(sampler, 'skip_once') or dataloader.batch_size is None:
            print_log(f'Resuming in the middle of epoch {runner.epoch + 1} ({batches_done} batches done), but '
                      f'{type(sampler).__name__} can only restart the epoch: those batches are trained again. '
                      "Use sampler=dict(type='ResumableSampler') to continue where the run stopped.",
                      logger='current', level=logging.WARNING)
            return
        sampler.skip_once(batches_done * dataloader.batch_size)
        print_log(f'Resuming epoch {runner.epoch + 1} after its first {batches_done} batches.', logger='current')

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self._pending_rng is not None:
            restore_rng_state(self._pending_rng)
            self._pending_rng = None
