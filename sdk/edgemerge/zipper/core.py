"""Zippering: two trained models of the same architecture fused block by block (Wu, Chan & Chen, "On
Merging MobileNets for Efficient Multitask Inference", EMC² 2019).

The models read the same input and have the same trunk (layer by layer: kind, shapes, kernel, stride,
padding, activation); their tails (pooling, heads) may differ. The trunk is cut into blocks, block j ending
at the j-th point-wise layer (a 1×1 conv right after a depthwise conv); block 1 also holds the layers
before the first depthwise conv (the first conv). Round k = 1..L shares blocks 1..k and calibrates:

- `share="pointwise"` (the paper): the point-wise convs of blocks 1..k are ONE weight tensor and ONE bias
  tensor used by both tasks' nodes; everything else (first conv, depthwise convs, tails) stays per task.
  Each task keeps its own chain of nodes reading the shared input: smaller file, same compute.
- `share="block"`: every layer of blocks 1..k is ONE node computed once (`em_run_all`) whose output forks
  into the per-task rest: smaller file and less compute.

Initialisation of a newly shared layer (paper Eq. 1): the mean of the paired layers' current weights,
W = (W_a + W_b) / 2 (computed in float64, rounded once to float32), likewise the bias. The importer folds
BatchNorm into the preceding layer; `bn="fold"` averages the folded weights, `bn="stats"` (the default,
the better of the two on the example) averages the unfolded weights and each BatchNorm parameter (γ, β,
moving mean and variance) separately and folds the averages (the layers' current values are unfolded with
their own BatchNorm, so later rounds work on calibrated weights too; layers without a BatchNorm, and models
that are not Keras files, fall back to "fold"). `align="hungarian"` first permutes the output
channels of each conv of the newly shared block of the other models to best match the first model's filters
(`scipy.optimize.linear_sum_assignment` on squared distances), carrying the permutation into the layers
that read them, which leaves those models' functions unchanged.

Layers shared in an earlier round keep their calibrated values; calibration (`calibrate.calibrate` with the
paper's loss: each task's cross-entropy plus the relative L1 mismatch between every shared layer's output
and the original model's, the L1 terms given as `l1_targets`; `l1_scope="all"` adds every per-task layer's
output against its original's) starts each round from the previous round's
weights. `encode` (a merge preset) additionally codebook-encodes the shared point-wise layers (LUT_CONV2D),
one codebook and one index map used by both tasks' nodes; encoded layers stay encoded in later rounds and
calibration trains their codebooks.

`zipper_files` writes one `.emm` per round (kNN.emm, k00 = the unmerged pair in one file), `report.json`
and `tradeoff.png` into a folder, all atomically; `pick` copies the deepest round within an accuracy budget.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from edgemerge import emm
from edgemerge.emm.constants import NONE, Keys, Op
from edgemerge.emm.graph import MergedGraph, Node, Task, Tensor
from edgemerge.errors import EdgemergeError
from edgemerge.importers import SourceLayer, SourceModel
from edgemerge.merging.merge import source_metadata

SHARE_MODES = ("pointwise", "block")
BN_MODES = ("fold", "stats")
ALIGN_MODES = ("none", "hungarian")
DEFAULT_SHARE = "pointwise"
# Measured on examples/mobilenets (README there): averaging the BatchNorm statistics gives the better start
# (held-out accuracy before calibration +4.6 / +5.5 points in round 1 for block / pointwise) and a slightly
# lower mean worst-task drop after calibration (1.90 vs 2.19 points block, 0.26 vs 0.31 pointwise).
DEFAULT_BN = "stats"
DEFAULT_ALIGN = "none"
# The L1 terms of each round's calibration: the shared layers' outputs against each original's (the paper), or
# every layer that has an original counterpart, each task's own layers included (its branch is then held near
# its original model's function, a distillation term: see examples/zipper_heldout/README.md for when it helps).
L1_SCOPES = ("shared", "all")
DEFAULT_L1_SCOPE = "shared"
REPORT_NAME = "report.json"
PLOT_NAME = "tradeoff.png"
REPORT_FORMAT = "edgemerge.zipper.report"
REPORT_VERSION = 1
LATENCY_SAMPLES = 200        # samples timed per model (one em_run_all / one TFLite invoke each)
LATENCY_REPEATS = 3          # passes over them; the fastest pass's per-sample median is kept

_SPATIAL_KINDS = ("conv", "depthwise", "max_pool", "avg_pool")
_OPS = {"conv": Op.CONV2D, "depthwise": Op.DEPTHWISE_CONV2D, "dense": Op.DENSE, "max_pool": Op.MAX_POOL,
        "avg_pool": Op.AVG_POOL, "global_avg_pool": Op.GLOBAL_AVG_POOL, "flatten": Op.RESHAPE,
        "activation": Op.ACTIVATION}

try:
    from edgemerge import __version__ as TOOL_VERSION
except ImportError:          # pragma: no cover - package without a version
    TOOL_VERSION = "0.1.0"


def _file_name(model: SourceModel) -> str:
    return Path(model.path).name if model.path else model.name


# ================================================================================================
# The pair's common architecture
# ================================================================================================
@dataclass(frozen=True)
class Block:
    index: int                        # 1-based
    positions: tuple[int, ...]        # layer positions in the chain
    pointwise: int                    # position of the block's point-wise conv


@dataclass
class PairLayout:
    """Where the blocks of the models' common trunk are (layer positions, the same in every model)."""
    tasks: tuple[str, ...]
    blocks: list[Block]

    @property
    def depth(self) -> int:
        """L: the number of blocks (rounds)."""
        return len(self.blocks)

    def shared_positions(self, share: str, k: int) -> list[int]:
        """Positions whose layers are shared after round k."""
        if share not in SHARE_MODES:
            raise EdgemergeError(f"unknown share mode {share!r} (expected {' or '.join(SHARE_MODES)})")
        if not 0 <= k <= self.depth:
            raise EdgemergeError(f"k={k} is outside 0..{self.depth} (the models have {self.depth} blocks)")
        if share == "pointwise":
            return [b.pointwise for b in self.blocks[:k]]
        return [p for b in self.blocks[:k] for p in b.positions]


