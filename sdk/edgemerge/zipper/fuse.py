"""Initialising a newly shared layer: averaging (paper Eq. 1), BatchNorm statistics, Hungarian filter alignment.

Initialisation (Wu, Chan & Chen, EMC² 2019, Eq. 1): the mean of the paired layers' current weights,
W = (W_a + W_b) / 2 (computed in float64, rounded once to float32), likewise the bias. The importer folds
BatchNorm into the preceding layer; `bn="fold"` averages the folded weights, `bn="stats"` (the default,
the better of the two on the example) averages the unfolded weights and each BatchNorm parameter (γ, β,
moving mean and variance) separately and folds the averages (the layers' current values are unfolded with
their own BatchNorm, so later rounds work on calibrated weights too; layers without a BatchNorm, and models
that are not Keras files, fall back to "fold"). `align="hungarian"` first permutes the output
channels of each conv of the newly shared block of the other models to best match the first model's filters
(`scipy.optimize.linear_sum_assignment` on squared distances), carrying the permutation into the layers
that read them, which leaves those models' functions unchanged. In graphs only convs whose output channels
reach conv/dense inputs through channel-wise layers alone are matched (`_carry_plan`): in an inverted-residual
block the expand conv (its channels are internal to the block), not the project conv, whose channels are the
residual stream's (the skip connection and every later block's Add would need the same permutation).

`ZipState` holds every layer's current values (folded float32), its BatchNorm and the encoded shared layers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from edgemerge.importers import SourceModel

BN_MODES = ("fold", "stats")
ALIGN_MODES = ("none", "hungarian")
# Measured on examples/mobilenets (README there): averaging the BatchNorm statistics gives the better start
# (held-out accuracy before calibration +4.6 / +5.5 points in round 1 for block / pointwise) and a slightly
# lower mean worst-task drop after calibration (1.90 vs 2.19 points block, 0.26 vs 0.31 pointwise).
DEFAULT_BN = "stats"
DEFAULT_ALIGN = "none"


@dataclass
class BatchNorm:
    """A folded BatchNorm's parameters, per output channel of the layer it was folded into."""
    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    variance: np.ndarray
    epsilon: float

    @property
    def scale(self) -> np.ndarray:
        return self.gamma / np.sqrt(self.variance + self.epsilon)

    def permuted(self, order: np.ndarray) -> "BatchNorm":
        return BatchNorm(self.gamma[order], self.beta[order], self.mean[order], self.variance[order], self.epsilon)


@dataclass
class Encoded:
    """A shared point-wise layer stored as LUT_CONV2D: codebook [S, C, r], index map [1, 1, S, Cout]."""
    codebook: np.ndarray
    index: np.ndarray
    seg_len: int
    codewords: int
    relative_error: float = 0.0


@dataclass
class ZipState:
    """Current values of every weighted layer of every task (folded float32), by layer position. Layers
    shared after a round hold the same arrays for every task."""
    weights: dict[str, dict[int, np.ndarray]]
    biases: dict[str, dict[int, np.ndarray]]
    batch_norms: dict[str, dict[int, BatchNorm]] = field(default_factory=dict)
    encoded: dict[int, Encoded] = field(default_factory=dict)
    shared: set[int] = field(default_factory=set)    # positions shared so far

    @staticmethod
    def from_models(models: Mapping[str, SourceModel]) -> "ZipState":
        weights, biases = {}, {}
        for task, model in models.items():
            weights[task], biases[task] = {}, {}
            for i, layer in enumerate(model.layers):
                if layer.weights is None:
                    continue
                weights[task][i] = np.ascontiguousarray(layer.weights, np.float32)
                bias = layer.bias if layer.bias is not None else np.zeros(layer.out_shape[2], np.float32)
                biases[task][i] = np.ascontiguousarray(bias, np.float32)
        return ZipState(weights, biases)


