"""Importer for Keras models (`.keras`, and legacy `.h5`): Sequential models and Functional graphs (any DAG
of supported layers: residual Add, Concatenate, squeeze-and-excite Multiply, ...), e.g. a
`keras.applications.MobileNetV2(weights=None)` or a ResNet with projection shortcuts, as they are.

Supported layers and how they map (anything else raises `UnsupportedLayerError` naming the layer and type):

- InputLayer, Dropout (and the other inference-time identities: SpatialDropout, GaussianNoise, Identity,
  ...), Activation('linear'), Rescaling(1, 0): nothing.
- Conv2D: "conv" (stride up to MAX_STRIDE, padding same/valid, dilation 1, groups 1).
- DepthwiseConv2D: "depthwise" (depth_multiplier M; output channel c·M + m).
- Dense: "dense" (on a flat input, or a (1, 1, n) map).
- BatchNormalization: folded into the Conv2D/DepthwiseConv2D/Dense whose output it alone reads, before its
  activation: w' = w·γ/√(var+ε), b' = (b−μ)·γ/√(var+ε) + β. Elsewhere (after an Add, a pool, the input)
  it is refused, naming the layer.
- ReLU (max_value None or 6), Activation relu/relu6/sigmoid/hard_sigmoid/hard_swish (hard_silu)/swish (silu)
  and a layer's own `activation`: fused into the layer before it when that layer is a weighted layer, an
  activation or a join that nothing else reads and the two compose; else a standalone "activation" layer.
- softmax (an activation, or a Softmax layer over the last axis): only as the model's last operation;
  dropped (outputs are logits), recorded in `head_activation`.
- Add (equal shapes), Concatenate (over channels), Multiply (equal shapes, or an (H, W, C) map times a
  (1, 1, C) gate: squeeze-and-excite): "add" / "concat" / "mul".
- ZeroPadding2D: "pad", folded into the conv / depthwise it alone feeds (the pads add up, staying smaller
  than the kernel); else an explicit PAD.
- MaxPooling2D, AveragePooling2D (same/valid): "max_pool" / "avg_pool".
- GlobalAveragePooling2D (keepdims or not): "global_avg_pool" (a flat vector is (1, 1, C) either way).
- Flatten, and Reshape to a flat (n,) shape: "flatten" (nothing when the input is already flat); Reshape of a
  flat value to (1, 1, n): nothing.

'same' padding becomes explicit (top, left, bottom, right) pads exactly as TensorFlow computes them. Layers
are read without fusing anything; `dag_fold` then folds BatchNorm, pads and activations, knowing every
layer's readers. Loading always uses `safe_mode=True` (no Lambda layers or arbitrary code).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgemerge.emm.constants import MAX_KERNEL, MAX_PAD, MAX_STRIDE, Act
from edgemerge.errors import ModelFormatError, UnsupportedLayerError
from edgemerge.importers import dag_fold
from edgemerge.importers.source_model import (
    MODEL_INPUT,
    Shape3,
    SourceLayer,
    SourceModel,
    conv_output_size,
    same_padding,
)

SUPPORTED_LAYER_TYPES: tuple[str, ...] = (
    "Conv2D", "DepthwiseConv2D", "Dense", "BatchNormalization", "ReLU", "Activation", "Softmax (last)",
    "Add", "Concatenate", "Multiply", "ZeroPadding2D", "MaxPooling2D", "AveragePooling2D",
    "GlobalAveragePooling2D", "Flatten", "Reshape", "Dropout", "Rescaling (1, 0)", "InputLayer")
# Activations that become a format activation; "softmax" is handled separately (last layer only).
_ACTIVATIONS: dict[str, Act] = {
    "linear": Act.NONE, "relu": Act.RELU, "relu6": Act.RELU6, "sigmoid": Act.SIGMOID,
    "hard_sigmoid": Act.HARD_SIGMOID, "hard_swish": Act.HARD_SWISH, "hard_silu": Act.HARD_SWISH,
    "swish": Act.SWISH, "silu": Act.SWISH}
# Layers that compute nothing at inference.
_IDENTITY_LAYER_TYPES = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
                         "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity", "InputLayer")
_JOIN_LAYER_TYPES = ("Add", "Concatenate", "Multiply")


def _import_keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    return keras


def _to_numpy(variable: Any) -> np.ndarray:
    # Variable.numpy() rather than keras.ops.convert_to_numpy, which warns under numpy 2 (copy keyword).
    return np.array(variable.numpy())


class _GraphBuilder:
    """Turns Keras layers, in topological order, into unfused `SourceLayer`s with explicit inputs.

    `value_of` maps a Keras layer name to the name of the value its output is (a SourceLayer's name, or
    MODEL_INPUT); identity layers map to their input's value."""

    def __init__(self, file_name: str, input_shape: Shape3, output_layer_name: str):
        self.file_name = file_name
        self.input_shape = input_shape
        self.output_layer_name = output_layer_name     # the Keras layer whose output is the model's output
        self.layers: list[SourceLayer] = []
        self.shapes: dict[str, Shape3] = {MODEL_INPUT: input_shape}
        self.value_of: dict[str, str] = {}
        self.keras_type: dict[str, str] = {}          # SourceLayer name -> Keras type (for messages)
        self.head_activation = "linear"
        self._handlers: dict[str, Callable[[Any, list[str], list[tuple]], str]] = {
            "Conv2D": self._conv2d, "DepthwiseConv2D": self._depthwise, "Dense": self._dense,
            "BatchNormalization": self._batch_norm, "ReLU": self._relu, "Activation": self._activation_layer,
            "Softmax": self._softmax_layer, "Add": self._join, "Concatenate": self._join, "Multiply": self._join,
            "ZeroPadding2D": self._zero_padding, "MaxPooling2D": self._pool, "AveragePooling2D": self._pool,
            "GlobalAveragePooling2D": self._global_avg_pool, "Flatten": self._flatten, "Reshape": self._reshape,
            "Rescaling": self._rescaling,
        }

    # -- helpers ----------------------------------------------------------------------------------
    def unsupported(self, layer: Any, why: str | None = None) -> UnsupportedLayerError:
        kind = type(layer).__name__
        if why is None:
            return UnsupportedLayerError(
                f"{self.file_name}: layer '{layer.name}' of type {kind} is not supported "
                f"(supported: {', '.join(SUPPORTED_LAYER_TYPES)})")
        return UnsupportedLayerError(f"{self.file_name}: layer '{layer.name}' of type {kind}: {why}")

    def refuse_source(self, layer: SourceLayer, why: str) -> UnsupportedLayerError:
        return UnsupportedLayerError(f"{self.file_name}: layer '{layer.name}' of type "
                                     f"{self.keras_type.get(layer.name, layer.kind)}: {why}")

    def _require_channels_last(self, layer: Any) -> None:
        data_format = getattr(layer, "data_format", "channels_last")
        if data_format != "channels_last":
            raise self.unsupported(layer, f"data_format {data_format!r} is not supported (only channels_last)")

    @staticmethod
    def _is_flat(shape: Shape3) -> bool:
        return shape[0] == 1 and shape[1] == 1

    def _activation_of(self, layer: Any, fn: Any) -> Act | None:
        """Format activation of a Keras activation function; None for softmax (allowed on the last layer)."""
        return self._activation_named(layer, getattr(fn, "__name__", type(fn).__name__))

    def _activation_named(self, layer: Any, name: str) -> Act | None:
        if name == "softmax":
            if layer.name != self.output_layer_name:
                raise self.unsupported(layer, "softmax is only supported as the model's last operation")
            self.head_activation = "softmax"
            return None
        if name not in _ACTIVATIONS:
            raise self.unsupported(layer, f"activation {name!r} is not supported "
                                          f"(supported: {', '.join(_ACTIVATIONS)}, softmax on the last layer)")
        return _ACTIVATIONS[name]

    def _spatial(self, layer: Any, shape: Shape3, kernel: tuple[int, int], stride: tuple[int, int], padding: str
                 ) -> tuple[tuple[int, int, int, int], int, int]:
        """Explicit pads and the output size of a windowed layer on an input of `shape`."""
        h, w, _ = shape
        if any(k < 1 or k > MAX_KERNEL for k in kernel):
            raise self.unsupported(layer, f"kernel {kernel} is outside 1..{MAX_KERNEL}")
        if any(s < 1 or s > MAX_STRIDE for s in stride):
            raise self.unsupported(layer, f"stride {stride} is outside 1..{MAX_STRIDE}")
        if padding == "same":
            top, bottom = same_padding(h, kernel[0], stride[0])
            left, right = same_padding(w, kernel[1], stride[1])
        elif padding == "valid":
            top = left = bottom = right = 0
        else:
            raise self.unsupported(layer, f"padding {padding!r} is not supported (only 'same' and 'valid')")
        oh = conv_output_size(h, kernel[0], stride[0], top, bottom)
        ow = conv_output_size(w, kernel[1], stride[1], left, right)
        if oh < 1 or ow < 1:
            raise self.unsupported(layer, f"kernel {kernel} does not fit the {h}x{w} input")
        return (top, left, bottom, right), oh, ow

    def _emit(self, layer: Any, source_layer: SourceLayer, activation_fn: Any | None = None) -> str:
        source_layer.match_output = layer.name
        if activation_fn is not None:
            act = self._activation_of(layer, activation_fn)
            if act is None:                    # softmax dropped: the output is no longer the layer's output
                source_layer.match_output = ""
            else:
                source_layer.activation = act
        self.layers.append(source_layer)
        self.shapes[source_layer.name] = source_layer.out_shape
        self.keras_type[source_layer.name] = type(layer).__name__
        return source_layer.name

    def _standalone_activation(self, layer: Any, value: str, act: Act) -> str:
        shape = self.shapes[value]
        return self._emit(layer, SourceLayer(layer.name, "activation", shape, shape, activation=act,
                                             inputs=(value,)))

    @staticmethod
    def _one(layer_inputs: list[str]) -> str:
        return layer_inputs[0]

    # -- layers -----------------------------------------------------------------------------------
    def add(self, layer: Any, inputs: list[str], keras_shapes: list[tuple]) -> None:
        """Reads one Keras layer whose inputs are the Keras layers `inputs` (names; MODEL_INPUT for the input)
        with Keras shapes `keras_shapes` (batch dimension dropped)."""
        kind = type(layer).__name__
        values = [self.value_of.get(name, name) for name in inputs]
        if kind in _IDENTITY_LAYER_TYPES:
            self.value_of[layer.name] = values[0] if values else MODEL_INPUT
            return
        handler = self._handlers.get(kind)
        if handler is None:
            raise self.unsupported(layer)
        if kind not in _JOIN_LAYER_TYPES and len(values) != 1:
            raise self.unsupported(layer, f"reads {len(values)} inputs, expected 1")
        self.value_of[layer.name] = handler(layer, values, keras_shapes)

    def _conv2d(self, layer: Any, values: list[str], _shapes) -> str:
        self._require_channels_last(layer)
        if tuple(layer.dilation_rate) != (1, 1):
            raise self.unsupported(layer, f"dilation_rate {tuple(layer.dilation_rate)} is not supported (only 1)")
        if getattr(layer, "groups", 1) != 1:
            raise self.unsupported(layer, f"groups={layer.groups} is not supported (only 1)")
        value = self._one(values)
        shape = self.shapes[value]
        kernel, stride = tuple(layer.kernel_size), tuple(layer.strides)
        pads, oh, ow = self._spatial(layer, shape, kernel, stride, layer.padding)
        weights = _to_numpy(layer.kernel).astype(np.float32)
        bias = _to_numpy(layer.bias).astype(np.float32) if layer.use_bias else None
        return self._emit(layer, SourceLayer(layer.name, "conv", shape, (oh, ow, int(weights.shape[3])),
                                             weights=weights, bias=bias, kernel=kernel, stride=stride, pads=pads,
                                             inputs=(value,)), layer.activation)

    def _depthwise(self, layer: Any, values: list[str], _shapes) -> str:
        self._require_channels_last(layer)
        if tuple(layer.dilation_rate) != (1, 1):
            raise self.unsupported(layer, f"dilation_rate {tuple(layer.dilation_rate)} is not supported (only 1)")
        value = self._one(values)
        shape = self.shapes[value]
        kernel, stride = tuple(layer.kernel_size), tuple(layer.strides)
        pads, oh, ow = self._spatial(layer, shape, kernel, stride, layer.padding)
        weights = _to_numpy(layer.kernel).astype(np.float32)        # [KH, KW, C, M]
        bias = _to_numpy(layer.bias).astype(np.float32) if layer.use_bias else None
        out_c = int(weights.shape[2] * weights.shape[3])
        return self._emit(layer, SourceLayer(layer.name, "depthwise", shape, (oh, ow, out_c), weights=weights,
                                             bias=bias, kernel=kernel, stride=stride, pads=pads, inputs=(value,)),
                          layer.activation)

    def _dense(self, layer: Any, values: list[str], _shapes) -> str:
        value = self._one(values)
        shape = self.shapes[value]
        if not self._is_flat(shape):
            raise self.unsupported(layer, f"Dense on a non-flat {shape} input is not supported "
                                          "(add a Flatten or GlobalAveragePooling2D before it)")
        weights = _to_numpy(layer.kernel).astype(np.float32)        # [In, Out]
        bias = _to_numpy(layer.bias).astype(np.float32) if layer.use_bias else None
        return self._emit(layer, SourceLayer(layer.name, "dense", shape, (1, 1, int(weights.shape[1])),
                                             weights=weights, bias=bias, inputs=(value,)), layer.activation)

    def _batch_norm(self, layer: Any, values: list[str], _shapes) -> str:
        axis = layer.axis if isinstance(layer.axis, int) else tuple(layer.axis)
        if axis not in (-1, 3, [-1], [3], (-1,), (3,)):
            raise self.unsupported(layer, f"axis {axis} is not supported (only the channel axis, -1)")
        value = self._one(values)
        shape = self.shapes[value]
        channels = shape[2]
        gamma = _to_numpy(layer.gamma).astype(np.float64) if layer.scale else np.ones(channels)
        beta = _to_numpy(layer.beta).astype(np.float64) if layer.center else np.zeros(channels)
        mean = _to_numpy(layer.moving_mean).astype(np.float64)
        variance = _to_numpy(layer.moving_variance).astype(np.float64)
        scale = gamma / np.sqrt(variance + float(layer.epsilon))
        # a temporary "bn" layer (scale, shift); dag_fold.fold_batch_norms folds it or refuses it
        return self._emit(layer, SourceLayer(layer.name, "bn", shape, shape, weights=scale,      # type: ignore
                                             bias=beta - mean * scale, inputs=(value,)))

    def _relu(self, layer: Any, values: list[str], _shapes) -> str:
        negative_slope = float(getattr(layer, "negative_slope", 0.0) or 0.0)
        threshold = float(getattr(layer, "threshold", 0.0) or 0.0)
        max_value = layer.max_value
        if negative_slope != 0.0 or threshold != 0.0:
            raise self.unsupported(layer, f"negative_slope={negative_slope}, threshold={threshold} are not "
                                          "supported (only 0)")
        if max_value is None:
            act = Act.RELU
        elif float(max_value) == 6.0:
            act = Act.RELU6
        else:
            raise self.unsupported(layer, f"max_value={float(max_value)} is not supported (only None or 6)")
        return self._standalone_activation(layer, self._one(values), act)

    def _activation_layer(self, layer: Any, values: list[str], _shapes) -> str:
        act = self._activation_of(layer, layer.activation)
        if act is None or act == Act.NONE:        # softmax (None) is dropped, linear is nothing
            return self._one(values)
        return self._standalone_activation(layer, self._one(values), act)

    def _softmax_layer(self, layer: Any, values: list[str], _shapes) -> str:
        axis = layer.axis if isinstance(layer.axis, int) else tuple(layer.axis)
        if axis not in (-1, (-1,)):
            raise self.unsupported(layer, f"softmax over axis {axis} is not supported (only the last axis)")
        self._activation_named(layer, "softmax")     # allowed as the last operation only; then dropped
        return self._one(values)

    def _join(self, layer: Any, values: list[str], keras_shapes: list[tuple]) -> str:
        kind = type(layer).__name__
        if len(values) < 2:
            raise self.unsupported(layer, f"joins {len(values)} input(s), expected at least 2")
        shapes = [self.shapes[v] for v in values]
        if kind == "Add":
            if len(set(keras_shapes)) != 1:
                raise self.unsupported(layer, f"adds inputs of shapes {keras_shapes}; only equal shapes are "
                                              "supported (no broadcasting)")
            return self._emit(layer, SourceLayer(layer.name, "add", shapes[0], shapes[0], inputs=tuple(values)))
        if kind == "Concatenate":
            rank = len(keras_shapes[0])
            if int(layer.axis) not in (-1, rank) or len({len(s) for s in keras_shapes}) != 1:
                raise self.unsupported(layer, f"concatenation over axis {layer.axis} of inputs {keras_shapes} "
                                              "is not supported (only over channels, the last axis)")
            if len({s[:2] for s in shapes}) != 1:
                raise self.unsupported(layer, f"joins inputs of different spatial sizes {shapes}")
            out = (shapes[0][0], shapes[0][1], sum(s[2] for s in shapes))
            return self._emit(layer, SourceLayer(layer.name, "concat", shapes[0], out, inputs=tuple(values)))
        # Multiply: equal shapes, or one (1, 1, C) gate (rank 4 in Keras too) scaling an (H, W, C) map
        if len(values) != 2:
            raise self.unsupported(layer, f"multiplies {len(values)} inputs; only 2 are supported")
        a, b = keras_shapes
        if a != b:
            gate_ok = len(a) == len(b) == 3 and a[2] == b[2] and (a[:2] == (1, 1) or b[:2] == (1, 1))
            if not gate_ok:
                raise self.unsupported(layer, f"multiplies inputs of shapes {a} and {b}; only equal shapes or an "
                                              "(H, W, C) map times a (1, 1, C) gate are supported")
            if a[:2] == (1, 1):        # the map first, the gate second (SourceLayer "mul")
                values = [values[1], values[0]]
                shapes = [shapes[1], shapes[0]]
        return self._emit(layer, SourceLayer(layer.name, "mul", shapes[0], shapes[0], inputs=tuple(values)))

    def _zero_padding(self, layer: Any, values: list[str], _shapes) -> str:
        self._require_channels_last(layer)
        (top, bottom), (left, right) = (tuple(int(p) for p in axis) for axis in layer.padding)
        pads = (top, left, bottom, right)
        if any(p < 0 or p > MAX_PAD for p in pads):
            raise self.unsupported(layer, f"padding {pads} is outside 0..{MAX_PAD}")
        value = self._one(values)
        h, w, c = self.shapes[value]
        return self._emit(layer, SourceLayer(layer.name, "pad", (h, w, c), (h + top + bottom, w + left + right, c),
                                             pads=pads, inputs=(value,)))

    def _pool(self, layer: Any, values: list[str], _shapes) -> str:
        self._require_channels_last(layer)
        value = self._one(values)
        shape = self.shapes[value]
        kernel, stride = tuple(layer.pool_size), tuple(layer.strides)
        pads, oh, ow = self._spatial(layer, shape, kernel, stride, layer.padding)
        kind = "max_pool" if type(layer).__name__ == "MaxPooling2D" else "avg_pool"
        return self._emit(layer, SourceLayer(layer.name, kind, shape, (oh, ow, shape[2]), kernel=kernel,
                                             stride=stride, pads=pads, inputs=(value,)))

    def _global_avg_pool(self, layer: Any, values: list[str], _shapes) -> str:
        self._require_channels_last(layer)
        value = self._one(values)
        shape = self.shapes[value]
        return self._emit(layer, SourceLayer(layer.name, "global_avg_pool", shape, (1, 1, shape[2]),
                                             inputs=(value,)))

    def _flatten(self, layer: Any, values: list[str], _shapes) -> str:
        self._require_channels_last(layer)
        value = self._one(values)
        shape = self.shapes[value]
        if self._is_flat(shape):
            return value                  # already a vector: nothing to do
        n = shape[0] * shape[1] * shape[2]
        return self._emit(layer, SourceLayer(layer.name, "flatten", shape, (1, 1, n), inputs=(value,)))

    def _reshape(self, layer: Any, values: list[str], shapes) -> str:
        value = self._one(values)
        shape = self.shapes[value]
        n = shape[0] * shape[1] * shape[2]
        target = tuple(layer.target_shape)
        if target in ((n,), (-1,)):
            return self._flatten(layer, values, shapes)
        if self._is_flat(shape) and target in ((1, 1, n), (1, 1, -1)):
            return value                  # (n,) and (1, 1, n) are the same value in a SourceModel
        raise self.unsupported(layer, f"Reshape to {target} is not supported (only a flatten to ({n},), or a flat "
                                      f"value to (1, 1, {n}))")

    def _rescaling(self, layer: Any, values: list[str], _shapes) -> str:
        scale, offset = np.asarray(layer.scale, np.float64), np.asarray(layer.offset, np.float64)
        if not (np.all(scale == 1.0) and np.all(offset == 0.0)):
            raise self.unsupported(layer, f"scale {layer.scale}, offset {layer.offset}: only the identity "
                                          "(1, 0) is supported; scale the input data instead")
        return self._one(values)

    # -- after reading ----------------------------------------------------------------------------
    def finish(self) -> list[SourceLayer]:
        """Folds BatchNorm, pads and activations (dag_fold) and returns the layers (the output last: every
        other layer leads to it, check_topology verifies that)."""
        layers = self.layers
        dag_fold.fold_batch_norms(layers, self.refuse_source)
        dag_fold.fold_pads(layers)
        dag_fold.fuse_activations(layers)
        return layers


