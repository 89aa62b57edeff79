"""Ordinary TensorFlow/Keras models rebuilt from edgemerge's own forms.

- `build_keras_reference`: a merged graph with its *decoded* weights. This is the independent reference the
  C runtime is checked against: LUT layers become plain Conv2D/Dense layers whose weights are the codebook
  lookups (`graph.decoded_weights`), so any disagreement between the two is a bug in the runtime's
  table-lookup arithmetic, not in quantisation.
- `build_source_keras`: an imported `SourceModel` (what an importer read from a .keras or .tflite file), with
  an output per layer; chains and graphs with branches (every layer reads its named inputs). Calibration uses it to run original models that Keras cannot load itself (.tflite):
  the L1 targets and the originals' predictions then come from the very weights the merge encoded.

Each form has ONE table keyed by op: `KERAS_NODE_OPS` (merged-graph op) and `KERAS_LAYER_OPS` (source-layer
kind); both use the same layer builders (`_conv`, `_depthwise`, `_dense`, `_pool`), since a `Node` and a
`SourceLayer` name kernel, stride and pads alike. A new op is one row in each. Both read a list of inputs (one
for most ops, several for ADD / CONCAT / MUL) and keep every value 4-D, a flat vector as (1, 1, n), so that
joins of flat and spatial values broadcast as the format says (MUL of (H, W, C) by (1, 1, C)).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from edgemerge.emm.constants import NONE, Act, Op
from edgemerge.emm.graph import MergedGraph, Node, decoded_weights
from edgemerge.emm.shapes import keras_padding
from edgemerge.importers.source_model import MODEL_INPUT

# Act -> a Keras layer (Act.NONE adds none). Keras 3's hard_sigmoid is relu6(x + 3) / 6 and hard_silu
# x · hard_sigmoid(x), as docs/FORMAT.md defines HARD_SIGMOID / HARD_SWISH; silu is swish.
_ACTIVATIONS: dict[Act, Callable[[Any], Any]] = {
    Act.RELU: lambda keras: keras.layers.ReLU(),
    Act.RELU6: lambda keras: keras.layers.ReLU(max_value=6.0),
    Act.SIGMOID: lambda keras: keras.layers.Activation("sigmoid"),
    Act.HARD_SIGMOID: lambda keras: keras.layers.Activation("hard_sigmoid"),
    Act.HARD_SWISH: lambda keras: keras.layers.Activation("hard_silu"),
    Act.SWISH: lambda keras: keras.layers.Activation("silu"),
}


def _activate(keras, x, activation: Act, what: str):
    if activation in _ACTIVATIONS:
        return _ACTIVATIONS[activation](keras)(x)
    if activation != Act.NONE:
        raise ValueError(f"{what}: unknown activation {activation!r}")
    return x


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
    x = _weighted(keras.layers.Dense(weights.shape[1], use_bias=bias is not None), x, weights, bias)
    return keras.layers.Reshape((1, 1, weights.shape[1]))(x)


def _join(kind: str):
    """ADD / CONCAT / MUL of a list of 4-D values (Keras' Multiply broadcasts a (1, 1, C) gate)."""
    def build(keras, xs):
        if kind == "mul":
            return keras.layers.Multiply()(xs)
        return keras.layers.Add()(xs) if kind == "add" else keras.layers.Concatenate(axis=-1)(xs)
    return build


_add, _concat, _mul = _join("add"), _join("concat"), _join("mul")


def _pool(layer_class: str):
    def build(keras, x, spec, padding: str):
        return getattr(keras.layers, layer_class)(spec.kernel, spec.stride, padding=padding)(x)
    return build


_max_pool, _avg_pool = _pool("MaxPooling2D"), _pool("AveragePooling2D")


# -- merged graphs: op -> fn(keras, graph, node, x) ------------------------------------------------
def _node_bias(graph: MergedGraph, node: Node) -> np.ndarray | None:
    return graph.tensors[node.bias].array if node.bias != NONE else None


# fn(keras, graph, node, xs): xs are the node's inputs in order (one for single-input ops)
KERAS_NODE_OPS: dict[Op, Callable[..., Any]] = {
    Op.CONV2D: lambda keras, g, n, xs: _conv(keras, xs[0], n, decoded_weights(g, n), _node_bias(g, n)),
    Op.LUT_CONV2D: lambda keras, g, n, xs: _conv(keras, xs[0], n, decoded_weights(g, n), _node_bias(g, n)),
    Op.DEPTHWISE_CONV2D: lambda keras, g, n, xs: _depthwise(keras, xs[0], n, decoded_weights(g, n),
                                                            _node_bias(g, n)),
    Op.LUT_DEPTHWISE_CONV2D: lambda keras, g, n, xs: _depthwise(keras, xs[0], n, decoded_weights(g, n),
                                                                _node_bias(g, n)),
    Op.DENSE: lambda keras, g, n, xs: _dense(keras, xs[0], n, decoded_weights(g, n), _node_bias(g, n)),
    Op.LUT_DENSE: lambda keras, g, n, xs: _dense(keras, xs[0], n, decoded_weights(g, n), _node_bias(g, n)),
    Op.MAX_POOL: lambda keras, g, n, xs: _max_pool(keras, xs[0], n, _pool_padding(g, n)),
    Op.AVG_POOL: lambda keras, g, n, xs: _avg_pool(keras, xs[0], n, _pool_padding(g, n)),
    Op.GLOBAL_AVG_POOL: lambda keras, g, n, xs: keras.layers.GlobalAveragePooling2D(keepdims=True)(xs[0]),
    Op.RESHAPE: lambda keras, g, n, xs: keras.layers.Reshape(n.out_shape)(xs[0]),
    Op.ACTIVATION: lambda keras, g, n, xs: xs[0],
    Op.ADD: lambda keras, g, n, xs: _add(keras, xs),
    Op.CONCAT: lambda keras, g, n, xs: _concat(keras, xs),
    Op.MUL: lambda keras, g, n, xs: _mul(keras, xs),
    Op.PAD: lambda keras, g, n, xs: _zero_pad(keras, xs[0], n.pads),
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
        x = build(keras, graph, node, [values[v] for v in node.inputs])
        values[len(graph.inputs) + i] = _activate(keras, x, node.activation, f"node {node.name}")
    out = keras.layers.Flatten()(values[t.output])
    return keras.Model(x_in, out, name=f"reference_{task}")


# -- imported source models: layer kind -> fn(keras, layer, x) -------------------------------------
# fn(keras, layer, xs): xs are the layer's inputs in order (`SourceModel.inputs_of`)
KERAS_LAYER_OPS: dict[str, Callable[..., Any]] = {
    "conv": lambda keras, layer, xs: _conv(keras, xs[0], layer, layer.weights, layer.bias),
    "depthwise": lambda keras, layer, xs: _depthwise(keras, xs[0], layer, layer.weights, layer.bias),
    "dense": lambda keras, layer, xs: _dense(keras, xs[0], layer, layer.weights, layer.bias),
    "max_pool": lambda keras, layer, xs: _max_pool(keras, xs[0], layer, _source_pool_padding(layer)),
    "avg_pool": lambda keras, layer, xs: _avg_pool(keras, xs[0], layer, _source_pool_padding(layer)),
    "global_avg_pool": lambda keras, layer, xs: keras.layers.GlobalAveragePooling2D(keepdims=True)(xs[0]),
    "flatten": lambda keras, layer, xs: keras.layers.Reshape(tuple(layer.out_shape))(xs[0]),
    "activation": lambda keras, layer, xs: xs[0],
    "add": lambda keras, layer, xs: _add(keras, xs),
    "concat": lambda keras, layer, xs: _concat(keras, xs),
    "mul": lambda keras, layer, xs: _mul(keras, xs),
    "pad": lambda keras, layer, xs: _zero_pad(keras, xs[0], layer.pads),
}


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
    source.check_topology()
    values: dict[str, object] = {MODEL_INPUT: x_in}
    outputs: dict[str, object] = {}
    x = x_in
    for i, layer in enumerate(source.layers):
        build = KERAS_LAYER_OPS.get(layer.kind)
        if build is None:
            raise ValueError(f"layer {layer.name!r}: unknown kind {layer.kind!r}")
        x = build(keras, layer, [values[name] for name in source.inputs_of(i)])
        x = _activate(keras, x, layer.activation, f"layer {layer.name!r}")
        values[layer.name] = x
        if layer.match_output:
            flat = tuple(layer.out_shape[:2]) == (1, 1)
            outputs[layer.match_output] = keras.layers.Flatten()(x) if flat else x
    y = keras.layers.Flatten()(x)
    if source.head_activation == "softmax":
        y = keras.layers.Softmax()(y)
    return keras.Model(x_in, y, name="source"), outputs


def reference_logits(graph: MergedGraph, task: str, x: np.ndarray) -> np.ndarray:
    model = build_keras_reference(graph, task)
    return np.asarray(model(np.asarray(x, dtype=np.float32), training=False))