def _describe(layer: SourceLayer) -> str:
    text = f"{layer.kind}"
    if layer.kind in _SPATIAL_KINDS:
        text += f" {layer.kernel[0]}x{layer.kernel[1]} stride {layer.stride[0]}x{layer.stride[1]} pads {layer.pads}"
    text += f", in {'x'.join(map(str, layer.in_shape))}, out {'x'.join(map(str, layer.out_shape))}"
    if layer.weights is not None:
        text += f", weights {'x'.join(map(str, layer.weights.shape))}"
    return text + f", activation {layer.activation.name.lower()}"


def _signature(layer: SourceLayer) -> tuple:
    return (layer.kind, tuple(layer.in_shape), tuple(layer.out_shape), tuple(layer.kernel), tuple(layer.stride),
            tuple(layer.pads), int(layer.activation),
            None if layer.weights is None else tuple(layer.weights.shape))


def check_pair(models: Mapping[str, SourceModel]) -> PairLayout:
    """Checks that the models can be zippered and finds their blocks. Raises EdgemergeError naming the first
    layer where two architectures differ."""
    tasks = tuple(models)
    if len(tasks) < 2:
        raise EdgemergeError(f"zippering needs at least two models, got {len(tasks)}")
    first_task = tasks[0]
    first = models[first_task]
    for task in tasks[1:]:
        other = models[task]
        if tuple(other.input_shape) != tuple(first.input_shape):
            raise EdgemergeError(
                f"the models read different inputs: {first_task} ({_file_name(first)}) "
                f"{'x'.join(map(str, first.input_shape))}, {task} ({_file_name(other)}) "
                f"{'x'.join(map(str, other.input_shape))}; zippering needs the same input")
    # The trunk: up to the last point-wise conv of the first model (its blocks are found below).
    pointwise = [i for i, layer in enumerate(first.layers)
                 if layer.kind == "conv" and tuple(layer.kernel) == (1, 1) and i > 0
                 and first.layers[i - 1].kind == "depthwise"]
    if not pointwise:
        raise EdgemergeError(f"{first_task} ({_file_name(first)}) has no depthwise-separable block (a depthwise "
                             "conv followed by a 1x1 conv): nothing to zipper")
    trunk_end = pointwise[-1] + 1
    for task in tasks[1:]:
        other = models[task]
        for i in range(trunk_end):
            if i >= len(other.layers):
                raise EdgemergeError(
                    f"architectures differ at layer {i + 1}: {first_task}:{first.layers[i].name} "
                    f"({_describe(first.layers[i])}) has no counterpart, {task} ({_file_name(other)}) "
                    f"ends after {len(other.layers)} layers")
            a, b = first.layers[i], other.layers[i]
            if _signature(a) != _signature(b):
                raise EdgemergeError(
                    f"architectures differ at layer {i + 1}: {first_task}:{a.name} ({_describe(a)}) vs "
                    f"{task}:{b.name} ({_describe(b)})")
        if len(other.layers) == trunk_end:
            raise EdgemergeError(f"{task} ({_file_name(other)}) ends with its last point-wise conv: a model needs "
                                 "its own layers (a head) after the shared trunk")
    if len(first.layers) == trunk_end:
        raise EdgemergeError(f"{first_task} ({_file_name(first)}) ends with its last point-wise conv: a model "
                             "needs its own layers (a head) after the shared trunk")
    blocks, start = [], 0
    for j, p in enumerate(pointwise, start=1):
        blocks.append(Block(j, tuple(range(start, p + 1)), p))
        start = p + 1
    return PairLayout(tasks, blocks)


# ================================================================================================
# Per-layer state: current float values (and BatchNorm, for bn="stats")
# ================================================================================================
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


# ================================================================================================
# Hungarian filter alignment
# ================================================================================================
def _permute_inputs(model: SourceModel, state: ZipState, task: str, start: int, order: np.ndarray) -> None:
    """Carries an output-channel permutation of the layer before `start` into the layers that read it:
    channel-wise layers (depthwise, pools, activations) are permuted and passed through; the first conv or
    dense layer has its input channels permuted and ends the walk."""
    for i in range(start, len(model.layers)):
        layer = model.layers[i]
        if layer.kind == "depthwise":
            w, b = state.weights[task][i], state.biases[task][i]
            m = w.shape[3]
            state.weights[task][i] = np.ascontiguousarray(w[:, :, order, :])
            out_order = (order[:, None] * m + np.arange(m)[None, :]).reshape(-1)
            state.biases[task][i] = np.ascontiguousarray(b[out_order])
            if i in state.batch_norms.get(task, {}):
                state.batch_norms[task][i] = state.batch_norms[task][i].permuted(out_order)
            order = out_order
        elif layer.kind == "conv":
            state.weights[task][i] = np.ascontiguousarray(state.weights[task][i][:, :, order, :])
            return
        elif layer.kind == "dense":
            h, w_, c = layer.in_shape
            flat = np.arange(h * w_ * c).reshape(h, w_, c)[:, :, order].reshape(-1)
            state.weights[task][i] = np.ascontiguousarray(state.weights[task][i][flat, :])
            return
        elif layer.kind == "flatten":
            h, w_, c = layer.in_shape
            order = np.arange(h * w_ * c).reshape(h, w_, c)[:, :, order].reshape(-1)
        # pools, global average pool, activations: channel-wise, the order passes through


