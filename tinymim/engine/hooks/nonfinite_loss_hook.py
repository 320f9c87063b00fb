"""Stop a run at the first non-finite loss, before it reaches the weights."""
import functools

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS


class NonFiniteLossError(FloatingPointError):
    """A loss term, or a weight about to be saved, is NaN or infinite."""


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Raises ``NonFiniteLossError`` naming the iteration and the loss terms that blew up.

    The check sits in the model's ``parse_losses``, which ``train_step`` calls after the
    forward pass and before ``optim_wrapper.update_params``: the bad step never runs, so
    the weights (and any later checkpoint) stay finite. As a second line of defence a
    checkpoint whose weights contain NaN/inf is refused. Costs one ``isfinite`` per loss
    term per iteration.
    """
    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        parse_losses = model.parse_losses
        if getattr(parse_losses, '_checks_finite', False):
            return

        @functools.wraps(parse_losses)
        def checked_parse_losses(losses):
            loss, log_vars = parse_losses(losses)
            bad = {name: float(value.detach()) for name, value in log_vars.items()
                   if torch.is_tensor(value) and value.numel() == 1 and not torch.isfinite(value).item()}
            if len(bad) > 1:  # name the terms, not only their sum
                bad.pop('loss', None)
            if bad:
                terms = ', '.join(f'{name}={value}' for name, value in bad.items())
                raise NonFiniteLossError(
                    f'Non-finite loss at iteration {runner.iter + 1} (epoch {runner.epoch + 1}): {terms}. '
                    'Training stopped before this step changed the weights; the last saved checkpoint '
                    'is finite. Lower the learning rate, enable gradient clipping, or check the inputs.')
            return loss, log_vars

        checked_parse_losses._checks_finite = True
        model.parse_losses = checked_parse_losses

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        bad = [name for name, value in checkpoint['state_dict'].items()
               if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all()]
        if bad:
            shown = ', '.join(bad[:5]) + (f' and {len(bad) - 5} more' if len(bad) > 5 else '')
            raise NonFiniteLossError(f'Refusing to save a checkpoint at iteration {runner.iter + 1}: '
                                     f'non-finite weights in {shown}.')
