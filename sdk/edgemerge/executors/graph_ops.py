"""The math of the format-v2 ops and activations in numpy (docs/FORMAT.md "Multi-input ops", "Activations"),
batch first (NHWC with a leading N): the Python reference of what `runtime_c/src/ref/graph_ref.c` and
`em_activate` compute, for executors (numpy_exec's op table registers these) and tests.

Computed in float64 like the rest of the numpy executor; every function takes and returns arrays whose
trailing three axes are a value's (h, w, c).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgemerge.emm.constants import Act, Op
from edgemerge.emm.shapes import Pads


def _relu6(x: np.ndarray) -> np.ndarray:
    # np.clip keeps NaN, as FORMAT.md "Non-finite values" requires
    return np.clip(x, 0.0, 6.0)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):        # exp(+large) = inf gives 1 / inf = 0, the spec's value at -Inf
        return 1.0 / (1.0 + np.exp(-x))


def activate(x: np.ndarray, activation: Act | int) -> np.ndarray:
    """Every activation of FORMAT.md, by its formula (hard-sigmoid = relu6(x + 3) / 6, as TF / TFLite and, in
    exact arithmetic, Keras 3's clip(x / 6 + 0.5, 0, 1))."""
    x = np.asarray(x, np.float64)
    act = Act(int(activation))
    with np.errstate(invalid="ignore"):     # -Inf · 0 = NaN for hard-swish / swish, as specified
        if act == Act.RELU:
            return np.where(x <= 0.0, 0.0, x)   # NaN stays NaN (np.where on a False comparison), -0 -> +0
        if act == Act.RELU6:
            return np.where(x <= 0.0, 0.0, np.where(x > 6.0, 6.0, x))
        if act == Act.SIGMOID:
            return _sigmoid(x)
        if act == Act.HARD_SIGMOID:
            return _relu6(x + 3.0) / 6.0
        if act == Act.HARD_SWISH:
            return x * (_relu6(x + 3.0) / 6.0)
        if act == Act.SWISH:
            return x * _sigmoid(x)
    return x


def add(inputs: Sequence[np.ndarray], activation: Act | int = Act.NONE) -> np.ndarray:
    """ADD: equal shapes, summed in input order."""
    shapes = {tuple(np.shape(v)) for v in inputs}
    if len(shapes) != 1:
        raise ValueError(f"ADD needs equal shapes, got {sorted(shapes)}")
    total = np.asarray(inputs[0], np.float64)
    for v in inputs[1:]:
        total = total + np.asarray(v, np.float64)
    return activate(total, activation)


def concat(inputs: Sequence[np.ndarray], activation: Act | int = Act.NONE) -> np.ndarray:
    """CONCAT along channels (the last axis); spatial sizes must agree."""
    if len({tuple(np.shape(v)[:-1]) for v in inputs}) != 1:
        raise ValueError(f"CONCAT joins equal spatial sizes, got {[np.shape(v) for v in inputs]}")
    return activate(np.concatenate([np.asarray(v, np.float64) for v in inputs], axis=-1), activation)


def mul(a: np.ndarray, b: np.ndarray, activation: Act | int = Act.NONE) -> np.ndarray:
    """MUL: equal shapes, or one input (…, 1, 1, C) scaling every pixel of the other (squeeze-and-excite)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    sa, sb = a.shape[-3:], b.shape[-3:]
    if not (sa == sb or (sa[2] == sb[2] and (sa[:2] == (1, 1) or sb[:2] == (1, 1)))):
        raise ValueError(f"MUL broadcasts only equal shapes or (1, 1, C) with (H, W, C), got {sa} and {sb}")
    return activate(a * b, activation)


def pad(x: np.ndarray, pads: Pads, activation: Act | int = Act.NONE) -> np.ndarray:
    """PAD with zeros (then the activation, so padding becomes act(0))."""
    top, left, bottom, right = (int(p) for p in pads)
    widths = [(0, 0)] * (np.ndim(x) - 3) + [(top, bottom), (left, right), (0, 0)]
    return activate(np.pad(np.asarray(x, np.float64), widths), activation)


def run(op: int, inputs: Sequence[np.ndarray], activation: Act | int, pads: Pads = (0, 0, 0, 0)) -> np.ndarray:
    """One node of a v2 op (ADD, CONCAT, MUL, PAD) on batch-first inputs; executors dispatch these ops here."""
    if op == Op.ADD:
        return add(inputs, activation)
    if op == Op.CONCAT:
        return concat(inputs, activation)
    if op == Op.MUL:
        if len(inputs) != 2:
            raise ValueError(f"MUL takes 2 inputs, got {len(inputs)}")
        return mul(inputs[0], inputs[1], activation)
    if op == Op.PAD:
        return pad(inputs[0], pads, activation)
    raise ValueError(f"op {op!r} is not a graph op")


OPS = frozenset({Op.ADD, Op.CONCAT, Op.MUL, Op.PAD})   # the ops `run` computes
