"""Every mmengine internal that tinymim overrides, calls or reads, checked against the installed mmengine.

``TinyMIMRunner``, ``AtomicCheckpointHook``, ``ResumableSampler``, ``UnlabeledImageDataset`` and
the checkpoint pickling fix (``tinymim/utils/safe_globals.py``) lean on parts of mmengine that are
not its public API: private methods and attributes, and which method calls which. An mmengine
upgrade that renames one of them would otherwise leave an override silently dead (e.g. old
checkpoints pruned before the new one is written) instead of failing. Each entry names the
internal and the tinymim code that depends on it; a failure says which to update.
"""
import inspect
import re

import mmengine
import pytest
from mmengine.dataset import BaseDataset, DefaultSampler
from mmengine.hooks import CheckpointHook
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import Runner

# (class, attribute, tinymim code that reads or writes it): mmengine must assign it as ``self.<attribute>``.
ATTRIBUTES = [
    (Runner, '_has_loaded', 'TinyMIMRunner.load_or_resume'),
    (Runner, '_resume', 'TinyMIMRunner.load_or_resume'),
    (Runner, '_load_from', 'TinyMIMRunner.load_or_resume'),
    *[(CheckpointHook, name, 'AtomicCheckpointHook._save_checkpoint_with_step')
      for name in ('max_keep_ckpts', 'keep_ckpt_ids', 'filename_tmpl', 'last_ckpt', 'file_backend', 'out_dir',
                   'file_client_args', 'save_optimizer', 'save_param_scheduler', 'by_epoch', 'backend_args',
                   'args')],
    (BaseDataset, '_fully_initialized', 'UnlabeledImageDataset.__getitem__'),
    (DefaultSampler, 'num_samples', 'ResumableSampler.skip_once'),
    (DefaultSampler, 'seed', 'ResumableSampler.__iter__'),
    (DefaultSampler, 'epoch', 'ResumableSampler.__iter__'),
    (HistoryBuffer, '_statistics_methods', 'tinymim.utils.safe_globals (HistoryBuffer pickling)'),
]

# (class, method, parameters tinymim passes or receives, tinymim code): the method must exist with them.
METHODS = [
    (Runner, 'setup_env', ('env_cfg',), 'TinyMIMRunner.setup_env'),
    (Runner, 'wrap_model', ('model_wrapper_cfg', 'model'), 'TinyMIMRunner.wrap_model'),
    (Runner, 'register_default_hooks', ('hooks',), 'TinyMIMRunner.register_default_hooks'),
    (Runner, 'register_hooks', ('default_hooks', 'custom_hooks'), 'TinyMIMRunner.register_hooks'),
    (Runner, 'build_dataloader', ('dataloader', 'seed', 'diff_rank_seed'), 'TinyMIMRunner.build_dataloader'),
    (Runner, 'save_checkpoint', ('out_dir', 'filename', 'file_client_args', 'save_optimizer',
                                 'save_param_scheduler', 'meta', 'by_epoch', 'backend_args'),
     'TinyMIMRunner.save_checkpoint and AtomicCheckpointHook'),
    (Runner, 'load_checkpoint', ('filename', 'map_location'), 'TinyMIMRunner.load_checkpoint'),
    (Runner, 'load_or_resume', (), 'TinyMIMRunner.load_or_resume'),
    (Runner, 'resume', ('filename',), 'TinyMIMRunner.load_or_resume'),
    (CheckpointHook, '_save_checkpoint_with_step', ('runner', 'step', 'meta'),
     'AtomicCheckpointHook._save_checkpoint_with_step'),
    (BaseModel, 'parse_losses', ('losses',), 'NonFiniteLossHook.before_train'),
    (DefaultSampler, '__iter__', (), 'ResumableSampler.__iter__'),
    (HistoryBuffer, '__getstate__', (), 'tinymim.utils.safe_globals (replaces it)'),
    (HistoryBuffer, '__setstate__', ('state',), 'tinymim.utils.safe_globals (relies on it)'),
]

# (class, method, call it must make, tinymim code): an override is only run if mmengine still calls it there.
CALLS = [
    (Runner, '__init__', 'self.setup_env(', 'TinyMIMRunner.setup_env'),
    (Runner, '__init__', 'self.wrap_model(', 'TinyMIMRunner.wrap_model'),
    (Runner, '__init__', 'self.register_hooks(', 'TinyMIMRunner.register_hooks'),
    (Runner, 'register_hooks', 'self.register_default_hooks(', 'TinyMIMRunner.register_default_hooks'),
    (Runner, 'train', 'self.load_or_resume(', 'TinyMIMRunner.load_or_resume'),
    (Runner, 'load_or_resume', 'self.load_checkpoint(', 'TinyMIMRunner.load_checkpoint'),
    (Runner, 'resume', 'self.load_checkpoint(', 'TinyMIMRunner.load_checkpoint'),
    (CheckpointHook, '_save_checkpoint', 'self._save_checkpoint_with_step(',
     'AtomicCheckpointHook._save_checkpoint_with_step'),
    (CheckpointHook, 'after_train_iter', 'self._save_checkpoint(',
     'AtomicCheckpointHook._save_checkpoint_with_step'),
    (HistoryBuffer, '__setstate__', "pop('statistics_methods'", 'tinymim.utils.safe_globals'),
]


def _where(owner, name: str) -> str:
    return f'{owner.__module__}.{owner.__qualname__}.{name} (mmengine {mmengine.__version__})'


def _mmengine_sources(owner) -> str:
    return '\n'.join(inspect.getsource(klass) for klass in owner.__mro__
                     if klass.__module__.startswith('mmengine.'))


@pytest.mark.parametrize('owner,name,user', ATTRIBUTES, ids=[f'{o.__name__}.{n}' for o, n, _ in ATTRIBUTES])
def test_attribute_is_still_set_by_mmengine(owner, name, user):
    assigned = re.search(rf'\b(self|cls)\.{re.escape(name)}\s*(:[^=\n]*)?=[^=]', _mmengine_sources(owner))
    assert assigned or name in vars(owner), (
        f'{_where(owner, name)} is no longer set by mmengine; {user} reads or writes it: '
        'update that code for this mmengine version.')


@pytest.mark.parametrize('owner,name,params,user', METHODS, ids=[f'{o.__name__}.{n}' for o, n, _, _ in METHODS])
def test_method_still_exists_with_its_parameters(owner, name, params, user):
    method = getattr(owner, name, None)
    assert callable(method), f'{_where(owner, name)} is gone; {user} overrides or calls it: update that code.'
    missing = [p for p in params if p not in inspect.signature(method).parameters]
    assert not missing, (f'{_where(owner, name)} no longer takes {", ".join(missing)}; {user} passes or '
                         'receives them: update that code.')


@pytest.mark.parametrize('owner,caller,call,user', CALLS,
                         ids=[f'{o.__name__}.{m}->{c.rstrip("(")}' for o, m, c, _ in CALLS])
def test_mmengine_still_calls_the_override(owner, caller, call, user):
    source = inspect.getsource(getattr(owner, caller))
    assert call in source, (f'{_where(owner, caller)} no longer contains `{call}...)`, so {user} would never run '
                            '(or its assumption no longer holds): update that code for this mmengine version.')
