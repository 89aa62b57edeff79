"""Input guards shared by every path that takes samples in (the C runtime's Python face, data files): a low
module so that `runtime.py` and `datasets.py` both use it (datasets.py has the rules in its docstring)."""
from __future__ import annotations

import numpy as np

from edgemerge.errors import EdgemergeError


class DataError(EdgemergeError):
    """Input data (a file or an array given to the Python API) that edgemerge refuses to use."""


def check_input_array(x, where: str, input_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """`x` as a C-contiguous float32 array after the input guards (the rules: datasets.py's docstring); `where` names the
    array in messages ("data file a.npz: x", "Runtime.run('fashion'): x"). Accepts float16/32/64 and signed or
    wide integer samples (their values are used as they are); refuses uint8, non-numbers and non-finite values."""
    x = np.asarray(x)
    kind = x.dtype.kind
    if kind in "USOVMm" or kind == "b":
        raise DataError(f"{where} has dtype {x.dtype}: expected real numbers (float32 samples)")
    if kind == "c":
        raise DataError(f"{where} is complex ({x.dtype}): expected real numbers (float32 samples); "
                        "the imaginary part would be dropped")
    if x.dtype == np.uint8:
        lo, hi = (int(x.min()), int(x.max())) if x.size else (0, 0)
        raise DataError(f"{where} is uint8 ({lo}..{hi}); scale it to the float range the model was trained on, "
                        "e.g. x/255, and save it as float32")
    if x.size == 0:
        raise DataError(f"{where} is empty (shape {tuple(x.shape)}): no samples")
    if kind == "f":
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        if bad:
            n_nan = int(np.count_nonzero(np.isnan(x)))
            raise DataError(f"{where} has {bad} non-finite value(s) ({n_nan} NaN, {bad - n_nan} +-Inf) of "
                            f"{x.size}: clean or drop those samples (edgemerge refuses non-finite input data)")
    if input_shape is not None and (x.ndim not in (3, 4) or tuple(x.shape[-3:]) != tuple(input_shape)):
        raise DataError(f"{where} has shape {tuple(x.shape)}; expected (N, {', '.join(map(str, input_shape))})")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if kind in "iu" and not np.all(np.isfinite(x)):  # e.g. int64 values past float32's range
        raise DataError(f"{where} has values that do not fit in float32")
    return x