def hungarian_align(models: Mapping[str, SourceModel], state: ZipState, positions: Sequence[int]) -> dict:
    """Permutes, for every task but the first, the output channels of each conv among `positions` (in order)
    to match the first task's filters, and carries each permutation into the layers after it. Returns
    {position: {task: fraction of channels that moved}}."""
    from scipy.optimize import linear_sum_assignment

    tasks = list(models)
    ref = tasks[0]
    moved: dict[int, dict[str, float]] = {}
    for p in positions:
        layer = models[ref].layers[p]
        if layer.kind != "conv":
            continue            # depthwise channels follow their input; dense layers are never in the trunk
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
            _permute_inputs(models[task], state, task, p + 1, order)
    return moved


# ================================================================================================
# The graph of one round
# ================================================================================================
@dataclass
class RoundGraph:
    graph: MergedGraph
    k: int
    # (task, position) -> tensor ids of the weights (the codebook for encoded layers) and bias
    weight_ids: dict[tuple[str, int], int]
    bias_ids: dict[tuple[str, int], int]
    node_of: dict[tuple[str, int], int]                   # (task, position) -> node index
    shared_positions: list[int]
    trunk_nodes: list[int]                                # nodes computed once for every task (share=block)
    l1_targets: dict[str, list[tuple[int, str]]]         # what calibrate's L1 terms compare


def _layer_node(name: str, layer: SourceLayer, value: int, sources: tuple[str, ...], match_output: str) -> Node:
    node = Node(name=name, op=_OPS[layer.kind], input=value, out_shape=tuple(layer.out_shape),
                activation=layer.activation, sources=sources, match_output=match_output)
    if layer.kind in _SPATIAL_KINDS:
        node.kernel, node.stride, node.pads = tuple(layer.kernel), tuple(layer.stride), tuple(layer.pads)
    return node


def _metadata(graph: MergedGraph, models: Mapping[str, SourceModel], *, k: int, depth: int, share: str,
              bn: str, align: str, encode: str | None) -> None:
    meta = source_metadata({task: (_file_name(model), model.param_bytes) for task, model in models.items()})
    meta.update({Keys.Zipper.K: int(k), Keys.Zipper.BLOCKS: int(depth), Keys.Zipper.SHARE: share,
                 Keys.Zipper.BN: bn, Keys.Zipper.ALIGN: align, Keys.Zipper.ENCODE: encode or "none"})
    graph.metadata.update(meta)


def build_round(models: Mapping[str, SourceModel], layout: PairLayout, state: ZipState, k: int, share: str, *,
                bn: str = DEFAULT_BN, align: str = DEFAULT_ALIGN, encode: str | None = None,
                l1_scope: str = DEFAULT_L1_SCOPE) -> RoundGraph:
    """The merged graph after round k: blocks 1..k shared as `share` says, every value from `state` (a
    shared layer's from the first task's entry, which `share_round` made every task's). The L1 targets:
    the shared layers' outputs (l1_scope "shared", the paper), or every layer's that has an original to
    compare with ("all": each task's own layers too, against its original model)."""
    if l1_scope not in L1_SCOPES:
        raise EdgemergeError(f"unknown L1 scope {l1_scope!r} (expected {' or '.join(L1_SCOPES)})")
    tasks = list(models)
    shared = layout.shared_positions(share, k)
    shared_set = set(shared)
    graph = MergedGraph()
    graph_input = graph.add_input(tuple(models[tasks[0]].input_shape))
    weight_ids: dict[tuple[str, int], int] = {}
    bias_ids: dict[tuple[str, int], int] = {}
    node_of: dict[tuple[str, int], int] = {}
    l1: dict[str, list[tuple[int, str]]] = {t: [] for t in tasks}
    shared_tensors: dict[int, tuple[int, int, int]] = {}   # position -> (weight id, index id, bias id)

    def tensors_of(task: str, p: int, prefix: str) -> tuple[int, int, int]:
        if p in shared_set and p in shared_tensors:
            return shared_tensors[p]
        w, b = state.weights[task][p], state.biases[task][p]
        index = NONE
        if p in shared_set and p in state.encoded:
            enc = state.encoded[p]
            weight = graph.add_tensor(Tensor.f32(f"{prefix}/codebook", enc.codebook))
            index = graph.add_tensor(Tensor.index(f"{prefix}/index", enc.index, enc.codewords))
        else:
            weight = graph.add_tensor(Tensor.f32(f"{prefix}/weights", w))
        bias = graph.add_tensor(Tensor.f32(f"{prefix}/bias", b))
        if p in shared_set:
            shared_tensors[p] = (weight, index, bias)
        return weight, index, bias

    def add(task_list: list[str], p: int, value: int) -> int:
        """Node of layer p for `task_list` (one task, or every task for a shared trunk node)."""
        first = models[task_list[0]].layers[p]
        is_shared = p in shared_set
        prefix = f"shared/{first.name}" if is_shared else f"{task_list[0]}/{first.name}"
        sources = tuple(f"{t}:{models[t].layers[p].name}" for t in (tasks if is_shared else task_list))
        match = models[task_list[0]].layers[p].match_output
        node = _layer_node(prefix if len(task_list) > 1 else f"{task_list[0]}/{first.name}", first, value,
                           sources, f"{task_list[0]}:{match}" if match else "")
        if first.weights is not None:
            node.weight, node.index, node.bias = tensors_of(task_list[0], p, prefix)
            if node.index != NONE:
                enc = state.encoded[p]
                node.op, node.seg_len, node.codewords = Op.LUT_CONV2D, enc.seg_len, enc.codewords
        out = graph.add_node(node)
        i = len(graph.nodes) - 1
        for t in task_list:
            node_of[(t, p)] = i
            if first.weights is not None:
                weight_ids[(t, p)], bias_ids[(t, p)] = node.weight, node.bias
            if (is_shared or l1_scope == "all") and models[t].layers[p].match_output:
                l1[t].append((i, models[t].layers[p].match_output))
        return out

    trunk_nodes: list[int] = []
    start = 0
    trunk_value = graph_input
    if share == "block" and shared:
        for p in range(shared[-1] + 1):
            trunk_value = add(tasks, p, trunk_value)
            trunk_nodes.append(len(graph.nodes) - 1)
        start = shared[-1] + 1
    for task in tasks:
        value = trunk_value
        for p in range(start, len(models[task].layers)):
            value = add([task], p, value)
        graph.tasks.append(Task(task, graph_input, value, int(np.prod(graph.value_shape(value)))))
    _metadata(graph, models, k=k, depth=layout.depth, share=share, bn=bn, align=align, encode=encode)
    return RoundGraph(graph, k, weight_ids, bias_ids, node_of, shared, trunk_nodes, l1)


