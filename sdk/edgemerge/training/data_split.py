"""Calibration data: a deterministic train / held-out split per task, and the loaded arrays."""
from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from edgemerge.emm.graph import MergedGraph
from edgemerge.errors import EdgemergeError


def split_calibration(n: int, *, task: str, seed: int = 0, calib_fraction: float = 1.0,
                      val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices) of a task's calibration file of `n` samples, deterministic in
    (task, seed). The held-out part (`val_fraction` of the file) is taken first and does not depend on
    `calib_fraction`, so runs with different fractions (the paper's Fig. 4) are judged on the same samples;
    `calib_fraction` then keeps that share of the rest. Smaller fractions give subsets of larger ones."""
    if not 0.0 < calib_fraction <= 1.0:
        raise EdgemergeError(f"calib_fraction must be in (0, 1], got {calib_fraction}")
    if not 0.0 <= val_fraction < 1.0:
        raise EdgemergeError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(task.encode("utf-8"))])
    order = rng.permutation(n)
    n_val = min(n - 1, max(1, int(round(val_fraction * n)))) if val_fraction > 0 and n > 1 else 0
    pool = order[n_val:]
    n_train = max(1, int(round(calib_fraction * len(pool)))) if len(pool) else 0
    return np.sort(pool[:n_train]), np.sort(order[:n_val])


@dataclass
class TaskData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    held_out: bool


def load_task_data(graph: MergedGraph, calib: Mapping[str, str | os.PathLike], *, seed: int,
                   calib_fraction: float, val_fraction: float) -> dict[str, TaskData]:
    """Every task's calibration file, checked against the graph and split by `split_calibration`."""
    from edgemerge.datasets import load_labelled

    out = {}
    for task in calib:
        t = graph.task(task)
        data = load_labelled(calib[task], graph.inputs[t.input])
        if len(data.y) < 2:
            raise EdgemergeError(f"calibration data {calib[task]}: {len(data.y)} sample(s), need at least 2")
        if data.y.min() < 0 or data.y.max() >= t.classes:
            raise EdgemergeError(f"calibration data {calib[task]}: labels outside 0..{t.classes - 1} "
                                 f"for task {task!r}")
        tr, va = split_calibration(len(data.y), task=task, seed=seed, calib_fraction=calib_fraction,
                                   val_fraction=val_fraction)
        held_out = len(va) > 0
        if not held_out:          # no held-out part asked for: judge (and pick checkpoints) on the train part
            va = tr
        out[task] = TaskData(data.x[tr], data.y[tr], data.x[va], data.y[va], held_out)
    return out
