"""Labelled data files: `.npz` with `x` (float32 NHWC) and `y` (integer class labels), and the input guards every
path that takes data in shares (README "Input data"): `check_input_array` for samples, `check_labels` for labels.

What is refused, each with one message naming the file/array and the fix:
- `x` that is not real numbers (strings, complex, object, bool) and `x` of uint8: images stored as 0..255 are
  almost never what a model was trained on; edgemerge refuses them rather than guessing a scale (x/255, or
  mean/std normalisation?), and says how to scale them;
- NaN or +-Inf anywhere in `x` (the C kernels propagate NaN like TensorFlow, so a NaN sample gives NaN logits; in
  calibration data it poisons the shared codebooks of every task): refused with the count;
- one-hot `y` (N, K): refused with the argmax hint; labels that are not integers;
- an empty data set; a `.npy` (one array) where an `.npz` (x and y) is expected.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgemerge.errors import EdgemergeError
from edgemerge.inputs import DataError, check_input_array
from edgemerge.text import printable

__all__ = ["DataError", "LabelledData", "check_data_files", "check_data_path", "check_input_array", "check_labels",
           "load_labelled", "load_samples", "parse_task_pairs"]


@dataclass
class LabelledData:
    x: np.ndarray
    y: np.ndarray
    path: Path

    def __str__(self) -> str:        # messages name the file the arrays came from, not the arrays
        return printable(self.path)


def check_labels(y, n_samples: int, where: str) -> np.ndarray:
    """Integer class labels, one per sample; one-hot (N, K) and float labels refused with the fix."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[0] == n_samples and y.shape[1] > 1:
        raise DataError(f"{where} looks one-hot {tuple(y.shape)}: give integer labels, e.g. y.argmax(1)")
    if y.dtype.kind not in "iu":
        raise DataError(f"{where} has dtype {y.dtype}, expected integer class labels")
    y = y.reshape(-1)
    if y.shape[0] != n_samples:
        raise DataError(f"{where} has {y.shape[0]} labels for {n_samples} samples in x")
    return y.astype(np.int64)


def _read_arrays(path: Path, names: tuple[str, ...], what: str) -> list[np.ndarray]:
    """The arrays `names` of the .npz at `path` (checked: a regular file, an .npz not a .npy, no pickles)."""
    shown = f"{what} {printable(path)}"
    check_data_path(path, what)
    if not zipfile.is_zipfile(path):
        try:
            with open(path, "rb") as f:
                head = f.read(6)
        except OSError as e:
            raise DataError(f"{shown}: cannot read ({e.strerror})") from None
        if head == b"\x93NUMPY":
            raise DataError(f"{shown}: a .npy file (one array), but an .npz with "
                            f"{' and '.join(names)} is needed: np.savez(path, {', '.join(f'{n}={n}' for n in names)})")
        raise DataError(f"{shown}: not an .npz file (expected one saved by np.savez with {' and '.join(names)})")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in names if k not in npz.files]
            if missing:
                raise DataError(f"{shown}: missing array(s) {', '.join(missing)} (has "
                                f"{', '.join(printable(f) for f in npz.files) or 'none'}); expected x (NHWC samples)"
                                + (" and y (labels)" if "y" in names else ""))
            return [npz[k] for k in names]
    except EdgemergeError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, NotImplementedError) as e:
        raise DataError(f"{shown}: not a readable .npz ({printable(e)})") from None


def load_samples(path: str | os.PathLike | LabelledData, what: str = "data file") -> np.ndarray:
    """The checked `x` of a data file (float32 NHWC; `y` not needed), e.g. for `bench --data`; of data
    already loaded (a LabelledData, checked when it was loaded), its `x`."""
    if isinstance(path, LabelledData):
        return path.x
    path = Path(path)
    (x,) = _read_arrays(path, ("x",), what)
    x = check_input_array(x, f"{what} {printable(path)}: x")
    if x.ndim != 4:
        raise DataError(f"{what} {printable(path)}: x has shape {x.shape}, expected (N, H, W, C)")
    return x


def load_labelled(path: str | os.PathLike | LabelledData, input_shape: tuple[int, ...] | None = None) -> LabelledData:
    """Loads and checks a data file; `input_shape` (h, w, c) is the shape one sample must have. Data already
    loaded (a LabelledData: e.g. an ONNX task's NCHW calibration file in NHWC, workflows/pipeline) is not read
    again, only its shape checked."""
    if isinstance(path, LabelledData):
        x, y, path = path.x, path.y, path.path
        shown = printable(path)
    else:
        path = Path(path)
        shown = printable(path)
        x, y = _read_arrays(path, ("x", "y"), "data file")
        x = check_input_array(x, f"data file {shown}: x")
    if x.ndim != 4:
        raise DataError(f"data file {shown}: x has shape {x.shape}, expected (N, H, W, C)")
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
        raise DataError(f"data file {shown}: samples have shape {tuple(x.shape[1:])}, "
                        f"the model expects {tuple(input_shape)}")
    y = check_labels(y, x.shape[0], f"data file {shown}: y")
    return LabelledData(x, y, path)


def check_data_path(path: str | os.PathLike, what: str = "data file") -> Path:
    """Refuses a path that is missing or not a regular file (a folder, a FIFO that would block), cheaply:
    called on every --calib/--data file before any heavy import."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{what} {printable(path)}: no such file")
    if not path.is_file():
        raise DataError(f"{what} {printable(path)}: not a regular file")
    return path


def check_data_files(pairs: dict[str, str], what: str = "--data") -> None:
    """Loads and checks every TASK=NPZ file now (dtype, finite values, labels, non-empty), before a command imports
    TensorFlow or does any work; the shape against the model is checked later, where the model is known."""
    for task, path in pairs.items():
        load_labelled(path)


def parse_task_pairs(values: tuple[str, ...] | list[str], what: str) -> dict[str, str]:
    """Parses TASK=PATH arguments into an ordered dict, rejecting malformed or repeated tasks."""
    out: dict[str, str] = {}
    for item in values:
        task, sep, path = item.partition("=")
        if not sep or not task or not path:
            raise EdgemergeError(f"{what} {printable(item)!r}: expected TASK=PATH")
        if task in out:
            raise EdgemergeError(f"{what}: task {printable(task)!r} given twice")
        out[task] = path
    return out