def read_back(round_graph: RoundGraph, state: ZipState) -> None:
    """Copies a (calibrated) round graph's values into `state`."""
    from edgemerge.emm.graph import decoded_weights

    graph = round_graph.graph
    for (task, p), wid in round_graph.weight_ids.items():
        node = graph.nodes[round_graph.node_of[(task, p)]]
        if node.op == Op.LUT_CONV2D:
            enc = state.encoded[p]
            state.encoded[p] = Encoded(graph.tensors[wid].array.copy(), enc.index, enc.seg_len, enc.codewords,
                                       enc.relative_error)
            state.weights[task][p] = np.ascontiguousarray(decoded_weights(graph, node), np.float32)
        else:
            state.weights[task][p] = graph.tensors[wid].array.copy()
        state.biases[task][p] = graph.tensors[round_graph.bias_ids[(task, p)]].array.copy()


def share_round(models: Mapping[str, SourceModel], layout: PairLayout, state: ZipState, k: int, share: str, *,
                bn: str = DEFAULT_BN, align: str = DEFAULT_ALIGN, encode: str | None = None, seed: int = 0,
                l1_scope: str = DEFAULT_L1_SCOPE) -> tuple[RoundGraph, dict]:
    """Round k's initial graph: aligns (optionally) and averages the layers newly shared in round k, encodes
    newly shared point-wise layers when `encode` is a preset, and builds the graph. `state` is updated with
    the shared values. Returns the graph and what was done (for the report)."""
    tasks = list(models)
    ref = models[tasks[0]]
    positions = layout.shared_positions(share, k)
    new = [p for p in positions if p not in state.shared]
    info: dict = {"new_shared": [ref.layers[p].name for p in new]}
    if align == "hungarian" and new:
        # Every conv of block k, shared or not: with share="pointwise" the first conv stays per task, but
        # the shared point-wise conv after it must see matching input channels.
        moved = hungarian_align(models, state, layout.blocks[k - 1].positions)
        info["aligned"] = {ref.layers[p].name: v for p, v in moved.items()}
    for p in new:
        if ref.layers[p].weights is None:
            continue
        w, b, mean_bn = average_layer(ref, p, state, tasks, bn)
        for t in tasks:
            state.weights[t][p], state.biases[t][p] = w, b
            if mean_bn is not None:
                state.batch_norms[t][p] = mean_bn
    if encode:
        encoded_now = _encode_pointwise(models, layout, state, [p for p in new if p in
                                                                 {b.pointwise for b in layout.blocks}], encode, seed)
        if encoded_now:
            info["encoded"] = encoded_now
    state.shared.update(new)
    return build_round(models, layout, state, k, share, bn=bn, align=align, encode=encode, l1_scope=l1_scope), info


def _encode_pointwise(models: Mapping[str, SourceModel], layout: PairLayout, state: ZipState,
                      positions: Sequence[int], preset_name: str, seed: int) -> dict:
    from edgemerge.merging.encode import encode_group
    from edgemerge.merging.merge import PRESETS

    if preset_name not in PRESETS:
        raise EdgemergeError(f"unknown encode preset {preset_name!r} (presets: {', '.join(PRESETS)})")
    tasks = list(models)
    ref = models[tasks[0]]
    out = {}
    for p in positions:
        w = state.weights[tasks[0]][p]                      # [1, 1, Cin, Cout], shared: every task's
        depth, vectors = int(w.shape[2]), int(w.shape[3])
        r, c = PRESETS[preset_name].conv
        r, c = min(r, depth), max(2, min(c, vectors))
        group = encode_group({"w": w}, r, c, seed=seed)
        enc = Encoded(group.codebook, group.layers["w"].index, r, c, group.layers["w"].relative_error)
        state.encoded[p] = enc
        decoded = group.decode("w", depth).astype(np.float32)
        for t in tasks:
            state.weights[t][p] = decoded
        out[ref.layers[p].name] = {"r": r, "C": c, "relative_error": round(enc.relative_error, 6)}
    return out


