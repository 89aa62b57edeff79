"""Ordinary TensorFlow/Keras models rebuilt from edgemerge's own forms.

- `build_keras_reference`: a merged graph with its *decoded* weights. This is the independent reference the
  C runtime is checked against: LUT layers become plain Conv2D/Dense layers whose weights are the codebook
  lookups (`graph.decoded_weights`), so any disagreement between the two is a bug in the runtime's
  table-lookup arithmetic, not in quantisation.
- `build_source_keras`: an imported `SourceModel` (what an importer read from a .keras or .tflite file), with
  an output per layer. Calibration uses it to run original models that Keras cannot load itself (.tflite):
  the L1 targets and the originals' predictions then come from the very weights the merge encoded.

Each form has ONE table keyed by op: `KERAS_NODE_OPS` (merged-graph op) and `KERAS_LAYER_OPS` (source-layer
kind); both use the same layer builders (`_conv`, `_depthwise`, `_dense`, `_pool`), since a `Node` and a
`SourceLayer` name kernel, stride and pads alike. A new op is one row in each.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from edgemerge.emm.constants import NONE, Act, Op
from edgemerge.emm.graph import MergedGraph, Node, decoded_weights
from edgemerge.emm.shapes import keras_padding

# Act -> a Keras layer (Act.NONE adds none)
_ACTIVATIONS: dict[Act, Callable[[Any], Any]] = {
    Act.RELU: lambda keras: keras.layers.ReLU(),
    Act.RELU6: lambda keras: keras.layers.ReLU(max_value=6.0),
}


def _pool_padding_of(what: str, in_hw: tuple[int, int], spec) -> str:
    """Keras pools only know 'valid' and 'same' (padded cells ignored); explicit pads must be one of them."""
    padding = keras_padding(in_hw, spec.kernel, spec.stride, spec.pads)
    if padding is None:
        raise ValueError(f"{what}: pool pads {spec.pads} match neither 'valid' nor 'same'")
    return padding


def _pool_padding(graph: MergedGraph, node: Node) -> str:
    h, w, _ = graph.value_shape(node.input)
    return _pool_padding_of(f"node {node.name}", (h, w), node)


def _source_pool_padding(layer) -> str:
    return _pool_padding_of(f"layer {layer.name}", tuple(layer.in_shape[:2]), layer)


# -- layer builders shared by both forms (`spec` is a Node or a SourceLayer) --------------------------
def _weighted(layer, x, weights: np.ndarray, bias: np.ndarray | None):
    x = layer(x)
    layer.set_weights([weights] + ([bias] if bias is not None else []))
    return x


def _zero_pad(keras, x, pads):
    top, left, bottom, right = pads
    return keras.layers.ZeroPadding2D(((top, bottom), (left, right)))(x) if any(pads) else x


def _conv(keras, x, spec, weights: np.ndarray, bias: np.ndarray | None):
    layer = keras.layers.Conv2D(weights.shape[3], spec.kernel, spec.stride, padding="valid",
                                use_bias=bias is not None)
    return _weighted(layer, _zero_pad(keras, x, spec.pads), weights, bias)


def _depthwise(keras, x, spec, weights: np.ndarray, bias: np.ndarray | None):
    layer = keras.layers.DepthwiseConv2D(spec.kernel, spec.stride, padding="valid",
                                         depth_multiplier=weights.shape[3], use_bias=bias is not None)
    return _weighted(layer, _zero_pad(keras, x, spec.pads), weights, bias)


def _dense(keras, x, spec, weights: np.ndarray, bias: np.ndarray | None):
    x = keras.layers.Flatten()(x)
    return _weighted(keras.layers.Dense(weights.shape[1], use_bias=bias is not None), x, weights, bias)


def _pool(layer_class: str):
    def build(keras, x, spec, padding: str):
        return getattr(keras.layers, layer_class)(spec.kernel, spec.stride, padding=padding)(x)
    return build


_max_pool, _avg_pool = _pool("MaxPooling2D"), _pool("AveragePooling2D")


# -- merged graphs: op -> fn(keras, graph, node, x) ------------------------------------------------
def _node_bias(graph: MergedGraph, node: Node) -> np.ndarray | None:
    return graph.tensors[node.bias].array if node.bias != NONE else None


KERAS_NODE_OPS: dict[Op, Callable[..., Any]] = {
    Op.CONV2D: lambda keras, g, n, x: _conv(keras, x, n, decoded_weights(g, n), _node_bias(g, n)),
    Op.LUT_CONV2D: lambda keras, g, n, x: _conv(keras, x, n, decoded_weights(g, n), _node_bias(g, n)),
    Op.DEPTHWISE_CONV2D: lambda keras, g, n, x: _depthwise(keras, x, n, decoded_weights(g, n), _node_bias(g, n)),
    Op.DENSE: lambda keras, g, n, x: _dense(keras, x, n, decoded_weights(g, n), _node_bias(g, n)),
    Op.LUT_DENSE: lambda keras, g, n, x: _dense(keras, x, n, decoded_weights(g, n), _node_bias(g, n)),
    Op.MAX_POOL: lambda keras, g, n, x: _max_pool(keras, x, n, _pool_padding(g, n)),
    Op.AVG_POOL: lambda keras, g, n, x: _avg_pool(keras, x, n, _pool_padding(g, n)),
    Op.GLOBAL_AVG_POOL: lambda keras, g, n, x: keras.layers.GlobalAveragePooling2D()(x),
    Op.RESHAPE: lambda keras, g, n, x: keras.layers.Reshape(n.out_shape)(x),
    Op.ACTIVATION: lambda keras, g, n, x: x,
}


def build_keras_reference(graph: MergedGraph, task: str):
    """A keras.Model computing `task`'s logits exactly as the graph describes, with decoded weights."""
    import keras

    t = graph.task(task)
    x_in = keras.Input(shape=graph.inputs[t.input], name=f"{task}_input")
    values: dict[int, object] = {t.input: x_in}
    for i in graph.nodes_for(task):
        node = graph.nodes[i]
        build = KERAS_NODE_OPS.get(node.op)
        if build is None:
            raise ValueError(f"node {node.name}: op {node.op!r} has no Keras reference")
        x = build(keras, graph, node, values[node.input])
        if node.activation in _ACTIVATIONS:
            x = _ACTIVATIONS[node.activation](keras)(x)
        values[len(graph.inputs) + i] = x
    out = keras.layers.Flatten()(values[t.output])
    return keras.Model(x_in, out, name=f"reference_{task}")


