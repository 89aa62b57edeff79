"""A plain numpy executor for merged graphs, and the NHWC kernels it (and the importers) are built from.

Deliberately simple: LUT ops are computed with their *decoded* weights (`graph.decoded_weights`), so the
result is what the merged model means, independent of the table-lookup arithmetic of the C runtime. Nodes
flagged for int8 tables (FORMAT.md "int8 tables") are computed in float too: the quantisation is the
runtime's arithmetic, which `edgemerge eval` measures (calibration likewise trains the float model).
Everything is computed in float64; results are returned as float32.
"""
from __future__ import annotations

import numpy as np

from edgemerge.emm.constants import NONE, Act, Op
from edgemerge.emm.graph import MergedGraph, Node, decoded_weights
from edgemerge.executors import graph_ops

Pads = tuple[int, int, int, int]   # top, left, bottom, right


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


def conv2d(x: np.ndarray, weights: np.ndarray, bias: np.ndarray | None, stride: tuple[int, int],
           pads: Pads) -> np.ndarray:
    """NHWC convolution; weights [KH, KW, Cin, Cout]; padded cells read as zero."""
    kh, kw, _, cout = weights.shape
    padded = _pad_nhwc(np.asarray(x, np.float64), pads)
    out_hw = _output_size(padded, (kh, kw), stride)
    w = np.asarray(weights, np.float64)
    out = np.zeros((x.shape[0], *out_hw, cout), np.float64)
    for ky in range(kh):
        for kx in range(kw):
            out += _window(padded, ky, kx, out_hw, stride) @ w[ky, kx]
    return out if bias is None else out + np.asarray(bias, np.float64)


def depthwise_conv2d(x: np.ndarray, weights: np.ndarray, bias: np.ndarray | None, stride: tuple[int, int],
                     pads: Pads) -> np.ndarray:
    """NHWC depthwise convolution; weights [KH, KW, C, M]; output channel c·M + m."""
    kh, kw, channels, multiplier = weights.shape
    padded = _pad_nhwc(np.asarray(x, np.float64), pads)
    out_hw = _output_size(padded, (kh, kw), stride)
    w = np.asarray(weights, np.float64)
    out = np.zeros((x.shape[0], *out_hw, channels, multiplier), np.float64)
    for ky in range(kh):
        for kx in range(kw):
            out += _window(padded, ky, kx, out_hw, stride)[..., None] * w[ky, kx]
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
    padded = _pad_nhwc(np.asarray(x, np.float64), pads, value=-np.inf)
    out_hw = _output_size(padded, kernel, stride)
    out = np.full((x.shape[0], *out_hw, x.shape[3]), -np.inf)
    for ky in range(kernel[0]):
        for kx in range(kernel[1]):
            np.maximum(out, _window(padded, ky, kx, out_hw, stride), out=out)
    return out


def avg_pool(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], pads: Pads) -> np.ndarray:
    """Average pooling; the mean is over the cells inside the input (TensorFlow's 'same' behaviour)."""
    padded = _pad_nhwc(np.asarray(x, np.float64), pads)
    inside = _pad_nhwc(np.ones((1, x.shape[1], x.shape[2], 1)), pads)
    out_hw = _output_size(padded, kernel, stride)
    total = np.zeros((x.shape[0], *out_hw, x.shape[3]))
    count = np.zeros((1, *out_hw, 1))
    for ky in range(kernel[0]):
        for kx in range(kernel[1]):
            total += _window(padded, ky, kx, out_hw, stride)
            count += _window(inside, ky, kx, out_hw, stride)
    return total / count


def global_avg_pool(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float64).mean(axis=(1, 2), keepdims=True)


def activate(x: np.ndarray, activation: Act) -> np.ndarray:
    # every activation of FORMAT.md (v2 adds sigmoid, hard-sigmoid, hard-swish, swish): graph_ops has the math
    return graph_ops.activate(x, activation)


def _run_node(graph: MergedGraph, node: Node, x: np.ndarray) -> np.ndarray:
    bias = graph.tensors[node.bias].array if node.bias != NONE else None
    if node.op in (Op.CONV2D, Op.LUT_CONV2D):
        y = conv2d(x, decoded_weights(graph, node), bias, node.stride, node.pads)
    elif node.op == Op.DEPTHWISE_CONV2D:
        y = depthwise_conv2d(x, decoded_weights(graph, node), bias, node.stride, node.pads)
    elif node.op in (Op.DENSE, Op.LUT_DENSE):
        y = dense(x, decoded_weights(graph, node), bias)
    elif node.op == Op.MAX_POOL:
        y = max_pool(x, node.kernel, node.stride, node.pads)
    elif node.op == Op.AVG_POOL:
        y = avg_pool(x, node.kernel, node.stride, node.pads)
    elif node.op == Op.GLOBAL_AVG_POOL:
        y = global_avg_pool(x)
    elif node.op == Op.RESHAPE:
        y = x.reshape(x.shape[0], *node.out_shape)
    elif node.op == Op.ACTIVATION:
        y = x
    else:
        raise ValueError(f"node {node.name!r}: op {node.op!r} is not known to the numpy executor")
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