# ================================================================================================
# Measuring a round: accuracy, bytes, memory, latency
# ================================================================================================
C_LATENCY_BENCH = "em_run_all timed in C (bench_all), one sample, all tasks: median over the samples, best pass"
C_LATENCY_LOOP = ("em_run_all over a batch (run_all's loop in C), one sample at a time, all tasks: mean per "
                  "sample, best pass")


def c_latency_method(runtime) -> str:
    return C_LATENCY_BENCH if hasattr(runtime._model, "bench_all") else C_LATENCY_LOOP


def c_latency_ms(runtime, x: np.ndarray, repeats: int = LATENCY_REPEATS) -> float:
    """Milliseconds of one em_run_all (every task, one sample) in the C runtime, the best of `repeats`
    passes over the samples of `x`: with the binding's C-timed bench_all where it has one (median per
    sample), else timing run_all over the batch (its loop over samples runs in C with the GIL released;
    mean per sample)."""
    x = np.ascontiguousarray(x, np.float32)
    model = runtime._model
    if hasattr(model, "bench_all"):
        n_inputs = 1 + max(t.input_index for t in runtime.tasks)
        return min(float(np.median(model.bench_all([x] * n_inputs, 10, len(x)))) for _ in range(repeats)) / 1e6
    inputs = {runtime.tasks[0].name: x}
    runtime.run_all({runtime.tasks[0].name: x[:10]})          # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        runtime.run_all(inputs)
        best = min(best, (time.perf_counter() - started) / len(x))
    return best * 1e3


def tflite_interpreter(keras_path: str | os.PathLike):
    """A Keras model converted in memory to float32 TFLite, in an interpreter with one thread (the default
    XNNPACK delegate), tensors allocated."""
    import contextlib

    import keras
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    model = keras.models.load_model(keras_path, compile=False, safe_mode=True)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    with contextlib.redirect_stdout(io.StringIO()):
        flatbuffer = converter.convert()
    interpreter = Interpreter(model_content=flatbuffer, num_threads=1)
    interpreter.allocate_tensors()
    return interpreter


def tflite_pass_ms(interpreter, x: np.ndarray) -> float:
    """One pass over the samples of `x`, one invoke each: the median milliseconds of `invoke` (timed from
    Python around the binding's call; the input is set outside the clock)."""
    inp = interpreter.get_input_details()[0]["index"]
    times = []
    for sample in np.ascontiguousarray(x, np.float32)[:, None]:
        interpreter.set_tensor(inp, sample)
        started = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - started)
    return float(np.median(times)) * 1e3


def tflite_latency_ms(keras_path: str | os.PathLike, x: np.ndarray, repeats: int = LATENCY_REPEATS) -> float:
    """Milliseconds of one TFLite invoke (float32, one sample, one thread, the interpreter's default XNNPACK
    delegate) of a Keras model converted in memory: the median over the samples, best of `repeats` passes."""
    interpreter = tflite_interpreter(keras_path)
    tflite_pass_ms(interpreter, x)                            # warm-up pass
    return min(tflite_pass_ms(interpreter, x) for _ in range(repeats))


