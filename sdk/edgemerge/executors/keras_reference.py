"""Ordinary TensorFlow/Keras models rebuilt from edgemerge's own forms.

- `build_keras_reference`: a merged graph with its *decoded* weights. This is the independent reference the
  C runtime is checked against: LUT layers become plain Conv2D/Dense layers whose weights are the codebook
  lookups (`graph.decoded_weights`), so any disagreement between the two is a bug in the runtime's
  table-lookup arithmetic, not in quantisation.
- `build_source_keras`: an imported `SourceModel` (what an importer read from a .keras or .tflite file), with
  an output per layer. Calibration uses it to run original models that Keras cannot load itself (.tflite):
  the L1 targets and the originals' predictions then come from the very weights the merge encoded.
"""
from __future__ import annotations

import numpy as np

from edgemerge.emm.constants import NONE, Act, Op
from edgemerge.emm.graph import MergedGraph, Node, decoded_weights


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


def _source_pool_padding(layer) -> str:
    """Keras pools only know 'valid' and 'same'; an imported pool's explicit pads must be one of them."""
    from edgemerge.importers import same_padding

    if layer.pads == (0, 0, 0, 0):
        return "valid"
    top, bottom = same_padding(layer.in_shape[0], layer.kernel[0], layer.stride[0])
    left, right = same_padding(layer.in_shape[1], layer.kernel[1], layer.stride[1])
    if layer.pads == (top, left, bottom, right):
        return "same"
    raise ValueError(f"layer {layer.name}: pool pads {layer.pads} match neither 'valid' nor 'same'")


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

    def weighted(layer_obj, arrays):
        nonlocal x
        x = layer_obj(x)
        layer_obj.set_weights(arrays)

    for layer in source.layers:
        bias = [layer.bias] if layer.bias is not None else []
        if len(x.shape) == 2 and layer.kind not in ("dense", "flatten", "activation"):
            x = keras.layers.Reshape(tuple(layer.in_shape))(x)       # a flat (1, 1, n) value read as a map
        if layer.kind in ("conv", "depthwise"):
            top, left, bottom, right = layer.pads
            if any(layer.pads):
                x = keras.layers.ZeroPadding2D(((top, bottom), (left, right)))(x)
            if layer.kind == "conv":
                conv = keras.layers.Conv2D(layer.weights.shape[3], layer.kernel, layer.stride, padding="valid",
                                           use_bias=bool(bias))
            else:
                conv = keras.layers.DepthwiseConv2D(layer.kernel, layer.stride, padding="valid",
                                                    depth_multiplier=layer.weights.shape[3], use_bias=bool(bias))
            weighted(conv, [layer.weights] + bias)
        elif layer.kind == "dense":
            x = keras.layers.Flatten()(x)
            weighted(keras.layers.Dense(layer.weights.shape[1], use_bias=bool(bias)), [layer.weights] + bias)
        elif layer.kind == "max_pool":
            x = keras.layers.MaxPooling2D(layer.kernel, layer.stride, padding=_source_pool_padding(layer))(x)
        elif layer.kind == "avg_pool":
            x = keras.layers.AveragePooling2D(layer.kernel, layer.stride, padding=_source_pool_padding(layer))(x)
        elif layer.kind == "global_avg_pool":
            x = keras.layers.GlobalAveragePooling2D()(x)
        elif layer.kind == "flatten":
            x = keras.layers.Flatten()(x)
        elif layer.kind != "activation":
            raise ValueError(f"layer {layer.name!r}: unknown kind {layer.kind!r}")
        if layer.activation == Act.RELU:
            x = keras.layers.ReLU()(x)
        elif layer.activation == Act.RELU6:
            x = keras.layers.ReLU(max_value=6.0)(x)
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
