"""The deploy extra's packages (onnx, onnxruntime, onnxscript) are optional:
``import tinymim`` works without them, and whatever needs one says which
package is missing and how to install it."""
import importlib
from types import ModuleType

INSTALL_HINT = "install the deploy extra with `pip install -e .[deploy]` (or `pip install {package}`)"
# module name -> (PyPI package, what needs it)
PACKAGES = {
    'onnx': ('onnx', 'reading and writing ONNX files'),
    'onnxruntime': ('onnxruntime', 'running ONNX models'),
    'onnxscript': ('onnxscript', "torch.onnx's exporter (torch.onnx.export(..., dynamo=True))"),
}


class MissingDependencyError(ImportError):
    """A deploy package is not installed; the message names it and the fix."""


def require(module: str) -> ModuleType:
    """Import ``module`` (a key of ``PACKAGES``) or raise ``MissingDependencyError``."""
    package, purpose = PACKAGES[module]
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingDependencyError(
            f'{package} is not installed; it is needed for {purpose}: '
            + INSTALL_HINT.format(package=package) + f' ({err})') from err
