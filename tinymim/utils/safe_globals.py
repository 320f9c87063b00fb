"""Let mmengine checkpoints load under torch's ``weights_only=True``.

torch >= 2.6 unpickles checkpoints with ``weights_only=True``. mmengine
0.10.x stores its ``MessageHub`` (``HistoryBuffer`` objects holding numpy
arrays and scalars) in every checkpoint, so ``resume`` fails. We allow
exactly those classes instead of turning ``weights_only`` off.

``HistoryBuffer.__getstate__`` also pickles its class-wide table of
statistics functions, which unpickling can only rebuild through
``getattr``. Allowing ``getattr`` would let a checkpoint reach arbitrary
attributes, so instead buffers are pickled without that table:
``__setstate__`` re-registers the defaults, and custom statistics are
registered again by the code that defines them on import.
"""
import torch


def mmengine_safe_globals() -> list:
    import numpy as np
    from mmengine.logging import HistoryBuffer

    try:  # numpy >= 2 moved the pickled reconstruct helpers to numpy._core
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    from _codecs import encode  # numpy pickles raw array bytes via codecs.encode
    dtypes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.float16, np.int64, np.int32,
                                          np.int8, np.uint8, np.bool_)]
    return [HistoryBuffer, np.ndarray, np.dtype, _reconstruct, scalar, encode, *dtypes]


def _history_buffer_state(self) -> dict:
    return {k: v for k, v in self.__dict__.items() if k != 'statistics_methods'}


def register_mmengine_safe_globals() -> None:
    from mmengine.logging import HistoryBuffer

    HistoryBuffer.__getstate__ = _history_buffer_state
    if hasattr(torch.serialization, 'add_safe_globals'):
        torch.serialization.add_safe_globals(mmengine_safe_globals())
