"""mmengine's default optimizer constructor, with frozen submodules left out whole."""
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class SkipFrozenOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` that skips a frozen submodule with one log line.

    With a ``paramwise_cfg`` the default constructor already leaves out
    parameters with ``requires_grad=False``, but warns once per tensor: for
    the distiller's frozen teacher (hundreds of tensors for a ViT-L) that
    buries the log. Here a submodule none of whose parameters trains is
    skipped as a whole, with one line; the parameter groups are the same.
    """

    def add_params(self, params, module, prefix='', is_dcn_module=None):
        tensors = list(module.parameters())
        if prefix and tensors and not any(p.requires_grad for p in tensors):
            print_log(f'{prefix}: frozen, left out of the optimizer ({len(tensors)} tensors)', logger='current')
            return
        super().add_params(params, module, prefix, is_dcn_module)
