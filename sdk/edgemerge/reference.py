"""An ordinary TensorFlow/Keras model rebuilt from a merged graph with its *decoded* weights.

This is the independent reference the C runtime is checked against: LUT layers become plain Conv2D/Dense
layers whose weights are the codebook lookups (`graph.decoded_weights`), so any disagreement between the
two is a bug in the runtime's table-lookup arithmetic, not in quantisation.
"""
from __future__ import annotations

import numpy as np

from .format import NONE, Act, Op
from .graph import MergedGraph, Node, decoded_weights


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pool_padding(graph: MergedGraph, node: Node) -> str:
    """Keras pools only know 'valid' and 'same' (padded cells ignored); map explicit pads to one of them."""
    h, w, _ = graph.value_shape(node.input)
    if node.pads == (0, 0, 0, 0):
        return "valid"
    top, bottom = _same_pads(h, node.kernel[0], node.stride[0])
    left, right = _same_pads(w, node.kernel[1], node.stride[1])
    if node.pads == (top, left, bottom, right):
        return "same"
    raise ValueError(f"node {node.name}: pool pads {node.pads} match neither 'valid' nor 'same'")


def build_keras_reference(graph: MergedGraph, task: str):
    """A keras.Model computing `task`'s logits exactly as the graph describes, with decoded weights."""
    import keras

    t = graph.task(task)
    x_in = keras.Input(shape=graph.inputs[t.input], name=f"{task}_input")
    values: dict[int, object] = {t.input: x_in}
    for i in graph.nodes_for(task):
        node = graph.nodes[i]
        x = values[node.input]
        bias = graph.tensors[node.bias].array if node.bias != NONE else None
        if node.op in (Op.CONV2D, Op.LUT_CONV2D, Op.DEPTHWISE_CONV2D):
            top, left, bottom, right = node.pads
            if any(node.pads):
                x = keras.layers.ZeroPadding2D(((top, bottom), (left, right)))(x)
            weights = decoded_weights(graph, node)
            if node.op == Op.DEPTHWISE_CONV2D:
                layer = keras.layers.DepthwiseConv2D(node.kernel, node.stride, padding="valid",
                                                     depth_multiplier=weights.shape[3], use_bias=bias is not None)
            else:
                layer = keras.layers.Conv2D(weights.shape[3], node.kernel, node.stride, padding="valid",
                                            use_bias=bias is not None)
            x = layer(x)
            layer.set_weights([weights] + ([bias] if bias is not None else []))
        elif node.op in (Op.DENSE, Op.LUT_DENSE):
            weights = decoded_weights(graph, node)
            x = keras.layers.Flatten()(x)
            layer = keras.layers.Dense(weights.shape[1], use_bias=bias is not None)
            x = layer(x)
            layer.set_weights([weights] + ([bias] if bias is not None else []))
        elif node.op == Op.MAX_POOL:
            x = keras.layers.MaxPooling2D(node.kernel, node.stride, padding=_pool_padding(graph, node))(x)
        elif node.op == Op.AVG_POOL:
            x = keras.layers.AveragePooling2D(node.kernel, node.stride, padding=_pool_padding(graph, node))(x)
        elif node.op == Op.GLOBAL_AVG_POOL:
            x = keras.layers.GlobalAveragePooling2D()(x)
        elif node.op == Op.RESHAPE:
            x = keras.layers.Reshape(node.out_shape)(x)
        elif node.op != Op.ACTIVATION:
            raise ValueError(f"node {node.name}: op {node.op!r} has no Keras reference")
        if node.activation == Act.RELU:
            x = keras.layers.ReLU()(x)
        elif node.activation == Act.RELU6:
            x = keras.layers.ReLU(max_value=6.0)(x)
        values[len(graph.inputs) + i] = x
    out = keras.layers.Flatten()(values[t.output])
    return keras.Model(x_in, out, name=f"reference_{task}")


def reference_logits(graph: MergedGraph, task: str, x: np.ndarray) -> np.ndarray:
    model = build_keras_reference(graph, task)
    return np.asarray(model(np.asarray(x, dtype=np.float32), training=False))