# -- imported source models: layer kind -> fn(keras, layer, x) -------------------------------------
KERAS_LAYER_OPS: dict[str, Callable[..., Any]] = {
    "conv": lambda keras, layer, x: _conv(keras, x, layer, layer.weights, layer.bias),
    "depthwise": lambda keras, layer, x: _depthwise(keras, x, layer, layer.weights, layer.bias),
    "dense": lambda keras, layer, x: _dense(keras, x, layer, layer.weights, layer.bias),
    "max_pool": lambda keras, layer, x: _max_pool(keras, x, layer, _source_pool_padding(layer)),
    "avg_pool": lambda keras, layer, x: _avg_pool(keras, x, layer, _source_pool_padding(layer)),
    "global_avg_pool": lambda keras, layer, x: keras.layers.GlobalAveragePooling2D()(x),
    "flatten": lambda keras, layer, x: keras.layers.Flatten()(x),
    "activation": lambda keras, layer, x: x,
}
# kinds that read a flat value as it is; the others read a (1, 1, n) value as a map
_FLAT_KINDS = ("dense", "flatten", "activation")


def build_source_keras(source) -> tuple[object, dict[str, object]]:
    """A keras.Model running an imported `SourceModel` exactly as `forward_numpy` does, and its layer outputs.

    Returns (model, outputs): `model` maps x [N, h, w, c] to the model's predictions (the dropped final
    softmax applied again when `head_activation` is "softmax", so they equal the original file's outputs);
    `outputs` maps every layer's `match_output` (the framework's name for that output: a Keras layer name, or
    for .tflite files the output tensor name) to its symbolic output (after the fused activation), for
    building models with extra outputs, e.g. `keras.Model(model.inputs, [outputs[name], model.outputs[0]])`.
    Flat values are [N, n] as in Keras (the SourceModel's (1, 1, n)). Layer names are not used as Keras names
    (TFLite tensor names hold characters Keras refuses)."""
    import keras

    x_in = keras.Input(shape=tuple(source.input_shape), name="input")
    x = x_in
    outputs: dict[str, object] = {}
    for layer in source.layers:
        if len(x.shape) == 2 and layer.kind not in _FLAT_KINDS:
            x = keras.layers.Reshape(tuple(layer.in_shape))(x)       # a flat (1, 1, n) value read as a map
        build = KERAS_LAYER_OPS.get(layer.kind)
        if build is None:
            raise ValueError(f"layer {layer.name!r}: unknown kind {layer.kind!r}")
        x = build(keras, layer, x)
        if layer.activation in _ACTIVATIONS:
            x = _ACTIVATIONS[layer.activation](keras)(x)
        elif layer.activation != Act.NONE:
            raise ValueError(f"layer {layer.name!r}: unknown activation {layer.activation!r}")
        if layer.match_output:
            outputs[layer.match_output] = x
    y = keras.layers.Flatten()(x)
    if source.head_activation == "softmax":
        y = keras.layers.Softmax()(y)
    return keras.Model(x_in, y, name="source"), outputs


def reference_logits(graph: MergedGraph, task: str, x: np.ndarray) -> np.ndarray:
    model = build_keras_reference(graph, task)
    return np.asarray(model(np.asarray(x, dtype=np.float32), training=False))
