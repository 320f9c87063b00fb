"""``TinyMIMRunner``: mmengine's Runner with crash-safe checkpoints and exact resume.

Used by every tinymim config through ``runner_type='TinyMIMRunner'`` in
``mmseg_configs/_base_/default_runtime.py``. On top of mmengine's Runner it:

- writes each checkpoint to a temporary file in the same folder, fsyncs it and
  renames it into place, and upgrades ``CheckpointHook`` to ``AtomicCheckpointHook``
  (new checkpoint first, then ``last_checkpoint``, then pruning);
- resumes ``resume=True`` (``--resume`` / ``--resume auto``) from the newest *loadable*
  checkpoint of the work_dir or of the ``out_dir`` folder its ``last_checkpoint`` names,
  skipping partial or foreign ``.pth`` files with a warning;
- adds ``ExactResumeHook`` (RNG states, mid-epoch position) and ``NonFiniteLossHook``
  unless the config lists them;
- turns ``persistent_workers`` off for a data loader with ``num_workers=0`` (mmseg's bases
  set it, and PyTorch refuses it without workers);
- gives every data loader its own seeded ``torch.Generator`` so that starting a data
  loader iterator does not draw from the global RNG, and wraps the data set of a
  ``ResumableSampler`` loader in ``SampleSeededDataset``;
- runs distributed on CPU: gloo instead of nccl (``engine/dist.py``), DDP without
  ``device_ids``, SyncBN reverted to BN (torch's SyncBatchNorm is CUDA-only).
"""
import copy
import os
import os.path as osp

import torch
from mmengine.dist import master_only
from mmengine.logging import print_log
from mmengine.model import revert_sync_batchnorm
from mmengine.runner import Runner
from mmseg.registry import DATA_SAMPLERS, RUNNERS

from . import checkpoint_files
from .dist import cuda_usable, setup_cpu_dist