def _keras_history(tensor: Any) -> tuple[Any, int]:
    history = tensor._keras_history
    return history.operation, int(getattr(history, "tensor_index", 0))


def _layer_graph(model: Any, file_name: str) -> tuple[list[tuple[Any, list[str], list[tuple]]], str]:
    """The model's layers in topological order, each with the names of the layers it reads (MODEL_INPUT for the
    model input) and their Keras shapes without the batch axis; and the name of the output layer."""
    keras = _import_keras()
    if isinstance(model, keras.Sequential):
        chain = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
        out, previous = [], MODEL_INPUT
        for layer in chain:
            out.append((layer, [previous], []))
            previous = layer.name
        return out, previous
    if len(model.inputs) != 1:
        raise ModelFormatError(f"{file_name}: the model has {len(model.inputs)} inputs; only single-input "
                               "models are supported")
    if len(model.outputs) != 1:
        raise ModelFormatError(f"{file_name}: the model has {len(model.outputs)} outputs; only single-output "
                               "models are supported")
    operations = list(getattr(model, "operations", None) or model.layers)
    entries: dict[str, tuple[Any, list[str], list[tuple]]] = {}
    order: list[str] = []
    for layer in operations:
        # Keras keeps the call graph in each layer's inbound nodes (one node per call).
        nodes = getattr(layer, "_inbound_nodes", [])
        if len(nodes) > 1:
            raise ModelFormatError(f"{file_name}: layer '{layer.name}' is called {len(nodes)} "
                                   "times (a shared layer); only layers called once are supported")
        if type(layer).__name__ == "InputLayer" or not nodes:
            continue
        producers, shapes = [], []
        for tensor in nodes[0].input_tensors:
            operation, index = _keras_history(tensor)
            if index != 0:
                raise ModelFormatError(f"{file_name}: layer '{layer.name}' reads output {index} of "
                                       f"'{operation.name}'; only single-output layers are supported")
            producers.append(MODEL_INPUT if type(operation).__name__ == "InputLayer" else operation.name)
            shapes.append(tuple(tensor.shape[1:]))
        entries[layer.name] = (layer, producers, shapes)
        order.append(layer.name)
    # Kahn's algorithm, stable in the model's own layer order (which Keras already keeps topological)
    pending = {name: {p for p in entries[name][1] if p != MODEL_INPUT} for name in order}
    for name, needs in pending.items():
        unknown = needs - entries.keys()
        if unknown:
            raise ModelFormatError(f"{file_name}: layer '{name}' reads '{sorted(unknown)[0]}', which is not a "
                                   "layer of the model")
    ordered: list[str] = []
    done: set[str] = set()
    while len(ordered) < len(order):
        ready = [n for n in order if n not in done and pending[n] <= done]
        if not ready:
            raise ModelFormatError(f"{file_name}: the layers form a cycle")
        ordered.append(ready[0])
        done.add(ready[0])
    output_operation, _ = _keras_history(model.outputs[0])
    output_name = MODEL_INPUT if type(output_operation).__name__ == "InputLayer" else output_operation.name
    return [entries[name] for name in ordered], output_name