def c_accuracy(runtime, val: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Top-1 accuracy of each task in the C runtime (one em_run_all per sample when the tasks' data share
    their images, else each task on its own)."""
    tasks = list(val)
    xs = [val[t][0] for t in tasks]
    same = all(x.shape == xs[0].shape and np.array_equal(x, xs[0]) for x in xs[1:])
    if same:
        logits, _ = runtime.run_all({tasks[0]: xs[0]})
    else:
        logits = {t: runtime.run(t, val[t][0]) for t in tasks}
    return {t: float(np.mean(np.argmax(logits[t], axis=1) == val[t][1])) for t in tasks}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ================================================================================================
# The whole run
# ================================================================================================
@dataclass
class ZipperResult:
    report: dict
    output: Path


def _round_row(k: int, path: Path, data: bytes, graph: MergedGraph, val, original_acc: dict, original_bytes: int,
               latency_x: np.ndarray | None, pair_ms: float | None, tflite_pair_ms: float | None,
               shared_names: list[str], trunk_nodes: int) -> dict:
    from edgemerge.runtime import Runtime

    runtime = Runtime(data)
    accuracy = c_accuracy(runtime, val)
    row = {
        "k": k, "file": path.name, "sha256": _sha256(data), "file_bytes": len(data),
        "compression": original_bytes / len(data),
        "params": int(sum(t.array.size for t in graph.tensors if t.dtype.name == "F32")),
        "context_bytes": int(runtime.context_bytes),
        "nodes": len(graph.nodes), "trunk_nodes": trunk_nodes, "shared_layers": shared_names,
        "accuracy": accuracy, "drop": {t: original_acc[t] - accuracy[t] for t in accuracy},
    }
    if latency_x is not None:
        ms = c_latency_ms(runtime, latency_x)
        row["latency_ms"] = ms
        row["speedup"] = (pair_ms / ms) if pair_ms else 1.0
        row["speedup_vs_tflite"] = (tflite_pair_ms / ms) if tflite_pair_ms else None
    return row


def zipper_files(sources: Mapping[str, str | os.PathLike], calib: Mapping[str, str | os.PathLike],
                 val: Mapping[str, str | os.PathLike], output: str | os.PathLike, *, share: str = DEFAULT_SHARE,
                 steps_per_round: int | None = None, bn: str = DEFAULT_BN, align: str = DEFAULT_ALIGN,
                 encode: str | None = None, seed: int = 0, l1_scope: str = DEFAULT_L1_SCOPE,
                 latency: bool = True, tflite: bool = True,
                 latency_samples: int = LATENCY_SAMPLES, plot: bool = True, calibrate_options: dict | None = None,
                 log: Callable[[str], None] | None = None) -> ZipperResult:
    """Zippers the TASK=model files round by round (see the module docstring) and writes into `output`:
    k00.emm (the unmerged models in one file: the baseline), k01.emm .. kLL.emm, report.json and
    tradeoff.png. `calib`: TASK -> .npz for calibration (10 % of it held out to pick checkpoints);
    `val`: TASK -> .npz on which every file is evaluated in the C runtime. Returns the report."""
    from edgemerge.datasets import load_labelled
    from edgemerge.importers import load_source_model
    from edgemerge.measure.evaluate import reference_predictions
    from edgemerge.runtime import Runtime
    from edgemerge.training.calibrate import DEFAULT_L1_WEIGHT, DEFAULT_LEARNING_RATE, calibrate

    say = log or (lambda message: None)
    started = time.perf_counter()
    if share not in SHARE_MODES:
        raise EdgemergeError(f"unknown share mode {share!r} (expected {' or '.join(SHARE_MODES)})")
    if bn not in BN_MODES:
        raise EdgemergeError(f"unknown BatchNorm handling {bn!r} (expected {' or '.join(BN_MODES)})")
    if align not in ALIGN_MODES:
        raise EdgemergeError(f"unknown alignment {align!r} (expected {' or '.join(ALIGN_MODES)})")
    if l1_scope not in L1_SCOPES:
        raise EdgemergeError(f"unknown L1 scope {l1_scope!r} (expected {' or '.join(L1_SCOPES)})")
    if steps_per_round is not None and steps_per_round < 0:
        raise EdgemergeError(f"steps per round must be >= 0, got {steps_per_round}")
    tasks = list(sources)
    for what, given in (("--calib", calib), ("--val", val)):
        missing = [t for t in tasks if t not in given]
        extra = [t for t in given if t not in sources]
        if missing:
            raise EdgemergeError(f"{what}: no data for task(s) {', '.join(missing)}")
        if extra:
            raise EdgemergeError(f"{what}: task(s) {', '.join(extra)} are not among the models "
                                 f"({', '.join(tasks)})")
    out_dir = Path(output)
    if out_dir.exists() and not out_dir.is_dir():
        raise EdgemergeError(f"output {out_dir}: exists and is not a folder")

    models = {}
    for task, path in sources.items():
        models[task] = load_source_model(path)
        say(f"zipper: imported {task}: {path} ({len(models[task].layers)} layers)")
    layout = check_pair(models)
    say(f"zipper: {layout.depth} blocks: " + "; ".join(
        f"{b.index}: " + ",".join(models[tasks[0]].layers[p].name for p in b.positions) for b in layout.blocks))
    shape = tuple(models[tasks[0]].input_shape)
    val_data = {}
    for task in tasks:
        d = load_labelled(val[task], shape)
        classes = int(np.prod(models[task].output_shape))
        if d.y.size and (d.y.min() < 0 or d.y.max() >= classes):
            raise EdgemergeError(f"--val {val[task]}: labels outside 0..{classes - 1} for task {task!r}")
        val_data[task] = (d.x, d.y)
    for task in tasks:              # fail before any work on a bad calibration file
        load_labelled(calib[task], shape)

    original_acc = {t: float(np.mean(reference_predictions(sources[t], val_data[t][0]) == val_data[t][1]))
                    for t in tasks}
    original_bytes = int(sum(m.param_bytes for m in models.values()))
    say("zipper: originals on --val: " + ", ".join(f"{t} {100 * a:.2f}%" for t, a in original_acc.items()))
    latency_x = val_data[tasks[0]][0][:latency_samples] if latency else None
    tflite_ms = None
    if latency and tflite:
        try:
            tflite_ms = {t: tflite_latency_ms(sources[t], latency_x) for t in tasks}
            tflite_ms["pair"] = float(sum(tflite_ms[t] for t in tasks))
        except Exception as e:  # noqa: BLE001 - TFLite is an optional yardstick; the report says why it is absent
            say(f"zipper: TFLite latency skipped ({type(e).__name__}: {e})")
            tflite_ms = {"error": f"{type(e).__name__}: {e}"}
    tflite_pair = tflite_ms.get("pair") if isinstance(tflite_ms, dict) else None

    state = ZipState.from_models(models)
    if bn == "stats":
        state.batch_norms = load_batch_norms(models)
    out_dir.mkdir(parents=True, exist_ok=True)
    # An earlier run's report must not describe this run's files while it is under way (pick also checks
    # every file's hash against the report).
    (out_dir / REPORT_NAME).unlink(missing_ok=True)

    rounds = []
    base = build_round(models, layout, state, 0, share, bn=bn, align=align, encode=encode)
    data = emm.to_bytes(base.graph)
    path = out_dir / "k00.emm"
    emm.atomic_write_bytes(path, data)
    row = _round_row(0, path, data, base.graph, val_data, original_acc, original_bytes, latency_x, None,
                     tflite_pair, [], 0)
    pair_ms = row.get("latency_ms")
    row["speedup"] = 1.0 if latency else None
    row["calibration"] = None
    rounds.append(row)
    say(_row_line(row, tasks))

    calibrate_kwargs = {"seed": seed, **(calibrate_options or {})}
    for k in range(1, layout.depth + 1):
        round_started = time.perf_counter()
        initial, info = share_round(models, layout, state, k, share, bn=bn, align=align, encode=encode, seed=seed,
                                    l1_scope=l1_scope)
        say(f"zipper: round {k}/{layout.depth}: sharing {', '.join(info['new_shared'])}; calibrating")
        result = calibrate(initial.graph, sources, calib, steps=steps_per_round, l1_targets=initial.l1_targets,
                           progress=log, **calibrate_kwargs)
        calibrated = RoundGraph(result.graph, k, initial.weight_ids, initial.bias_ids, initial.node_of,
                                initial.shared_positions, initial.trunk_nodes, initial.l1_targets)
        read_back(calibrated, state)
        data = emm.to_bytes(result.graph)
        path = out_dir / f"k{k:02d}.emm"
        emm.atomic_write_bytes(path, data)
        shared_names = [models[tasks[0]].layers[p].name for p in initial.shared_positions]
        row = _round_row(k, path, data, result.graph, val_data, original_acc, original_bytes, latency_x, pair_ms,
                         tflite_pair, shared_names, len(initial.trunk_nodes))
        rep = result.report
        row["calibration"] = {
            "steps": rep["steps"], "best_step": rep["best_step"], "seconds": rep["seconds"],
            "held_out": {t: {"before": rep["tasks"][t]["accuracy_before"], "after": rep["tasks"][t]["accuracy_after"],
                             "original": rep["tasks"][t]["reference_accuracy"]} for t in tasks},
            "l1_layers": {t: rep["tasks"][t]["l1_layers"] for t in tasks},
        }
        row.update({k_: v for k_, v in info.items() if k_ != "new_shared"})
        row["seconds"] = round(time.perf_counter() - round_started, 1)
        rounds.append(row)
        say(_row_line(row, tasks))

    report = {
        "format": REPORT_FORMAT, "version": REPORT_VERSION, "tool_version": str(TOOL_VERSION),
        "tasks": tasks, "blocks": layout.depth,
        "block_layers": [[models[tasks[0]].layers[p].name for p in b.positions] for b in layout.blocks],
        "share": share, "bn": bn, "align": align, "encode": encode, "seed": seed,
        "steps_per_round": steps_per_round,
        "calibration": {"l1_scope": l1_scope, "l1_weight": float(calibrate_kwargs.get("l1_weight", DEFAULT_L1_WEIGHT)),
                        "learning_rate": float(calibrate_kwargs.get("learning_rate", DEFAULT_LEARNING_RATE))},
        "originals": {t: {"file": str(sources[t]), "param_bytes": int(models[t].param_bytes),
                          "accuracy": original_acc[t], "val": str(val[t]), "n_val": int(len(val_data[t][1])),
                          "calib": str(calib[t])} for t in tasks},
        "original_bytes": original_bytes,
        "latency": None if not latency else {
            "samples": int(len(latency_x)), "c_runtime": c_latency_method(Runtime(out_dir / "k00.emm")),
            "pair_c_ms": pair_ms, "tflite_ms": tflite_ms,
        },
        "rounds": rounds,
        "seconds": round(time.perf_counter() - started, 1),
    }
    # Files of an earlier, deeper run in the same folder would look like part of this one.
    keep = {r["file"] for r in rounds}
    for stale in out_dir.glob("k[0-9][0-9].emm"):
        if stale.name not in keep:
            stale.unlink()
    emm.atomic_write_bytes(out_dir / REPORT_NAME, (json.dumps(report, indent=2) + "\n").encode())
    if plot:
        emm.atomic_write_bytes(out_dir / PLOT_NAME, tradeoff_png(report))
    say(f"zipper: wrote {len(rounds)} models, {REPORT_NAME}" + (f" and {PLOT_NAME}" if plot else "") +
        f" to {out_dir} in {report['seconds']} s")
    return ZipperResult(report, out_dir)


def _row_line(row: dict, tasks: Sequence[str]) -> str:
    acc = ", ".join(f"{t} {100 * row['accuracy'][t]:.2f}% ({100 * -row['drop'][t]:+.2f})" for t in tasks)
    speed = f", {row['latency_ms']:.3f} ms ({row['speedup']:.2f}x)" if row.get("latency_ms") else ""
    return f"zipper: k={row['k']}: {acc}, {row['file_bytes']} bytes ({row['compression']:.2f}x){speed}"


# ================================================================================================
# Table, plot, pick
# ================================================================================================
def format_table(report: dict) -> str:
    """The report as a text table: one line per k."""
    tasks = report["tasks"]
    head = f"{'k':>2} " + " ".join(f"{'acc ' + t:>9} {'drop':>6}" for t in tasks)
    head += f" {'bytes':>9} {'compr':>6} {'memory':>9}"
    has_latency = report.get("latency") is not None
    lat = report.get("latency")
    tflite_pair = lat["tflite_ms"].get("pair") if lat and isinstance(lat.get("tflite_ms"), dict) else None
    if has_latency:
        head += f" {'C ms':>7}"
        if tflite_pair:
            head += f" {'TFLite ms':>9}"     # both originals, the same for every k
        head += f" {'speedup':>7}"
        if any(r.get("speedup_vs_tflite") for r in report["rounds"]):
            head += f" {'vs TFLite':>9}"
    lines = [head]
    for r in report["rounds"]:
        line = f"{r['k']:>2} " + " ".join(f"{100 * r['accuracy'][t]:>8.2f}% {100 * r['drop'][t]:>+5.2f}"
                                          for t in tasks)
        line += f" {r['file_bytes']:>9} {r['compression']:>5.2f}x {r['context_bytes']:>9}"
        if has_latency:
            line += f" {r['latency_ms']:>7.3f}"
            if tflite_pair:
                line += f" {tflite_pair:>9.3f}"
            line += f" {r['speedup']:>6.2f}x"
            if r.get("speedup_vs_tflite"):
                line += f" {r['speedup_vs_tflite']:>8.2f}x"
        lines.append(line)
    originals = ", ".join(f"{t} {100 * report['originals'][t]['accuracy']:.2f}%" for t in tasks)
    lines.append(f"originals: {originals}; {report['original_bytes']} bytes of float32 parameters")
    if tflite_pair:
        lines.append(f"both originals in TFLite (XNNPACK, 1 thread): {lat['tflite_ms']['pair']:.3f} ms; "
                     f"in the C runtime (k=0): {lat['pair_c_ms']:.3f} ms")
    lines.append("drop = original - zippered accuracy (points); memory = run-time context bytes; TFLite ms = both "
                 "originals; speedup = against k=0 in the C runtime, vs TFLite = against TFLite ms")
    return "\n".join(lines)


def tradeoff_png(report: dict) -> bytes:
    """The accuracy drop per task and the speedup / compression against k, as PNG bytes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = report["rounds"]
    ks = [r["k"] for r in rounds]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for t in report["tasks"]:
        left.plot(ks, [100 * r["drop"][t] for r in rounds], marker="o", label=f"task {t}")
    left.axhline(0, color="grey", linewidth=0.8)
    left.set_xlabel("k (blocks zippered)")
    left.set_ylabel("accuracy drop (points)")
    left.set_title(f"accuracy drop, share={report['share']}")
    left.legend()
    if rounds and rounds[0].get("latency_ms") is not None:
        right.plot(ks, [r["speedup"] for r in rounds], marker="o", color="C2", label="speedup vs k=0 (C runtime)")
    if rounds and all(r.get("speedup_vs_tflite") for r in rounds):
        right.plot(ks, [r["speedup_vs_tflite"] for r in rounds], marker="^", color="C4",
                   label="speedup vs both originals in TFLite")
    right.plot(ks, [r["compression"] for r in rounds], marker="s", color="C3", label="compression vs originals")
    right.axhline(1, color="grey", linewidth=0.8)
    right.set_xlabel("k (blocks zippered)")
    right.set_ylabel("x")
    right.set_title("speedup and compression")
    right.legend()
    for ax in (left, right):
        ax.set_xticks(ks)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def load_report(folder: str | os.PathLike) -> dict:
    folder = Path(folder)
    path = folder / REPORT_NAME
    if not folder.is_dir():
        raise EdgemergeError(f"{folder}: no such folder (expected the output folder of `edgemerge zipper`)")
    if not path.is_file():
        raise EdgemergeError(f"{folder}: no {REPORT_NAME} (is this the output folder of `edgemerge zipper`?)")
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise EdgemergeError(f"{path}: not a readable report ({e})") from None
    if not isinstance(report, dict) or report.get("format") != REPORT_FORMAT:
        raise EdgemergeError(f"{path}: not a zipper report (format {report.get('format') if isinstance(report, dict) else None!r})")
    if report.get("version") != REPORT_VERSION:
        raise EdgemergeError(f"{path}: report version {report.get('version')}, this edgemerge reads {REPORT_VERSION}")
    return report


def pick(folder: str | os.PathLike, max_drop: float, output: str | os.PathLike) -> dict:
    """Copies the .emm of the deepest round k >= 1 whose every task lost at most `max_drop` (0.02 = 2
    points) to `output`, atomically, after checking the file against the report's hash. Returns the row."""
    if not 0 <= max_drop < 1:
        raise EdgemergeError(f"--max-drop must be in [0, 1) (0.02 = 2 points), got {max_drop}")
    folder = Path(folder)
    report = load_report(folder)
    rounds = [r for r in report.get("rounds", []) if r.get("k", 0) >= 1]
    fitting = [r for r in rounds if max(r["drop"].values()) <= max_drop + 1e-12]
    if not fitting:
        best = min(rounds, key=lambda r: max(r["drop"].values()), default=None)
        hint = (f"; the smallest worst-task drop is {100 * max(best['drop'].values()):.2f} points (k={best['k']})"
                if best else "")
        raise EdgemergeError(f"no zippered model in {folder} keeps every task's accuracy drop within "
                             f"{100 * max_drop:.2f} points{hint}")
    chosen = max(fitting, key=lambda r: r["k"])
    source = folder / chosen["file"]
    try:
        data = source.read_bytes()
    except OSError as e:
        raise EdgemergeError(f"{source}: cannot read ({e.strerror})") from None
    if _sha256(data) != chosen["sha256"]:
        raise EdgemergeError(f"{source}: contents differ from what {REPORT_NAME} recorded (was it changed?)")
    emm.atomic_write_bytes(output, data)
    return chosen
