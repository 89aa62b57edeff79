"""Labelled data files: `.npz` with `x` (float32 NHWC) and `y` (integer class labels)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgemerge.errors import EdgemergeError


@dataclass
class LabelledData:
    x: np.ndarray
    y: np.ndarray
    path: Path


def load_labelled(path: str | os.PathLike, input_shape: tuple[int, ...] | None = None) -> LabelledData:
    """Loads and checks a data file; `input_shape` (h, w, c) is the shape one sample must have."""
    path = Path(path)
    if not path.is_file():
        raise EdgemergeError(f"data file {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ("x", "y") if k not in npz.files]
            if missing:
                raise EdgemergeError(f"data file {path}: missing array(s) {', '.join(missing)} "
                                     f"(has {', '.join(npz.files) or 'none'}); expected x (NHWC) and y (labels)")
            x, y = npz["x"], npz["y"]
    except (OSError, ValueError) as e:
        raise EdgemergeError(f"data file {path}: not a readable .npz ({e})") from None
    if x.ndim != 4:
        raise EdgemergeError(f"data file {path}: x has shape {x.shape}, expected (N, H, W, C)")
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
        raise EdgemergeError(f"data file {path}: samples have shape {tuple(x.shape[1:])}, "
                             f"the model expects {tuple(input_shape)}")
    y = np.asarray(y).reshape(-1)
    if y.shape[0] != x.shape[0]:
        raise EdgemergeError(f"data file {path}: {x.shape[0]} samples in x but {y.shape[0]} labels in y")
    if not np.issubdtype(y.dtype, np.integer):
        raise EdgemergeError(f"data file {path}: y has dtype {y.dtype}, expected integer class labels")
    return LabelledData(np.ascontiguousarray(x, dtype=np.float32), y.astype(np.int64), path)


def parse_task_pairs(values: tuple[str, ...] | list[str], what: str) -> dict[str, str]:
    """Parses TASK=PATH arguments into an ordered dict, rejecting malformed or repeated tasks."""
    out: dict[str, str] = {}
    for item in values:
        task, sep, path = item.partition("=")
        if not sep or not task or not path:
            raise EdgemergeError(f"{what} {item!r}: expected TASK=PATH")
        if task in out:
            raise EdgemergeError(f"{what}: task {task!r} given twice")
        out[task] = path
    return out
