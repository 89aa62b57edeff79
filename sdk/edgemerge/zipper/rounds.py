"""The merged graph of round k: blocks 1..k shared, every value from the `ZipState`.

- `share="pointwise"` (the paper): the point-wise convs of blocks 1..k (in inverted-residual blocks the
  expand and project convs) are ONE weight tensor and ONE bias tensor used by both tasks' nodes; everything
  else (first conv, depthwise convs, residual Adds, tails) stays per task. Each task keeps its own nodes
  reading the shared input: smaller file, same compute.
- `share="block"`: every layer of blocks 1..k (residual Adds included) is ONE node computed once
  (`em_run_all`); the per-task rest reads the trunk's values (the last block's output, and any earlier
  trunk value a skip connection of the rest reads): smaller file and less compute.

Graphs (SourceModel DAGs) are built like chains: every node reads the values of the layers its source layer
reads (`SourceModel.inputs_of`), by position, which `layout.check_pair` checked to be the same in every task.

Layers shared in an earlier round keep their calibrated values; calibration (`calibrate.calibrate` with the
paper's loss: each task's cross-entropy plus the relative L1 mismatch between every shared layer's output
and the original model's, the L1 terms given as `l1_targets`; `l1_scope="all"` adds every per-task layer's
output against its original's) starts each round from the previous round's
weights. `encode` (a merge preset) additionally codebook-encodes the shared point-wise layers (LUT_CONV2D),
one codebook and one index map used by both tasks' nodes; encoded layers stay encoded in later rounds and
calibration trains their codebooks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from edgemerge.emm.constants import NONE, Keys, Op
from edgemerge.emm.graph import MergedGraph, Node, Task, Tensor, decoded_weights
from edgemerge.errors import EdgemergeError
from edgemerge.importers import SourceLayer, SourceModel
from edgemerge.importers.source_model import JOIN_KINDS
from edgemerge.merging.merge import source_metadata
from edgemerge.zipper.fuse import (
    DEFAULT_ALIGN,
    DEFAULT_BN,
    Encoded,
    ZipState,
    average_layer,
    hungarian_align,
)
from edgemerge.zipper.layout import SPATIAL_KINDS, PairLayout, file_name, input_positions

# The L1 terms of each round's calibration: the shared layers' outputs against each original's (the paper), or
# every layer that has an original counterpart, each task's own layers included (its branch is then held near
# its original model's function, a distillation term: see examples/zipper_heldout/README.md for when it helps).
L1_SCOPES = ("shared", "all")
DEFAULT_L1_SCOPE = "shared"
_OPS = {"conv": Op.CONV2D, "depthwise": Op.DEPTHWISE_CONV2D, "dense": Op.DENSE, "max_pool": Op.MAX_POOL,
        "avg_pool": Op.AVG_POOL, "global_avg_pool": Op.GLOBAL_AVG_POOL, "flatten": Op.RESHAPE,
        "activation": Op.ACTIVATION, "add": Op.ADD, "concat": Op.CONCAT, "mul": Op.MUL, "pad": Op.PAD}


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


def _layer_node(name: str, layer: SourceLayer, values: Sequence[int], sources: tuple[str, ...],
                match_output: str) -> Node:
    node = Node(name=name, op=_OPS[layer.kind], input=values[0], out_shape=tuple(layer.out_shape),
                activation=layer.activation, sources=sources, match_output=match_output)
    if layer.kind in SPATIAL_KINDS:
        node.kernel, node.stride, node.pads = tuple(layer.kernel), tuple(layer.stride), tuple(layer.pads)
    elif layer.kind == "pad":
        node.pads = tuple(layer.pads)          # docs/FORMAT.md: PAD keeps kernel/stride 1
    if len(values) > 1:
        if layer.kind not in JOIN_KINDS:       # defensive: SourceModel.inputs_of gives one name otherwise
            raise EdgemergeError(f"{layer.name}: a {layer.kind} layer reads one input, not {len(values)}")
        node.inputs = tuple(values)
    return node


def _metadata(graph: MergedGraph, models: Mapping[str, SourceModel], *, k: int, depth: int, share: str,
              bn: str, align: str, encode: str | None) -> None:
    meta = source_metadata({task: (file_name(model), model.param_bytes) for task, model in models.items()})
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

    def add(task_list: list[str], p: int, values: Sequence[int]) -> int:
        """Node of layer p for `task_list` (one task, or every task for a shared trunk node), reading `values`."""
        first = models[task_list[0]].layers[p]
        is_shared = p in shared_set
        prefix = f"shared/{first.name}" if is_shared else f"{task_list[0]}/{first.name}"
        sources = tuple(f"{t}:{models[t].layers[p].name}" for t in (tasks if is_shared else task_list))
        match = models[task_list[0]].layers[p].match_output
        node = _layer_node(prefix if len(task_list) > 1 else f"{task_list[0]}/{first.name}", first, values,
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
    trunk_values = {-1: graph_input}        # layer position (-1: the model input) -> value id
    if share == "block" and shared:
        ref = models[tasks[0]]
        for p in range(shared[-1] + 1):
            trunk_values[p] = add(tasks, p, [trunk_values[q] for q in input_positions(ref, p)])
            trunk_nodes.append(len(graph.nodes) - 1)
        start = shared[-1] + 1
    for task in tasks:
        model = models[task]
        values = dict(trunk_values)
        for p in range(start, len(model.layers)):
            values[p] = add([task], p, [values[q] for q in input_positions(model, p)])
        value = values[len(model.layers) - 1]
        graph.tasks.append(Task(task, graph_input, value, int(np.prod(graph.value_shape(value)))))
    _metadata(graph, models, k=k, depth=layout.depth, share=share, bn=bn, align=align, encode=encode)
    return RoundGraph(graph, k, weight_ids, bias_ids, node_of, shared, trunk_nodes, l1)


def read_back(round_graph: RoundGraph, state: ZipState) -> None:
    """Copies a (calibrated) round graph's values into `state`."""
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
        pointwise = {q for b in layout.blocks for q in b.pointwise_convs}
        encoded_now = _encode_pointwise(models, layout, state, [p for p in new if p in pointwise], encode, seed)
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


__all__ = ["DEFAULT_L1_SCOPE", "L1_SCOPES", "RoundGraph", "ZipState", "build_round", "read_back", "share_round"]
