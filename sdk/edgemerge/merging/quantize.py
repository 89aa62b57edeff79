"""int8 activations for LUT layers (docs/FORMAT.md "int8 activations"): choose the layers, measure each one's
input range on calibration data, and store the input scale in the node (flag NODE_FLAG_INT8_ACT).

The codebook's int8 scale is not chosen here: the runtime derives it from the float codebook at load, so
the file keeps its float codebooks and the same model with the flag cleared runs with float math (how
`eval` reports the quantisation's own cost).

Scale: sx = P(|x|) / 127, where P is a high percentile (INT8_ACT_PERCENTILE) of the absolute values the
layer's input takes over the calibration samples, computed with the numpy executor (float64, decoded
weights). A percentile rather than the maximum: one outlier pixel would otherwise stretch the step of
every other value; the few values above it saturate at ±127.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from edgemerge.emm.constants import NODE_FLAG_INT8_ACT, NODE_FLAG_INT8_TABLES, Op
from edgemerge.emm.graph import MergedGraph
from edgemerge.errors import EdgemergeError
from edgemerge.executors import graph_ops
from edgemerge.executors.numpy_exec import _run_node
from edgemerge.inputs import DataError
from edgemerge.text import printable

LUT_OPS = (Op.LUT_CONV2D, Op.LUT_DENSE)
INT8_ACT_PERCENTILE = 99.99
INT8_ACT_SAMPLES = 300   # calibration samples per task used for the ranges (the first ones of each file)


def select_int8_act(graph: MergedGraph, names: Sequence[str]) -> list[int]:
    """Node indices of the LUT layers `names` selects: "all" (every LUT node without int8 tables), or node
    names / source layers (TASK:LAYER or LAYER). A name that matches no LUT node is an error."""
    chosen: set[int] = set()
    for name in names:
        if name == "all":
            chosen.update(i for i, n in enumerate(graph.nodes) if n.op in LUT_OPS and not n.int8_tables)
            continue
        hits = [i for i, n in enumerate(graph.nodes) if n.op in LUT_OPS and
                (n.name == name or name in n.sources or any(s.split(":", 1)[-1] == name for s in n.sources))]
        if not hits:
            raise EdgemergeError(f"--int8 {name!r}: no merged (LUT) layer of that name")
        for i in hits:
            if graph.nodes[i].int8_tables:
                raise EdgemergeError(f"--int8 {name!r}: layer {graph.nodes[i].name!r} already has int8 tables "
                                     "(--int8-tables); the two exclude each other")
        chosen.update(hits)
    return sorted(chosen)


def input_ranges(graph: MergedGraph, samples: Mapping[str, np.ndarray], nodes: Sequence[int],
                 percentile: float = INT8_ACT_PERCENTILE) -> dict[int, float]:
    """P(|x|) of each node's input over the samples of every task that runs it (float32 [N, h, w, c] per task)."""
    wanted = set(nodes)
    seen: dict[int, list[np.ndarray]] = {i: [] for i in wanted}
    n_inputs = len(graph.inputs)
    for task, x in samples.items():
        t = graph.task(task)
        values: dict[int, np.ndarray] = {t.input: np.asarray(x, dtype=np.float64)}
        order = graph.nodes_for(task)
        last_use: dict[int, int] = {}
        for step, i in enumerate(order):
            for v in graph.nodes[i].inputs:
                last_use[v] = step
        for step, i in enumerate(order):
            node = graph.nodes[i]
            if i in wanted:
                seen[i].append(np.abs(values[node.input]).ravel())
            if node.op in graph_ops.OPS:
                y = graph_ops.run(node.op, [values[v] for v in node.inputs], node.activation, node.pads)
            else:
                y = _run_node(graph, node, values[node.input])
            values[n_inputs + i] = y
            for v in node.inputs:   # free what no later node reads (keeps a few hundred samples small)
                if last_use.get(v) == step and v != t.output:
                    values.pop(v, None)
    ranges = {}
    for i, parts in seen.items():
        if not parts:
            raise EdgemergeError(f"--int8: layer {graph.nodes[i].name!r} is run by no task with calibration data")
        ranges[i] = float(np.percentile(np.concatenate(parts), percentile))
    return ranges


def apply_int8_act(graph: MergedGraph, ranges: Mapping[int, float]) -> list[str]:
    """Flags each node of `ranges` INT8_ACT with sx = range / 127 (a layer whose input was all zeros on the
    calibration data gets the step of 1/127). Returns the flagged node names."""
    names = []
    for i, r in sorted(ranges.items()):
        node = graph.nodes[i]
        scale = float(np.float32(r / 127.0)) if r > 0 and np.isfinite(r) else float(np.float32(1.0 / 127.0))
        node.flags = (node.flags & ~NODE_FLAG_INT8_TABLES) | NODE_FLAG_INT8_ACT
        node.input_scale = scale
        names.append(node.name)
    return names


def quantize_graph(graph, names: Sequence[str], calib: Mapping[str, object],
                   samples_per_task: int = INT8_ACT_SAMPLES) -> dict:
    """Flags the selected LUT layers of the merged `graph` (in place) for int8 activations, with scales from
    the first `samples_per_task` samples of each task's calibration data: a file path, or data already loaded
    (datasets.LabelledData, e.g. an ONNX task's NCHW file in NHWC). Returns what was flagged."""
    from edgemerge.datasets import LabelledData, load_samples
    nodes = select_int8_act(graph, names)
    if not nodes:
        return {"layers": [], "percentile": INT8_ACT_PERCENTILE}
    samples = {}
    for task, data in calib.items():
        if task not in {t.name for t in graph.tasks}:
            continue
        x = load_samples(data, "--calib file")[:samples_per_task]
        want = tuple(graph.task_input_shape(task))
        if tuple(x.shape[1:]) != want:   # the executor would fail deep inside a layer instead
            shown = printable(str(data.path if isinstance(data, LabelledData) else data))
            raise DataError(f"--calib file {shown}: samples have shape {tuple(x.shape[1:])}, task {task!r} takes "
                            f"{want} (NHWC)")
        samples[task] = x
    ranges = input_ranges(graph, samples, nodes)
    flagged = apply_int8_act(graph, ranges)
    return {"layers": flagged, "percentile": INT8_ACT_PERCENTILE,
            "input_scales": {graph.nodes[i].name: graph.nodes[i].input_scale for i in nodes}}
