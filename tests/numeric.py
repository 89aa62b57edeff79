"""Comparison of computed outputs against a reference, shared by the executor, importer and runtime tests."""
from __future__ import annotations

import numpy as np


def max_rel_err(a, b) -> float:
    """max |a - b| relative to max |b| (the reference), in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))