def load_batch_norms(models: Mapping[str, SourceModel]) -> dict[str, dict[int, BatchNorm]]:
    """The BatchNorm folded into each layer, read from the Keras files (for bn="stats")."""
    import keras

    out: dict[str, dict[int, BatchNorm]] = {}
    for task, model in models.items():
        out[task] = {}
        if Path(model.path).suffix.lower() not in (".keras", ".h5", ".hdf5"):
            continue            # no BatchNorm to read: average_layer falls back to the folded weights
        keras_model = keras.models.load_model(model.path, compile=False, safe_mode=True)
        for i, layer in enumerate(model.layers):
            if layer.weights is None:
                continue
            for name in layer.fused:
                bn = keras_model.get_layer(name)
                if type(bn).__name__ != "BatchNormalization":
                    continue
                channels = layer.out_shape[2]
                gamma = np.array(bn.gamma.numpy(), np.float64) if bn.scale else np.ones(channels)
                beta = np.array(bn.beta.numpy(), np.float64) if bn.center else np.zeros(channels)
                out[task][i] = BatchNorm(gamma, beta, np.array(bn.moving_mean.numpy(), np.float64),
                                         np.array(bn.moving_variance.numpy(), np.float64), float(bn.epsilon))
    return out


def _channel_scale(weights: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """`scale` (one value per output channel) shaped to multiply `weights`: depthwise [KH, KW, C, M] has
    output channel c·M + m; conv [.., Cout] and dense [In, Out] have it last."""
    if weights.ndim == 4 and weights.shape[3] * weights.shape[2] == scale.size and weights.shape[3] != scale.size:
        return scale.reshape(weights.shape[2], weights.shape[3])
    return scale


def _is_depthwise(model: SourceModel, position: int) -> bool:
    return model.layers[position].kind == "depthwise"


def average_layer(model: SourceModel, position: int, state: ZipState, tasks: Sequence[str], bn: str
                  ) -> tuple[np.ndarray, np.ndarray, BatchNorm | None]:
    """Eq. 1: the shared initial (weights, bias) of the layer at `position`, and its averaged BatchNorm
    (bn="stats" only). `model` is any of the pair (for the layer's kind)."""
    ws = [state.weights[t][position].astype(np.float64) for t in tasks]
    bs = [state.biases[t][position].astype(np.float64) for t in tasks]
    norms = [state.batch_norms.get(t, {}).get(position) for t in tasks]
    if bn == "fold" or any(n is None for n in norms):
        return (np.mean(ws, axis=0).astype(np.float32), np.mean(bs, axis=0).astype(np.float32), None)
    depthwise = _is_depthwise(model, position)
    unfolded_w, unfolded_b = [], []
    for w, b, n in zip(ws, bs, norms):
        s = n.scale
        s = np.where(np.abs(s) < 1e-12, 1e-12, s)
        unfolded_w.append(w / (_channel_scale(w, s) if depthwise else s))
        unfolded_b.append((b - n.beta) / s + n.mean)
    mean_bn = BatchNorm(np.mean([n.gamma for n in norms], axis=0), np.mean([n.beta for n in norms], axis=0),
                        np.mean([n.mean for n in norms], axis=0), np.mean([n.variance for n in norms], axis=0),
                        norms[0].epsilon)
    s = mean_bn.scale
    w = np.mean(unfolded_w, axis=0)
    w = w * (_channel_scale(w, s) if depthwise else s)
    b = (np.mean(unfolded_b, axis=0) - mean_bn.mean) * s + mean_bn.beta
    return w.astype(np.float32), b.astype(np.float32), mean_bn


# Layers that read a value channel by channel: a permutation of their input channels passes through them.
_CHANNELWISE = ("depthwise", "pad", "activation", "max_pool", "avg_pool", "global_avg_pool", "flatten")


def _carry_plan(model: SourceModel, position: int) -> list[int] | None:
    """The layers an output-channel permutation of layer `position` must be carried into, in topological
    order: channel-wise layers pass it on, conv and dense layers absorb it (input channels). None when it
    cannot be carried without changing the model's function: a join (residual Add, Concatenate, the MUL of
    a squeeze-and-excite) or the model's output is reached. In an inverted-residual block that leaves the
    expand conv (its channels are internal to the block: depthwise, then the project conv's input) and
    excludes the project conv (its channels also feed the skip connection and the next blocks)."""
    readers = model.consumers()
    plan, stack = set(), [position]
    while stack:
        q = stack.pop()
        after = readers.get(model.layers[q].name, [])
        if not after:
            return None
        for r in after:
            kind = model.layers[r].kind
            if kind in ("conv", "dense"):
                plan.add(r)
            elif kind in _CHANNELWISE:
                if r not in plan:
                    plan.add(r)
                    stack.append(r)
            else:
                return None
    return sorted(plan)


def _permute_inputs(model: SourceModel, state: ZipState, task: str, start: int, order: np.ndarray) -> None:
    """Carries an output-channel permutation of layer `start` into the layers `_carry_plan` lists:
    channel-wise layers (depthwise, pads, pools, activations) are permuted and pass it on; conv and dense
    layers have their input channels permuted."""
    orders = {start: order}
    for i in _carry_plan(model, start) or ():
        layer = model.layers[i]
        order = orders[model.position(model.inputs_of(i)[0])]
        if layer.kind == "depthwise":
            w, b = state.weights[task][i], state.biases[task][i]
            m = w.shape[3]
            state.weights[task][i] = np.ascontiguousarray(w[:, :, order, :])
            out_order = (order[:, None] * m + np.arange(m)[None, :]).reshape(-1)
            state.biases[task][i] = np.ascontiguousarray(b[out_order])
            if i in state.batch_norms.get(task, {}):
                state.batch_norms[task][i] = state.batch_norms[task][i].permuted(out_order)
            orders[i] = out_order
        elif layer.kind == "conv":
            state.weights[task][i] = np.ascontiguousarray(state.weights[task][i][:, :, order, :])
        elif layer.kind == "dense":
            h, w_, c = layer.in_shape
            flat = np.arange(h * w_ * c).reshape(h, w_, c)[:, :, order].reshape(-1) if order.size == c else order
            state.weights[task][i] = np.ascontiguousarray(state.weights[task][i][flat, :])
        elif layer.kind == "flatten":
            h, w_, c = layer.in_shape
            orders[i] = np.arange(h * w_ * c).reshape(h, w_, c)[:, :, order].reshape(-1)
        else:
            orders[i] = order


def hungarian_align(models: Mapping[str, SourceModel], state: ZipState, positions: Sequence[int]) -> dict:
    """Permutes, for every task but the first, the output channels of each conv among `positions` (in order)
    to match the first task's filters, and carries each permutation into the layers after it. Convs whose
    permutation cannot be carried (`_carry_plan`: their output reaches a residual Add, a concat or a
    multiply) are left as they are. Returns {position: {task: fraction of channels that moved}} for the
    convs that were matched."""
    from scipy.optimize import linear_sum_assignment

    tasks = list(models)
    ref = tasks[0]
    moved: dict[int, dict[str, float]] = {}
    for p in positions:
        layer = models[ref].layers[p]
        if layer.kind != "conv":
            continue            # depthwise channels follow their input; dense layers are never in the trunk
        if _carry_plan(models[ref], p) is None:
            continue            # e.g. a project conv: its channels are the residual stream's
        a = np.concatenate([state.weights[ref][p].reshape(-1, layer.out_shape[2]),
                            state.biases[ref][p][None, :]]).astype(np.float64).T        # [Cout, features]
        moved[p] = {}
        for task in tasks[1:]:
            b = np.concatenate([state.weights[task][p].reshape(-1, layer.out_shape[2]),
                                state.biases[task][p][None, :]]).astype(np.float64).T
            cost = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
            _, order = linear_sum_assignment(cost)        # row i (a's channel i) <- b's channel order[i]
            moved[p][task] = float(np.mean(order != np.arange(order.size)))
            if not moved[p][task]:
                continue
            state.weights[task][p] = np.ascontiguousarray(state.weights[task][p][..., order])
            state.biases[task][p] = np.ascontiguousarray(state.biases[task][p][order])
            if p in state.batch_norms.get(task, {}):
                state.batch_norms[task][p] = state.batch_norms[task][p].permuted(order)
            _permute_inputs(models[task], state, task, p, order)
    return moved
