"""Let mmengine checkpoints load under torch's ``weights_only=True``.

torch >= 2.6 unpickles checkpoints with ``weights_only=True``. mmengine
0.10.x stores its ``MessageHub`` (``HistoryBuffer`` objects holding numpy
arrays and scalars) in every checkpoint, so ``resume`` fails. We allow
exactly those classes instead of turning ``weights_only`` off.
"""
import torch


def mmengine_safe_globals() -> list:
    import numpy as np
    from mmengine.logging import HistoryBuffer

    try:  # numpy >= 2 moved the pickled reconstruct helpers to numpy._core
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    dtypes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.float16, np.int64, np.int32,
                                          np.int8, np.uint8, np.bool_)]
    return [HistoryBuffer, np.ndarray, np.dtype, _reconstruct, scalar, *dtypes]


def register_mmengine_safe_globals() -> None:
    if hasattr(torch.serialization, 'add_safe_globals'):
        torch.serialization.add_safe_globals(mmengine_safe_globals())
