"""Importer for Keras models (`.keras`, and legacy `.h5`): Sequential and Functional single-chain CNNs.

Supported layers and how they map (anything else raises `UnsupportedLayerError` naming the layer):

- InputLayer, Dropout: nothing (identity at inference).
- Conv2D: "conv" (stride up to MAX_STRIDE, padding same/valid, dilation 1, groups 1).
- DepthwiseConv2D: "depthwise" (depth_multiplier M; output channel c·M + m).
- Dense: "dense" (on a flat input).
- BatchNormalization: folded into the directly preceding Conv2D/DepthwiseConv2D/Dense, before its
  activation: w' = w·γ/√(var+ε), b' = (b−μ)·γ/√(var+ε) + β.
- ReLU (max_value None or 6), Activation relu/relu6/linear, and a layer's own `activation`: fused into the
  preceding Conv2D/DepthwiseConv2D/Dense; after any other layer a standalone "activation" layer.
- softmax (an activation, or a Softmax layer over the last axis): only as the model's last operation;
  dropped (outputs are logits), recorded in `head_activation`.
- MaxPooling2D, AveragePooling2D (same/valid): "max_pool" / "avg_pool".
- GlobalAveragePooling2D: "global_avg_pool".
- Flatten, and Reshape to a flat (n,) shape: "flatten" (omitted when the input is already flat).

'same' padding becomes explicit (top, left, bottom, right) pads exactly as TensorFlow computes them.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgemerge.emm.constants import MAX_KERNEL, MAX_STRIDE, Act
from edgemerge.errors import ModelFormatError, UnsupportedLayerError
from edgemerge.importers.source_model import (
    WEIGHTED_KINDS,
    Shape3,
    SourceLayer,
    SourceModel,
    conv_output_size,
    same_padding,
)

SUPPORTED_LAYER_TYPES: tuple[str, ...] = (
    "Conv2D", "DepthwiseConv2D", "Dense", "BatchNormalization", "ReLU", "Activation", "Softmax (last)",
    "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "Flatten", "Reshape", "Dropout", "InputLayer")
# Activations that become a format activation; "softmax" is handled separately (last layer only).
_ACTIVATIONS: dict[str, Act] = {"linear": Act.NONE, "relu": Act.RELU, "relu6": Act.RELU6}
# Layers that compute nothing at inference.
_IDENTITY_LAYER_TYPES = ("Dropout", "InputLayer")


def _import_keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    return keras


def _to_numpy(variable: Any) -> np.ndarray:
    # Variable.numpy() rather than keras.ops.convert_to_numpy, which warns under numpy 2 (copy keyword).
    return np.array(variable.numpy())


def _compose(first: Act, then: Act) -> Act:
    """The single activation equal to applying `first` and then `then` (relu and relu6 compose to relu6)."""
    if first == Act.NONE:
        return then
    if then == Act.NONE:
        return first
    return Act.RELU6 if Act.RELU6 in (first, then) else Act.RELU


class _ChainBuilder:
    """Turns the Keras layers of one chain, in order, into `SourceLayer`s, tracking the current shape."""

    def __init__(self, file_name: str, input_shape: Shape3, last_layer_name: str):
        self.file_name = file_name
        self.shape: Shape3 = input_shape
        self.last_layer_name = last_layer_name     # the last layer that computes something
        self.layers: list[SourceLayer] = []
        self.head_activation = "linear"
        self._handlers: dict[str, Callable[[Any], None]] = {
            "Conv2D": self._conv2d, "DepthwiseConv2D": self._depthwise, "Dense": self._dense,
            "BatchNormalization": self._batch_norm, "ReLU": self._relu, "Activation": self._activation_layer,
            "Softmax": self._softmax_layer,
            "MaxPooling2D": self._pool, "AveragePooling2D": self._pool,
            "GlobalAveragePooling2D": self._global_avg_pool, "Flatten": self._flatten, "Reshape": self._reshape,
        }

    # -- helpers ----------------------------------------------------------------------------------
    def unsupported(self, layer: Any, why: str | None = None) -> UnsupportedLayerError:
        kind = type(layer).__name__
        if why is None:
            return UnsupportedLayerError(
                f"{self.file_name}: layer '{layer.name}' of type {kind} is not supported "
                f"(supported: {', '.join(SUPPORTED_LAYER_TYPES)})")
        return UnsupportedLayerError(f"{self.file_name}: layer '{layer.name}' of type {kind}: {why}")

    def _require_channels_last(self, layer: Any) -> None:
        data_format = getattr(layer, "data_format", "channels_last")
        if data_format != "channels_last":
            raise self.unsupported(layer, f"data_format {data_format!r} is not supported (only channels_last)")

    def _is_flat(self) -> bool:
        return self.shape[0] == 1 and self.shape[1] == 1

    def _activation_of(self, layer: Any, fn: Any) -> Act | None:
        """Format activation of a Keras activation function; None for softmax (allowed on the last layer)."""
        return self._activation_named(layer, getattr(fn, "__name__", type(fn).__name__))

    def _activation_named(self, layer: Any, name: str) -> Act | None:
        if name == "softmax":
            if layer.name != self.last_layer_name:
                raise self.unsupported(layer, "softmax is only supported as the model's last operation")
            self.head_activation = "softmax"
            return None
        if name not in _ACTIVATIONS:
            raise self.unsupported(layer, f"activation {name!r} is not supported "
                                          f"(supported: {', '.join(_ACTIVATIONS)}, softmax on the last layer)")
        return _ACTIVATIONS[name]

    def _spatial(self, layer: Any, kernel: tuple[int, int], stride: tuple[int, int], padding: str
                 ) -> tuple[tuple[int, int, int, int], int, int]:
        """Explicit pads and the output size of a windowed layer on the current input."""
        h, w, _ = self.shape
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

    def _emit(self, layer: Any, source_layer: SourceLayer, activation_fn: Any | None = None) -> None:
        source_layer.match_output = layer.name
        if activation_fn is not None:
            act = self._activation_of(layer, activation_fn)
            if act is None:                    # softmax dropped: the output is no longer the layer's output
                source_layer.match_output = ""
            else:
                source_layer.activation = act
        self.layers.append(source_layer)
        self.shape = source_layer.out_shape

    def _apply_activation(self, layer: Any, act: Act) -> None:
        """A standalone activation: fused into a preceding weighted (or activation) layer, else a layer of
        its own."""
        previous = self.layers[-1] if self.layers else None
        if previous is not None and previous.kind in (*WEIGHTED_KINDS, "activation"):
            previous.activation = _compose(previous.activation, act)
            previous.fused += (layer.name,)
            previous.match_output = layer.name
        else:
            self.layers.append(SourceLayer(layer.name, "activation", self.shape, self.shape, activation=act,
                                           match_output=layer.name))

    # -- layers -----------------------------------------------------------------------------------
    def add(self, layer: Any) -> None:
        kind = type(layer).__name__
        if kind in _IDENTITY_LAYER_TYPES:
            return
        handler = self._handlers.get(kind)
        if handler is None:
            raise self.unsupported(layer)
        handler(layer)

    def _conv2d(self, layer: Any) -> None:
        self._require_channels_last(layer)
        if tuple(layer.dilation_rate) != (1, 1):
            raise self.unsupported(layer, f"dilation_rate {tuple(layer.dilation_rate)} is not supported (only 1)")
        if getattr(layer, "groups", 1) != 1:
            raise self.unsupported(layer, f"groups={layer.groups} is not supported (only 1)")
        kernel, stride = tuple(layer.kernel_size), tuple(layer.strides)
        pads, oh, ow = self._spatial(layer, kernel, stride, layer.padding)
        weights = _to_numpy(layer.kernel).astype(np.float32)
        bias = _to_numpy(layer.bias).astype(np.float32) if layer.use_bias else None
        self._emit(layer, SourceLayer(layer.name, "conv", self.shape, (oh, ow, int(weights.shape[3])),
                                      weights=weights, bias=bias, kernel=kernel, stride=stride, pads=pads),
                   layer.activation)

    def _depthwise(self, layer: Any) -> None:
        self._require_channels_last(layer)
        if tuple(layer.dilation_rate) != (1, 1):
            raise self.unsupported(layer, f"dilation_rate {tuple(layer.dilation_rate)} is not supported (only 1)")
        kernel, stride = tuple(layer.kernel_size), tuple(layer.strides)
        pads, oh, ow = self._spatial(layer, kernel, stride, layer.padding)
        weights = _to_numpy(layer.kernel).astype(np.float32)        # [KH, KW, C, M]
        bias = _to_numpy(layer.bias).astype(np.float32) if layer.use_bias else None
        out_c = int(weights.shape[2] * weights.shape[3])
        self._emit(layer, SourceLayer(layer.name, "depthwise", self.shape, (oh, ow, out_c), weights=weights,
                                      bias=bias, kernel=kernel, stride=stride, pads=pads), layer.activation)

    def _dense(self, layer: Any) -> None:
        if not self._is_flat():
            raise self.unsupported(layer, f"Dense on a non-flat {self.shape} input is not supported "
                                          "(add a Flatten or GlobalAveragePooling2D before it)")
        weights = _to_numpy(layer.kernel).astype(np.float32)        # [In, Out]
        bias = _to_numpy(layer.bias).astype(np.float32) if layer.use_bias else None
        self._emit(layer, SourceLayer(layer.name, "dense", self.shape, (1, 1, int(weights.shape[1])),
                                      weights=weights, bias=bias), layer.activation)

    def _batch_norm(self, layer: Any) -> None:
        axis = layer.axis if isinstance(layer.axis, int) else tuple(layer.axis)
        if axis not in (-1, 3, [-1], [3], (-1,), (3,)):
            raise self.unsupported(layer, f"axis {axis} is not supported (only the channel axis, -1)")
        # Every computing layer emits or fuses into a SourceLayer, so the last one produced our input.
        previous = self.layers[-1] if self.layers else None
        if previous is None or previous.kind not in WEIGHTED_KINDS or previous.activation != Act.NONE:
            follows = f"layer '{previous.name}' ({previous.kind})" if previous else "the model input"
            raise self.unsupported(
                layer, f"cannot be folded: it follows {follows}; only a BatchNormalization directly after a "
                       "Conv2D, DepthwiseConv2D or Dense without activation can be folded into it")
        channels = previous.out_shape[2]
        gamma = _to_numpy(layer.gamma).astype(np.float64) if layer.scale else np.ones(channels)
        beta = _to_numpy(layer.beta).astype(np.float64) if layer.center else np.zeros(channels)
        mean = _to_numpy(layer.moving_mean).astype(np.float64)
        variance = _to_numpy(layer.moving_variance).astype(np.float64)
        scale = gamma / np.sqrt(variance + float(layer.epsilon))
        weights = previous.weights.astype(np.float64)
        if previous.kind == "depthwise":                           # channel c·M + m scales kernel[..., c, m]
            weights = weights * scale.reshape(weights.shape[2], weights.shape[3])
        else:
            weights = weights * scale
        bias = previous.bias.astype(np.float64) if previous.bias is not None else np.zeros(channels)
        previous.weights = weights.astype(np.float32)
        previous.bias = ((bias - mean) * scale + beta).astype(np.float32)
        previous.fused += (layer.name,)
        previous.match_output = layer.name

    def _relu(self, layer: Any) -> None:
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
        self._apply_activation(layer, act)

    def _activation_layer(self, layer: Any) -> None:
        act = self._activation_of(layer, layer.activation)
        if act is not None and act != Act.NONE:        # softmax (None) is dropped, linear is nothing
            self._apply_activation(layer, act)

    def _softmax_layer(self, layer: Any) -> None:
        axis = layer.axis if isinstance(layer.axis, int) else tuple(layer.axis)
        if axis not in (-1, (-1,)):
            raise self.unsupported(layer, f"softmax over axis {axis} is not supported (only the last axis)")
        self._activation_named(layer, "softmax")     # allowed as the last operation only; then dropped

    def _pool(self, layer: Any) -> None:
        self._require_channels_last(layer)
        kernel, stride = tuple(layer.pool_size), tuple(layer.strides)
        pads, oh, ow = self._spatial(layer, kernel, stride, layer.padding)
        kind = "max_pool" if type(layer).__name__ == "MaxPooling2D" else "avg_pool"
        self._emit(layer, SourceLayer(layer.name, kind, self.shape, (oh, ow, self.shape[2]), kernel=kernel,
                                      stride=stride, pads=pads))

    def _global_avg_pool(self, layer: Any) -> None:
        self._require_channels_last(layer)
        self._emit(layer, SourceLayer(layer.name, "global_avg_pool", self.shape, (1, 1, self.shape[2])))

    def _flatten(self, layer: Any) -> None:
        self._require_channels_last(layer)
        if self._is_flat():
            return                  # already a vector: nothing to do
        n = self.shape[0] * self.shape[1] * self.shape[2]
        self._emit(layer, SourceLayer(layer.name, "flatten", self.shape, (1, 1, n)))

    def _reshape(self, layer: Any) -> None:
        n = self.shape[0] * self.shape[1] * self.shape[2]
        target = tuple(layer.target_shape)
        if target not in ((n,), (-1,)):
            raise self.unsupported(layer, f"Reshape to {target} is not supported (only a flatten to ({n},))")
        self._flatten(layer)


def _layer_chain(model: Any, file_name: str) -> list[Any]:
    """The model's layers from input to output, after checking that they form one chain."""
    keras = _import_keras()
    if isinstance(model, keras.Sequential):
        return [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    if len(model.inputs) != 1:
        raise ModelFormatError(f"{file_name}: the model has {len(model.inputs)} inputs; only single-input "
                               "models are supported")
    if len(model.outputs) != 1:
        raise ModelFormatError(f"{file_name}: the model has {len(model.outputs)} outputs; only single-output "
                               "models are supported")
    consumers: dict[str, list[str]] = {}
    chain = []
    for layer in model.layers:
        # Keras keeps the call graph in each layer's inbound nodes (one node per call).
        if len(layer._inbound_nodes) > 1:
            raise ModelFormatError(f"{file_name}: layer '{layer.name}' is called {len(layer._inbound_nodes)} "
                                   "times (a shared layer); only single-chain models are supported")
        if type(layer).__name__ == "InputLayer":
            continue
        producers = [t._keras_history.operation.name for t in layer._inbound_nodes[0].input_tensors]
        if len(producers) != 1:
            raise ModelFormatError(f"{file_name}: layer '{layer.name}' of type {type(layer).__name__} joins "
                                   f"{len(producers)} inputs ({', '.join(producers)}); only single-chain models "
                                   "are supported")
        consumers.setdefault(producers[0], []).append(layer.name)
        chain.append(layer)
    for producer, users in consumers.items():
        if len(users) > 1:
            raise ModelFormatError(f"{file_name}: the output of '{producer}' feeds {len(users)} layers "
                                   f"({', '.join(users)}); branches are not supported, only a single chain")
    return chain


def _input_shape(model: Any, file_name: str) -> Shape3:
    try:
        shape = tuple(model.inputs[0].shape)
    except (AttributeError, IndexError, ValueError):
        raise ModelFormatError(f"{file_name}: the model has no known input shape (build it with an Input)")
    if len(shape) != 4 or any(d is None for d in shape[1:]):
        raise ModelFormatError(f"{file_name}: input shape {shape} is not supported; expected "
                               "(batch, height, width, channels) with known sizes")
    return int(shape[1]), int(shape[2]), int(shape[3])


def load_keras_model(path: Path) -> SourceModel:
    """Imports a `.keras` or `.h5` model file (see the module docstring for what is supported)."""
    keras = _import_keras()
    try:
        model = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as e:           # Keras raises many types (ValueError, OSError, TypeError...)
        raise ModelFormatError(f"{path}: cannot load as a Keras model ({type(e).__name__}: {e})") from None
    if not isinstance(model, keras.Model):
        raise ModelFormatError(f"{path}: holds a {type(model).__name__}, not a Keras model")
    file_name = path.name
    chain = _layer_chain(model, file_name)
    computing = [layer for layer in chain if type(layer).__name__ not in _IDENTITY_LAYER_TYPES]
    if not computing:
        raise ModelFormatError(f"{file_name}: the model has no layers")
    input_shape = _input_shape(model, file_name)
    builder = _ChainBuilder(file_name, input_shape, computing[-1].name)
    for layer in chain:
        builder.add(layer)
    return SourceModel(name=path.stem, path=path, input_shape=input_shape,
                       layers=builder.layers, param_bytes=4 * int(model.count_params()),
                       head_activation=builder.head_activation)