DEFAULT_HOOK_UPGRADES = {'CheckpointHook': 'AtomicCheckpointHook'}
ALWAYS_ON_HOOKS = ('ExactResumeHook', 'NonFiniteLossHook')


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed; earlier checkpoints are untouched."""


class CheckpointLoadError(RuntimeError):
    """A checkpoint given to resume/load_from cannot be read."""


@RUNNERS.register_module()
class TinyMIMRunner(Runner):

    def __init__(self, *args, **kwargs) -> None:
        if kwargs.get('work_dir'):  # before mmengine creates log files in it
            checkpoint_files.ensure_writable_dir(kwargs['work_dir'])
        super().__init__(*args, **kwargs)

    # ---- environment -------------------------------------------------------------
    def setup_env(self, env_cfg: dict) -> None:
        if self.distributed and not cuda_usable():
            setup_cpu_dist(self.launcher, env_cfg)
        super().setup_env(env_cfg)

    def wrap_model(self, model_wrapper_cfg, model):
        if self.distributed and not cuda_usable():
            self.logger.warning('Distributed training on CPU: SyncBN layers become per-process BN '
                                '(torch SyncBatchNorm needs CUDA).')
            model = revert_sync_batchnorm(model)
            if model_wrapper_cfg is None:
                model_wrapper_cfg = dict(type='MMDistributedDataParallel', broadcast_buffers=False,
                                         find_unused_parameters=self.cfg.get('find_unused_parameters', False))
            model_wrapper_cfg = dict(model_wrapper_cfg, device_ids=None)  # CPU modules take no device_ids
        return super().wrap_model(model_wrapper_cfg, model)

    # ---- hooks -------------------------------------------------------------------
    def register_default_hooks(self, hooks=None) -> None:
        hooks = copy.deepcopy(hooks) if hooks is not None else {}
        checkpoint = hooks.get('checkpoint')
        if isinstance(checkpoint, dict) and checkpoint.get('type') in DEFAULT_HOOK_UPGRADES:
            checkpoint['type'] = DEFAULT_HOOK_UPGRADES[checkpoint['type']]
        elif 'checkpoint' not in hooks:  # an explicit None means "no checkpoint hook" in mmengine
            hooks['checkpoint'] = dict(type='AtomicCheckpointHook', interval=1)
        super().register_default_hooks(hooks)

    def register_hooks(self, default_hooks=None, custom_hooks=None) -> None:
        # mmengine skips custom hooks entirely when the config has none: add ours here
        custom_hooks = list(custom_hooks or [])
        listed = {h.get('type') if isinstance(h, dict) else type(h).__name__ for h in custom_hooks}
        custom_hooks += [dict(type=name) for name in ALWAYS_ON_HOOKS if name not in listed]
        super().register_hooks(default_hooks, custom_hooks)

    # ---- data --------------------------------------------------------------------
    @staticmethod
    def build_dataloader(dataloader, seed=None, diff_rank_seed=False):
        if isinstance(dataloader, dict):
            dataloader = copy.deepcopy(dataloader)
            if dataloader.get('num_workers', 0) == 0 and dataloader.get('persistent_workers'):
                # mmseg's bases set persistent_workers=True; PyTorch refuses it without workers.
                print_log('num_workers=0: persistent_workers turned off (it needs worker processes)',
                          logger='current')
                dataloader['persistent_workers'] = False
            sampler_type = dataloader.get('sampler', {}).get('type')
            sampler_cls = DATA_SAMPLERS.get(sampler_type) if isinstance(sampler_type, str) else sampler_type
            if getattr(sampler_cls, 'yields_sample_seeds', False):
                dataloader['dataset'] = dict(type='SampleSeededDataset', dataset=dataloader['dataset'])
        loader = Runner.build_dataloader(dataloader, seed=seed, diff_rank_seed=diff_rank_seed)
        # DataLoader draws a base seed for each new iterator; from its own generator it
        # leaves the global RNG (drop path, masking) alone, so epochs/validation do not shift it.
        loader.generator = torch.Generator().manual_seed(seed if seed is not None else 0)
        return loader

    # ---- checkpoints -------------------------------------------------------------
    @master_only
    def save_checkpoint(self, out_dir, filename, file_client_args=None, *args, backend_args=None, **kwargs):
        final_path = osp.join(out_dir, filename)
        local = file_client_args is None and backend_args is None and '://' not in out_dir
        if not local:  # object stores: their put() is already all-or-nothing
            return super().save_checkpoint(out_dir, filename, file_client_args, *args,
                                           backend_args=backend_args, **kwargs)
        tmp_path = osp.join(out_dir, checkpoint_files.temporary_name(filename))
        try:
            super().save_checkpoint(out_dir, checkpoint_files.temporary_name(filename), None, *args, **kwargs)
            checkpoint_files.commit_file(tmp_path, final_path)
        except OSError as error:
            if osp.exists(tmp_path):
                os.remove(tmp_path)
            raise CheckpointWriteError(
                error.errno, f'Could not write checkpoint {final_path}: {error.strerror or error}. '
                f'Earlier checkpoints in {out_dir} are untouched; free space or fix permissions, '
                'then continue with --resume.') from error

    def load_checkpoint(self, filename, *args, **kwargs):
        if osp.isfile(filename):  # name the file instead of a bare unpickling/zip error
            try:
                checkpoint_files.probe_checkpoint(filename)
            except Exception as error:
                raise CheckpointLoadError(
                    f'Cannot read checkpoint {filename} ({checkpoint_files.describe_error(error)}): it is cut off, '
                    'not a torch checkpoint, or holds objects that weights_only loading refuses. `--resume auto` picks '
                    'the newest complete checkpoint of the work_dir.') from error
        return super().load_checkpoint(filename, *args, **kwargs)

    def load_or_resume(self) -> None:
        if not self._has_loaded and self._resume and self._load_from is None:
            resume_from = checkpoint_files.find_resumable_checkpoint(self.work_dir)
            if resume_from is None:
                searched = ', '.join(checkpoint_files.checkpoint_dirs(self.work_dir))
                self.logger.info(f'No complete checkpoint in {searched} to resume from: starting from scratch.')
                return
            self.logger.info(f'Auto-resuming from the newest complete checkpoint {resume_from}.')
            self.resume(resume_from)
            self._has_loaded = True
            return
        super().load_or_resume()