def _input_shape(model: Any, file_name: str) -> Shape3:
    try:
        shape = tuple(model.inputs[0].shape)
    except (AttributeError, IndexError, ValueError):
        raise ModelFormatError(f"{file_name}: the model has no known input shape (build it with an Input)")
    if len(shape) != 4 or any(d is None for d in shape[1:]):
        raise ModelFormatError(f"{file_name}: input shape {shape} is not supported; expected "
                               "(batch, height, width, channels) with known sizes")
    return int(shape[1]), int(shape[2]), int(shape[3])


def keras_to_source(model: Any, path: Path) -> SourceModel:
    """Imports an in-memory keras.Model (what `load_keras_model` does after loading the file)."""
    file_name = path.name
    graph, output_name = _layer_graph(model, file_name)
    computing = [layer for layer, _, _ in graph if type(layer).__name__ not in _IDENTITY_LAYER_TYPES]
    if not computing:
        raise ModelFormatError(f"{file_name}: the model has no layers")
    input_shape = _input_shape(model, file_name)
    builder = _GraphBuilder(file_name, input_shape, output_name)
    for layer, inputs, shapes in graph:
        builder.add(layer, inputs, shapes)
    if builder.value_of.get(output_name, MODEL_INPUT) == MODEL_INPUT:
        raise ModelFormatError(f"{file_name}: the model's output is its input; it computes nothing")
    layers = builder.finish()
    dag_fold.drop_implicit_inputs(layers)
    source = SourceModel(name=path.stem, path=path, input_shape=input_shape, layers=layers,
                         param_bytes=4 * int(model.count_params()), head_activation=builder.head_activation)
    try:
        source.check_topology()
    except ValueError as e:
        raise ModelFormatError(f"{file_name}: {e}") from None
    return source


def load_keras_model(path: Path) -> SourceModel:
    """Imports a `.keras` or `.h5` model file (see the module docstring for what is supported)."""
    keras = _import_keras()
    try:
        model = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as e:           # Keras raises many types (ValueError, OSError, TypeError...)
        raise ModelFormatError(f"{path}: cannot load as a Keras model ({type(e).__name__}: {e})") from None
    if not isinstance(model, keras.Model):
        raise ModelFormatError(f"{path}: holds a {type(model).__name__}, not a Keras model")
    return keras_to_source(model, path)
