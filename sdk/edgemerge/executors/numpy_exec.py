"""A plain numpy executor for merged graphs and imported source models, and the NHWC kernels both run on.

Deliberately simple: LUT ops are computed with their *decoded* weights (`graph.decoded_weights`), so the
result is what the merged model means, independent of the table-lookup arithmetic of the C runtime. Nodes
flagged for int8 tables (FORMAT.md "int8 tables") are computed in float too: the quantisation is the
runtime's arithmetic, which `edgemerge eval` measures (calibration likewise trains the float model).
Everything is computed in float64; results are returned as float32.

Each form has ONE table keyed by op: `NODE_OPS` (merged-graph op -> how to compute it) and `LAYER_OPS`
(source-layer kind -> how to compute it). A new op is one row in each.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from edgemerge.emm.constants import NONE, Act, Op
from edgemerge.emm.graph import MergedGraph, Node, decoded_weights
from edgemerge.emm.shapes import Pads
from edgemerge.executors import graph_ops
from edgemerge.importers.source_model import MODEL_INPUT, SourceLayer, SourceModel


def _pad_nhwc(x: np.ndarray, pads: Pads, value: float = 0.0) -> np.ndarray:
    top, left, bottom, right = pads
    if not any(pads):
        return x
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)


def _output_size(padded: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int]) -> tuple[int, int]:
    oh = (padded.shape[1] - kernel[0]) // stride[0] + 1
    ow = (padded.shape[2] - kernel[1]) // stride[1] + 1
    return oh, ow


def _window(padded: np.ndarray, ky: int, kx: int, out_hw: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """The input cells that kernel tap (ky, kx) reads for every output pixel: [N, oh, ow, C]."""
    oh, ow = out_hw
    return padded[:, ky:ky + (oh - 1) * stride[0] + 1:stride[0], kx:kx + (ow - 1) * stride[1] + 1:stride[1], :]


def _taps(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], pads: Pads, value: float = 0.0):
    """The output size of a window op and, per kernel tap (ky, kx), the input cells it reads ([N, oh, ow, C]);
    padded cells read as `value`."""
    padded = _pad_nhwc(np.asarray(x, np.float64), pads, value)
    out_hw = _output_size(padded, kernel, stride)
    return out_hw, ((ky, kx, _window(padded, ky, kx, out_hw, stride))
                    for ky in range(kernel[0]) for kx in range(kernel[1]))


def conv2d(x: np.ndarray, weights: np.ndarray, bias: np.ndarray | None, stride: tuple[int, int],
           pads: Pads) -> np.ndarray:
    """NHWC convolution; weights [KH, KW, Cin, Cout]; padded cells read as zero."""
    kh, kw, _, cout = weights.shape
    out_hw, taps = _taps(x, (kh, kw), stride, pads)
    w = np.asarray(weights, np.float64)
    out = np.zeros((x.shape[0], *out_hw, cout), np.float64)
    for ky, kx, window in taps:
        out += window @ w[ky, kx]
    return out if bias is None else out + np.asarray(bias, np.float64)


def depthwise_conv2d(x: np.ndarray, weights: np.ndarray, bias: np.ndarray | None, stride: tuple[int, int],
                     pads: Pads) -> np.ndarray:
    """NHWC depthwise convolution; weights [KH, KW, C, M]; output channel c·M + m."""
    kh, kw, channels, multiplier = weights.shape
    out_hw, taps = _taps(x, (kh, kw), stride, pads)
    w = np.asarray(weights, np.float64)
    out = np.zeros((x.shape[0], *out_hw, channels, multiplier), np.float64)
    for ky, kx, window in taps:
        out += window[..., None] * w[ky, kx]
    out = out.reshape(x.shape[0], *out_hw, channels * multiplier)
    return out if bias is None else out + np.asarray(bias, np.float64)


def dense(x: np.ndarray, weights: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """Fully connected layer over the flattened (row-major HWC) input; returns [N, 1, 1, Out]."""
    out = np.asarray(x, np.float64).reshape(x.shape[0], -1) @ np.asarray(weights, np.float64)
    if bias is not None:
        out = out + np.asarray(bias, np.float64)
    return out.reshape(x.shape[0], 1, 1, -1)


def max_pool(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], pads: Pads) -> np.ndarray:
    """Max pooling; padded cells are ignored (they read as -inf)."""
    out_hw, taps = _taps(x, kernel, stride, pads, value=-np.inf)
    out = np.full((x.shape[0], *out_hw, x.shape[3]), -np.inf)
    for _, _, window in taps:
        np.maximum(out, window, out=out)
    return out


def avg_pool(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], pads: Pads) -> np.ndarray:
    """Average pooling; the mean is over the cells inside the input (TensorFlow's 'same' behaviour)."""
    out_hw, taps = _taps(x, kernel, stride, pads)
    _, inside_taps = _taps(np.ones((1, x.shape[1], x.shape[2], 1)), kernel, stride, pads)
    total = np.zeros((x.shape[0], *out_hw, x.shape[3]))
    count = np.zeros((1, *out_hw, 1))
    for (_, _, window), (_, _, inside) in zip(taps, inside_taps):
        total += window
        count += inside
    return total / count


def global_avg_pool(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float64).mean(axis=(1, 2), keepdims=True)


def activate(x: np.ndarray, activation: Act) -> np.ndarray:
    # every activation of FORMAT.md (v2 adds sigmoid, hard-sigmoid, hard-swish, swish): graph_ops has the math
    return graph_ops.activate(x, activation)


# -- merged graphs: op -> fn(graph, node, x, bias) ---------------------------------------------
def _conv_node(graph: MergedGraph, node: Node, x: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    return conv2d(x, decoded_weights(graph, node), bias, node.stride, node.pads)


def _depthwise_node(graph: MergedGraph, node: Node, x: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    return depthwise_conv2d(x, decoded_weights(graph, node), bias, node.stride, node.pads)


def _dense_node(graph: MergedGraph, node: Node, x: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    return dense(x, decoded_weights(graph, node), bias)


NodeFn = Callable[[MergedGraph, Node, np.ndarray, "np.ndarray | None"], np.ndarray]
NODE_OPS: dict[Op, NodeFn] = {
    Op.CONV2D: _conv_node,
    Op.LUT_CONV2D: _conv_node,
    Op.DEPTHWISE_CONV2D: _depthwise_node,
    Op.LUT_DEPTHWISE_CONV2D: _depthwise_node,
    Op.DENSE: _dense_node,
    Op.LUT_DENSE: _dense_node,
    Op.MAX_POOL: lambda graph, node, x, bias: max_pool(x, node.kernel, node.stride, node.pads),
    Op.AVG_POOL: lambda graph, node, x, bias: avg_pool(x, node.kernel, node.stride, node.pads),
    Op.GLOBAL_AVG_POOL: lambda graph, node, x, bias: global_avg_pool(x),
    Op.RESHAPE: lambda graph, node, x, bias: x.reshape(x.shape[0], *node.out_shape),
    Op.ACTIVATION: lambda graph, node, x, bias: x,
}


def _run_node(graph: MergedGraph, node: Node, x: np.ndarray) -> np.ndarray:
    bias = graph.tensors[node.bias].array if node.bias != NONE else None
    fn = NODE_OPS.get(node.op)
    if fn is None:
        raise ValueError(f"node {node.name!r}: op {node.op!r} is not known to the numpy executor")
    y = fn(graph, node, x, bias)
    if tuple(y.shape[1:]) != tuple(node.out_shape):
        raise ValueError(f"node {node.name!r}: computed shape {tuple(y.shape[1:])}, "
                         f"the graph declares {tuple(node.out_shape)}")
    return activate(y, node.activation)


def execute_graph(graph: MergedGraph, task: str, x: np.ndarray) -> np.ndarray:
    """Logits of `task` for a batch `x` (float, NHWC, shape [N, h, w, c] of the task's input):
    returns float32 [N, classes]. Computed in float64 with decoded LUT weights."""
    t = graph.task(task)
    x = np.asarray(x)
    expected = tuple(graph.inputs[t.input])
    if x.ndim != 4 or tuple(x.shape[1:]) != expected:
        raise ValueError(f"task {task!r}: input batch has shape {x.shape}, expected (N, {', '.join(map(str, expected))})")
    values: dict[int, np.ndarray] = {t.input: x.astype(np.float64)}
    for i in graph.nodes_for(task):
        node = graph.nodes[i]
        if node.op in graph_ops.OPS:  # format v2 ops (several inputs, PAD): graph_ops
            values[len(graph.inputs) + i] = graph_ops.run(node.op, [values[v] for v in node.inputs],
                                                          node.activation, node.pads)
            continue
        values[len(graph.inputs) + i] = _run_node(graph, node, values[node.input])
    return values[t.output].reshape(x.shape[0], -1).astype(np.float32)


# -- imported source models: layer kind -> fn(layer, inputs) --------------------------------------------
# Single-input kinds take the one input; joins (add, concat, mul) take every input, in order.
LayerFn = Callable[[SourceLayer, list[np.ndarray]], np.ndarray]
LAYER_OPS: dict[str, LayerFn] = {
    "conv": lambda layer, xs: conv2d(xs[0], layer.weights, layer.bias, layer.stride, layer.pads),
    "depthwise": lambda layer, xs: depthwise_conv2d(xs[0], layer.weights, layer.bias, layer.stride, layer.pads),
    "dense": lambda layer, xs: dense(xs[0], layer.weights, layer.bias),
    "max_pool": lambda layer, xs: max_pool(xs[0], layer.kernel, layer.stride, layer.pads),
    "avg_pool": lambda layer, xs: avg_pool(xs[0], layer.kernel, layer.stride, layer.pads),
    "global_avg_pool": lambda layer, xs: global_avg_pool(xs[0]),
    "flatten": lambda layer, xs: xs[0].reshape(xs[0].shape[0], 1, 1, -1),
    "activation": lambda layer, xs: xs[0],
    "pad": lambda layer, xs: graph_ops.pad(xs[0], layer.pads),
    "add": lambda layer, xs: graph_ops.add(xs),
    "concat": lambda layer, xs: graph_ops.concat(xs),
    "mul": lambda layer, xs: graph_ops.mul(xs[0], xs[1]),
}


def forward_numpy(model: SourceModel, x: np.ndarray) -> np.ndarray:
    """Runs the imported layers on a batch `x` [N, h, w, c]; returns float64 [N, outputs] (logits: the
    final softmax, if any, is not applied). How importers are checked against their framework. Each value is
    dropped after its last reader, so a long chain holds one or two activations at a time."""
    x = np.asarray(x, np.float64)
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(model.input_shape):
        raise ValueError(f"model {model.name!r}: input batch has shape {x.shape}, "
                         f"expected (N, {', '.join(map(str, model.input_shape))})")
    model.check_topology()
    last_reader = {name: positions[-1] for name, positions in model.consumers().items()}
    values: dict[str, np.ndarray] = {MODEL_INPUT: x}
    y = x
    for i, layer in enumerate(model.layers):
        fn = LAYER_OPS.get(layer.kind)
        if fn is None:
            raise ValueError(f"layer {layer.name!r}: unknown kind {layer.kind!r}")
        names = model.inputs_of(i)
        y = fn(layer, [values[name] for name in names])
        if tuple(y.shape[1:]) != tuple(layer.out_shape):
            raise ValueError(f"layer {layer.name!r}: computed shape {tuple(y.shape[1:])}, "
                             f"declared {layer.out_shape}")
        values[layer.name] = activate(y, layer.activation)
        y = values[layer.name]
        for name in names:
            if last_reader.get(name) == i:
                del values[name]
    return y.reshape(y.shape[0], -1)
