"""Importer for float TFLite models (`.tflite`): CNNs as `tf.lite.TFLiteConverter` writes them, chains and graphs
with branches (residual ADD, CONCATENATION, squeeze-and-excite MUL), e.g. a converted MobileNetV2 or ResNet.

The flatbuffer is read with the TFLite schema's generated Python code that ships inside `ai-edge-litert`
(`ai_edge_litert.schema_py_generated`, the object API): it is the official schema, versioned with the
interpreter we already depend on for the TFLite peer, and it needs only `flatbuffers` (no TensorFlow). The
interpreter's `_get_ops_details()` was not used: it is private and does not expose builtin options (padding,
strides, fused activation), which the import needs.

Operators are read in the file's order (the execution order): each reads the values of its input tensors (the
DAG is built from tensor producers and readers), and every value must lead to the single output. Supported
operators and how they map (anything else raises `UnsupportedLayerError` naming
the operator, its index and its output tensor):

- CONV_2D: "conv"; weights [Cout, KH, KW, Cin] become [KH, KW, Cin, Cout]; padding SAME/VALID, strides,
  dilation 1, fused activation NONE/RELU/RELU6. The converter has already folded BatchNormalization.
- DEPTHWISE_CONV_2D: "depthwise"; weights [1, KH, KW, C·M] become [KH, KW, C, M] (channel c·M + m).
- FULLY_CONNECTED: "dense"; weights [Out, In] become [In, Out]; on a non-flat input (FC flattens its
  input itself) a "flatten" layer is inserted first; keep_num_dims only on a flat input.
- MAX_POOL_2D, AVERAGE_POOL_2D: "max_pool" / "avg_pool" (with their fused activation).
- MEAN over axes 1 and 2 of a 4-D input: "global_avg_pool".
- RESHAPE and SQUEEZE to a flat shape: "flatten" (omitted when the input is already flat). The small integer
  sub-graph Keras's Flatten converts to (SHAPE, STRIDED_SLICE, PACK, ... feeding RESHAPE's shape input) is
  recognised and skipped.
- ADD (equal shapes), MUL (equal shapes, or an (H, W, C) map times a (1, 1, C) gate), CONCATENATION (over
  channels), each with its fused activation: "add" / "mul" / "concat". An operand that is a constant (e.g. a
  MUL by a scalar) is refused, naming the operator.
- PAD, PADV2 with zeros, over height and width: "pad", folded into the conv / depthwise it alone feeds.
- RELU, RELU6, LOGISTIC (sigmoid), HARD_SWISH: fused into the layer producing their input (weighted layers,
  activations, joins) where nothing else reads it and the activations compose; else an "activation" layer.
- SOFTMAX (beta 1) as the last operator: dropped (outputs are logits), recorded in `head_activation`.
- DEQUANTIZE of a constant FLOAT16 tensor (float16 weight storage): the weights are widened to float32.

Quantised models (INT8/UINT8/INT16 tensors, QUANTIZE, DEQUANTIZE of integer constants, hybrid int8 weights)
are refused with `UnsupportedLayerError`: convert without `optimizations` to get a float32 model.

Layer names are readable forms of each operator's output tensor name: the Keras layer scope when the name
has one (`sequential/conv2d_1/Relu;sequential/conv2d_1/convolution` -> `conv2d_1`), else `<op>_<index>`,
made unique. `match_output` keeps the full output tensor name. `param_bytes` is 4 × the float parameters
the file holds (BatchNorm statistics are already folded away by the converter).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

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
from edgemerge.importers.tflite_flatbuffer import TFLiteGraph, enum_names, readable_name, scope_name
from edgemerge.text import printable

SUPPORTED_OPS: tuple[str, ...] = (
    "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "AVERAGE_POOL_2D", "MEAN", "RESHAPE",
    "SQUEEZE", "ADD", "MUL", "CONCATENATION", "PAD", "PADV2 (zeros)", "RELU", "RELU6", "LOGISTIC", "HARD_SWISH",
    "SOFTMAX (last)", "DEQUANTIZE (float16 weights)")
# Operators that only compute integer shape vectors (for a RESHAPE); skipped when that is all they feed.
_SHAPE_HELPER_OPS = frozenset({"SHAPE", "STRIDED_SLICE", "PACK", "CONCATENATION", "GATHER", "SLICE", "CAST",
                               "REDUCE_PROD", "SQUEEZE", "EXPAND_DIMS", "FILL", "RESHAPE", "MUL", "ADD", "SUB"})
_QUANTISED_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})
_MEAN_AXES = frozenset({1, 2})
# elementwise activation operators -> the format activation of their standalone layer
_ELEMENTWISE_ACTIVATIONS = {"RELU": Act.RELU, "RELU6": Act.RELU6, "LOGISTIC": Act.SIGMOID,
                            "HARD_SWISH": Act.HARD_SWISH}


class _GraphBuilder:
    """Walks the operators, in the file's order, into unfused `SourceLayer`s with explicit inputs (tensor ->
    value), then folds pads and activations (dag_fold)."""

    def __init__(self, g: TFLiteGraph):
        self.g = g
        self.file_name = g.file_name
        self.layers: list[SourceLayer] = []
        self.head_activation = "linear"
        self.param_count = 0
        self.used_names: set[str] = set()
        self.skipped: set[int] = set()
        self.float16_constants: dict[int, int] = {}     # float32 tensor -> its float16 source (DEQUANTIZE)
        s = g.schema
        self.act_names = enum_names(s.ActivationFunctionType)
        self.padding_names = enum_names(s.Padding)
        self.fused_act = {s.ActivationFunctionType.NONE: Act.NONE, s.ActivationFunctionType.RELU: Act.RELU,
                          s.ActivationFunctionType.RELU6: Act.RELU6}
        self._helper_memo: dict[int, bool] = {}
        self._handlers = {
            "CONV_2D": self._conv2d, "DEPTHWISE_CONV_2D": self._depthwise, "FULLY_CONNECTED": self._dense,
            "MAX_POOL_2D": self._pool, "AVERAGE_POOL_2D": self._pool, "MEAN": self._mean,
            "RESHAPE": self._reshape, "SQUEEZE": self._reshape, "RELU": self._relu, "RELU6": self._relu,
            "LOGISTIC": self._relu, "HARD_SWISH": self._relu, "SOFTMAX": self._softmax, "ADD": self._add,
            "MUL": self._mul, "CONCATENATION": self._concat, "PAD": self._pad, "PADV2": self._pad,
        }

    # -- errors -----------------------------------------------------------------------------------
    def _where(self, i: int) -> str:
        outputs = self.g.outputs(i)
        out = f" (output '{printable(self.g.tensors[outputs[0]].name)}')" if outputs else ""
        return f"{printable(self.file_name)}: op {i} {printable(self.g.op_names[i])}{out}"

    def unsupported(self, i: int, why: str | None = None) -> UnsupportedLayerError:
        if why is None:
            return UnsupportedLayerError(f"{self._where(i)} is not supported (supported: {', '.join(SUPPORTED_OPS)})")
        return UnsupportedLayerError(f"{self._where(i)}: {why}")

    def quantised(self, i: int, what: str) -> UnsupportedLayerError:
        return self.unsupported(i, f"{what}: quantised models are not supported, only float32 ones (convert "
                                   "with tf.lite.TFLiteConverter without `optimizations` / integer quantisation)")

    # -- graph structure --------------------------------------------------------------------------
    def _is_shape_helper(self, i: int) -> bool:
        """True when op i computes only integer tensors that end up solely as RESHAPE shape inputs.

        A depth-first walk over consumers with an explicit stack, not recursion: a long chain of helper-like ops
        (3000 in a crafted file) must not hit Python's recursion limit. An op on a cycle (invalid files) is not
        a helper."""
        g = self.g
        graph_outputs = set(g._indices(g.graph.outputs))

        def own_test(op: int) -> bool:
            outputs = g.outputs(op)
            return (g.op_names[op] in _SHAPE_HELPER_OPS and bool(outputs)
                    and all(g.type_name(t) in ("INT32", "INT64") for t in outputs)
                    and not any(t in graph_outputs for t in outputs))

        def dependencies(op: int) -> list[int]:
            """The consumers of op's outputs whose answer decides op's (not a RESHAPE's shape input)."""
            return [c for t in g.outputs(op) for c, pos in g.consumers.get(t, [])
                    if not (g.op_names[c] == "RESHAPE" and pos == 1)]

        on_stack: set[int] = set()
        stack: list[tuple[int, bool]] = [(i, False)]
        while stack:
            op, expanded = stack.pop()
            if op in self._helper_memo and not expanded:
                continue
            if not expanded:
                if not own_test(op):
                    self._helper_memo[op] = False
                    continue
                on_stack.add(op)
                self._helper_memo[op] = False        # provisional: a cycle back to op is not a helper
                stack.append((op, True))
                for c in dependencies(op):
                    if c not in self._helper_memo and c not in on_stack:
                        stack.append((c, False))
                continue
            on_stack.discard(op)
            self._helper_memo[op] = all(self._helper_memo.get(c, False) for c in dependencies(op))
        return self._helper_memo[i]

    def _unique(self, base: str) -> str:
        name, n = base, 2
        while name in self.used_names:
            name, n = f"{base}_{n}", n + 1
        self.used_names.add(name)
        return name

    def _layer_name_base(self, i: int) -> str:
        g = self.g
        outputs, inputs = g.outputs(i), g.inputs(i)
        names = [g.tensors[outputs[0]].name] if outputs else []
        if g.op_names[i] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and len(inputs) > 1:
            names.append(g.tensors[inputs[1]].name)         # the weights, e.g. "seq/dense_2/MatMul"
        return readable_name(names, g.op_names[i], i)

    def _layer_name(self, i: int) -> str:
        return self._unique(self._layer_name_base(i))

    def constant(self, i: int, tensor: int, what: str, expected_rank: int | None = None) -> np.ndarray:
        """A constant float input of op i as float32 (float16 storage widened)."""
        g = self.g
        if tensor in self.float16_constants:
            values = g.raw_constant(self.float16_constants[tensor])
            return values.astype(np.float32)
        type_name = g.type_name(tensor)
        if type_name in ("INT8", "UINT8", "INT16", "INT4"):
            raise self.quantised(i, f"its {what} '{g.tensors[tensor].name}' are {type_name}")
        values = g.raw_constant(tensor)
        if values is None:
            producer = g.producer.get(tensor)
            by = f" (computed by op {producer} {g.op_names[producer]})" if producer is not None else ""
            raise self.unsupported(i, f"its {what} '{g.tensors[tensor].name}' are not a constant tensor{by}")
        if type_name != "FLOAT32":
            raise self.unsupported(i, f"its {what} '{g.tensors[tensor].name}' are {type_name}, expected FLOAT32")
        if expected_rank is not None and values.ndim != expected_rank:
            raise self.unsupported(i, f"its {what} have shape {list(values.shape)}, expected rank {expected_rank}")
        return values.astype(np.float32)

    def _check_declared(self, i: int, shape: Shape3) -> None:
        """The declared shape of op i's output must equal the one computed (batch 1, NHWC or flat)."""
        out = self.g.outputs(i)[0]
        declared = self.g.tensors[out].shape
        flat = shape[0] == 1 and shape[1] == 1
        candidates = {(1, *shape), tuple(shape)}
        if flat:
            candidates |= {(1, shape[2]), (shape[2],)}
        if declared not in candidates:
            raise ModelFormatError(f"{self._where(i)}: declared output shape {list(declared)} differs from the "
                                   f"computed {list(shape)}")

    # -- the walk ---------------------------------------------------------------------------------
    def build(self) -> tuple[Shape3, list[SourceLayer]]:
        """Reads the operators in the file's order (TFLite's execution order, so every input is computed before
        its reader), each reading the values of its input tensors: chains and graphs with branches alike."""
        g = self.g
        graph_inputs, graph_outputs = g._indices(g.graph.inputs), g._indices(g.graph.outputs)
        if len(graph_inputs) != 1:
            raise ModelFormatError(f"{self.file_name}: the model has {len(graph_inputs)} inputs; only "
                                   "single-input models are supported")
        if len(graph_outputs) != 1:
            raise ModelFormatError(f"{self.file_name}: the model has {len(graph_outputs)} outputs; only "
                                   "single-output models are supported")
        if not g.ops:
            raise ModelFormatError(f"{self.file_name}: the model has no operators")
        x = graph_inputs[0]
        in_type = g.type_name(x)
        if in_type != "FLOAT32":
            first = g.consumers.get(x, [(0, 0)])[0][0]
            raise self.quantised(first, f"the model input '{g.tensors[x].name}' is {in_type}")
        shape = g.tensors[x].shape
        if len(shape) != 4 or shape[0] not in (1, -1) or any(d < 1 for d in shape[1:]):
            raise ModelFormatError(f"{self.file_name}: input shape {list(shape)} is not supported; expected "
                                   "(1, height, width, channels)")
        input_shape: Shape3 = (shape[1], shape[2], shape[3])
        self.value_of = {x: MODEL_INPUT}
        self.shapes = {MODEL_INPUT: input_shape}
        softmax_output = None

        for i in range(len(g.ops)):
            name = g.op_names[i]
            if name == "DEQUANTIZE":
                self._dequantize(i)
                continue
            if name in _QUANTISED_OPS:
                raise self.quantised(i, "the model quantises its activations")
            if self._is_shape_helper(i):
                self.skipped.add(i)
                continue
            handler = self._handlers.get(name)
            if handler is None:
                raise self.unsupported(i)
            inputs = g.inputs(i)
            if not inputs or inputs[0] < 0:
                raise self.unsupported(i, "reads no tensor")
            if softmax_output is not None and softmax_output in inputs:
                raise self.unsupported(i, "follows the final SOFTMAX")
            if inputs[0] not in self.value_of:
                producer = g.producer.get(inputs[0])
                by = f"op {producer} {g.op_names[producer]}" if producer is not None else "no operator"
                raise ModelFormatError(f"{self._where(i)} reads '{printable(g.tensors[inputs[0]].name)}', computed by "
                                       f"{by} (a constant or a value computed later): only float values computed "
                                       "before the operator are supported as its first input")
            if g.type_name(inputs[0]) != "FLOAT32":
                raise self.quantised(i, f"its input is {g.type_name(inputs[0])}")
            outputs = g.outputs(i)
            if len(outputs) != 1:
                raise self.unsupported(i, f"{len(outputs)} outputs, expected 1")
            self.input_value = self.value_of[inputs[0]]
            self.shape = self.shapes[self.input_value]
            self.output_value = self.input_value      # handlers that emit a layer set it to the layer's name
            handler(i)
            self.value_of[outputs[0]] = self.output_value
            if name == "SOFTMAX":
                softmax_output = outputs[0]
        output_value = self.value_of.get(graph_outputs[0])
        if output_value is None:
            raise ModelFormatError(f"{self.file_name}: no operator computes the model output "
                                   f"'{printable(g.tensors[graph_outputs[0]].name)}'")
        if output_value == MODEL_INPUT or not self.layers:
            raise ModelFormatError(f"{self.file_name}: the model has no layers")
        layers = self.layers
        reads = {n for layer in layers for n in layer.inputs}
        unread = [layer.name for layer in layers if layer.name not in reads and layer.name != output_value]
        if unread or layers[-1].name != output_value:
            raise ModelFormatError(f"{self.file_name}: layer(s) {', '.join(unread or [layers[-1].name])} do not "
                                   f"lead to the model output '{printable(g.tensors[graph_outputs[0]].name)}'; a "
                                   "model has one output")
        dag_fold.fold_pads(layers)
        dag_fold.fuse_activations(layers)
        dag_fold.drop_implicit_inputs(layers)
        return input_shape, layers

    # -- helpers ----------------------------------------------------------------------------------
    def _options(self, i: int) -> Any:
        options = self.g.ops[i].builtinOptions
        if options is None:
            raise self.unsupported(i, "has no builtin options")
        return options

    def _activation(self, i: int, options: Any) -> Act:
        code = int(getattr(options, "fusedActivationFunction", 0))
        if code not in self.fused_act:
            raise self.unsupported(i, f"fused activation {self.act_names.get(code, code)} is not supported "
                                      "(NONE, RELU, RELU6)")
        return self.fused_act[code]

    def _spatial(self, i: int, kernel: tuple[int, int], stride: tuple[int, int], padding: int
                 ) -> tuple[tuple[int, int, int, int], int, int]:
        h, w, _ = self.shape
        if any(k < 1 or k > MAX_KERNEL for k in kernel):
            raise self.unsupported(i, f"kernel {kernel} is outside 1..{MAX_KERNEL}")
        if any(s < 1 or s > MAX_STRIDE for s in stride):
            raise self.unsupported(i, f"stride {stride} is outside 1..{MAX_STRIDE}")
        if padding == self.g.schema.Padding.SAME:
            top, bottom = same_padding(h, kernel[0], stride[0])
            left, right = same_padding(w, kernel[1], stride[1])
        elif padding == self.g.schema.Padding.VALID:
            top = left = bottom = right = 0
        else:
            raise self.unsupported(i, f"padding {self.padding_names.get(padding, padding)} is not supported")
        oh = conv_output_size(h, kernel[0], stride[0], top, bottom)
        ow = conv_output_size(w, kernel[1], stride[1], left, right)
        if oh < 1 or ow < 1:
            raise self.unsupported(i, f"kernel {kernel} does not fit the {h}x{w} input")
        return (top, left, bottom, right), oh, ow

    def _check_dilation(self, i: int, options: Any) -> None:
        dilation = (int(options.dilationHFactor), int(options.dilationWFactor))
        if dilation != (1, 1):
            raise self.unsupported(i, f"dilation {dilation} is not supported (only 1)")

    def _bias(self, i: int, channels: int) -> np.ndarray | None:
        inputs = self.g.inputs(i)
        if len(inputs) < 3 or inputs[2] < 0:
            return None
        bias = self.constant(i, inputs[2], "bias", expected_rank=1)
        if bias.shape != (channels,):
            raise self.unsupported(i, f"bias has shape {list(bias.shape)}, expected [{channels}]")
        return bias

    def _emit(self, i: int, layer: SourceLayer) -> None:
        self._check_declared(i, layer.out_shape)
        layer.match_output = self.g.tensors[self.g.outputs(i)[0]].name
        # the converter's fused name lists the layers folded into this operator (BatchNorm, ReLU, ...)
        scopes = [scope_name(part) for part in layer.match_output.split(";")]
        layer.fused = tuple(dict.fromkeys(s for s in scopes if s and s != layer.name))
        for array in (layer.weights, layer.bias):
            if array is not None:
                self.param_count += int(array.size)
        if not layer.inputs:
            layer.inputs = (self.input_value,)
        self.layers.append(layer)
        self.shapes[layer.name] = layer.out_shape
        self.output_value = layer.name
        self.shape = layer.out_shape

    def _is_flat(self) -> bool:
        return self.shape[0] == 1 and self.shape[1] == 1

    # -- operators --------------------------------------------------------------------------------
    def _dequantize(self, i: int) -> None:
        g = self.g
        source, out = g.inputs(i)[0], g.outputs(i)[0]
        if g.type_name(source) == "FLOAT16" and g.raw_constant(source) is not None:
            self.float16_constants[out] = source
            return
        raise self.quantised(i, f"it dequantises a {g.type_name(source)} tensor")

    def _conv2d(self, i: int) -> None:
        options = self._options(i)
        self._check_dilation(i, options)
        inputs = self.g.inputs(i)
        w = self.constant(i, inputs[1], "weights", expected_rank=4)          # [Cout, KH, KW, Cin]
        cout, kh, kw, cin = w.shape
        if cin != self.shape[2]:
            raise self.unsupported(i, f"weights expect {cin} input channels, the input has {self.shape[2]} "
                                      "(grouped convolutions are not supported)")
        kernel, stride = (kh, kw), (int(options.strideH), int(options.strideW))
        pads, oh, ow = self._spatial(i, kernel, stride, int(options.padding))
        self._emit(i, SourceLayer(self._layer_name(i), "conv", self.shape, (oh, ow, cout),
                                  weights=np.ascontiguousarray(w.transpose(1, 2, 3, 0)),
                                  bias=self._bias(i, cout), kernel=kernel, stride=stride, pads=pads,
                                  activation=self._activation(i, options)))

    def _depthwise(self, i: int) -> None:
        options = self._options(i)
        self._check_dilation(i, options)
        inputs = self.g.inputs(i)
        w = self.constant(i, inputs[1], "weights", expected_rank=4)          # [1, KH, KW, C·M]
        c = self.shape[2]
        if w.shape[0] != 1 or w.shape[3] % c:
            raise self.unsupported(i, f"weights of shape {list(w.shape)} do not fit {c} input channels")
        multiplier = w.shape[3] // c
        declared = int(getattr(options, "depthMultiplier", 0) or 0)
        if declared and declared != multiplier:
            raise self.unsupported(i, f"depth_multiplier {declared} disagrees with the weights ({multiplier})")
        kernel, stride = (int(w.shape[1]), int(w.shape[2])), (int(options.strideH), int(options.strideW))
        pads, oh, ow = self._spatial(i, kernel, stride, int(options.padding))
        weights = np.ascontiguousarray(w[0].reshape(kernel[0], kernel[1], c, multiplier))
        self._emit(i, SourceLayer(self._layer_name(i), "depthwise", self.shape, (oh, ow, c * multiplier),
                                  weights=weights, bias=self._bias(i, c * multiplier), kernel=kernel,
                                  stride=stride, pads=pads, activation=self._activation(i, options)))

    def _dense(self, i: int) -> None:
        options = self._options(i)
        if int(options.weightsFormat) != self.g.schema.FullyConnectedOptionsWeightsFormat.DEFAULT:
            raise self.unsupported(i, "shuffled weights are not supported")
        inputs = self.g.inputs(i)
        w = self.constant(i, inputs[1], "weights", expected_rank=2)          # [Out, In]
        out, n_in = w.shape
        n = self.shape[0] * self.shape[1] * self.shape[2]
        if n_in != n:
            raise self.unsupported(i, f"weights expect {n_in} inputs, the input has {n} values {list(self.shape)}")
        if not self._is_flat():
            if bool(options.keepNumDims):
                raise self.unsupported(i, "keep_num_dims on a non-flat input is not supported")
            # FULLY_CONNECTED flattens its input itself: make that explicit for the merged graph
            flatten = SourceLayer(self._unique(f"{self._layer_name_base(i)}_flatten"), "flatten", self.shape,
                                  (1, 1, n), inputs=(self.input_value,))
            self.layers.append(flatten)
            self.shapes[flatten.name] = flatten.out_shape
            self.input_value, self.shape = flatten.name, (1, 1, n)
        self._emit(i, SourceLayer(self._layer_name(i), "dense", self.shape, (1, 1, out),
                                  weights=np.ascontiguousarray(w.T), bias=self._bias(i, out),
                                  activation=self._activation(i, options)))

    def _pool(self, i: int) -> None:
        options = self._options(i)
        kernel = (int(options.filterHeight), int(options.filterWidth))
        stride = (int(options.strideH), int(options.strideW))
        pads, oh, ow = self._spatial(i, kernel, stride, int(options.padding))
        kind = "max_pool" if self.g.op_names[i] == "MAX_POOL_2D" else "avg_pool"
        self._emit(i, SourceLayer(self._layer_name(i), kind, self.shape, (oh, ow, self.shape[2]), kernel=kernel,
                                  stride=stride, pads=pads, activation=self._activation(i, options)))

    def _mean(self, i: int) -> None:
        inputs = self.g.inputs(i)
        if len(inputs) < 2:
            raise self.unsupported(i, "has no axes input")
        axes = self.g.raw_constant(inputs[1])
        if axes is None or self.g.type_name(inputs[1]) not in ("INT32", "INT64"):
            raise self.unsupported(i, "axes are not a constant integer tensor")
        rank = len(self.g.tensors[inputs[0]].shape)
        normalised = {int(a) % rank for a in np.ravel(axes)} if rank else set()
        if rank != 4 or normalised != _MEAN_AXES:
            raise self.unsupported(i, f"MEAN over axes {sorted(int(a) for a in np.ravel(axes))} of a rank-{rank} "
                                      "input is not supported (only over height and width, axes 1 and 2)")
        self._emit(i, SourceLayer(self._layer_name(i), "global_avg_pool", self.shape, (1, 1, self.shape[2])))

    def _reshape(self, i: int) -> None:
        declared = self.g.tensors[self.g.outputs(i)[0]].shape
        n = self.shape[0] * self.shape[1] * self.shape[2]
        if not declared or declared[-1] != n or any(d != 1 for d in declared[:-1]):
            raise self.unsupported(i, f"reshape of {list(self.shape)} to {list(declared)} is not supported "
                                      f"(only a flatten to [1, {n}])")
        if self._is_flat():
            return                    # already a vector: nothing to do
        self._emit(i, SourceLayer(self._layer_name(i), "flatten", self.shape, (1, 1, n)))

    def _relu(self, i: int) -> None:
        """RELU, RELU6, LOGISTIC, HARD_SWISH: a standalone activation layer (dag_fold fuses it into the layer
        before it where that layer has no other reader)."""
        act = _ELEMENTWISE_ACTIVATIONS[self.g.op_names[i]]
        self._check_declared(i, self.shape)
        output = self.g.tensors[self.g.outputs(i)[0]].name
        layer = SourceLayer(self._layer_name(i), "activation", self.shape, self.shape, activation=act,
                            inputs=(self.input_value,))
        self._emit(i, layer)
        layer.match_output, layer.fused = output, ()

    def _join_values(self, i: int) -> list[str]:
        """The values op i joins: every input must be a float value computed before it (no constants)."""
        g = self.g
        values = []
        for t in g.inputs(i):
            if t < 0:
                continue
            if t not in self.value_of:
                raise self.unsupported(i, f"its input '{printable(g.tensors[t].name)}' is a constant or not computed "
                                          "before it; only joins of computed values are supported")
            if g.type_name(t) != "FLOAT32":
                raise self.quantised(i, f"its input is {g.type_name(t)}")
            values.append(self.value_of[t])
        return values

    def _add(self, i: int) -> None:
        values = self._join_values(i)
        shapes = [self.shapes[v] for v in values]
        if len(values) < 2 or len(set(shapes)) != 1:
            raise self.unsupported(i, f"ADD of inputs {[list(s) for s in shapes]}: only equal shapes are supported")
        self._emit(i, SourceLayer(self._layer_name(i), "add", shapes[0], shapes[0], inputs=tuple(values),
                                  activation=self._activation(i, self._options(i))))

    def _mul(self, i: int) -> None:
        values = self._join_values(i)
        if len(values) != 2:
            raise self.unsupported(i, f"MUL of {len(values)} computed inputs: only two are supported")
        a, b = (self.shapes[v] for v in values)
        if a != b:
            if not (a[2] == b[2] and (a[:2] == (1, 1) or b[:2] == (1, 1))):
                raise self.unsupported(i, f"MUL of {list(a)} and {list(b)}: only equal shapes or an (H, W, C) map "
                                          "times a (1, 1, C) gate are supported")
            if a[:2] == (1, 1):
                values, (a, b) = [values[1], values[0]], (b, a)
        self._emit(i, SourceLayer(self._layer_name(i), "mul", a, a, inputs=tuple(values),
                                  activation=self._activation(i, self._options(i))))

    def _concat(self, i: int) -> None:
        values = self._join_values(i)
        options = self._options(i)
        rank = len(self.g.tensors[self.g.outputs(i)[0]].shape)
        if int(options.axis) not in (-1, rank - 1):
            raise self.unsupported(i, f"concatenation over axis {int(options.axis)} of rank-{rank} values is not "
                                      "supported (only over channels, the last axis)")
        shapes = [self.shapes[v] for v in values]
        if len(values) < 2 or len({s[:2] for s in shapes}) != 1:
            raise self.unsupported(i, f"CONCATENATION of {[list(s) for s in shapes]}: only values of equal spatial "
                                      "size are supported")
        out = (shapes[0][0], shapes[0][1], sum(s[2] for s in shapes))
        self._emit(i, SourceLayer(self._layer_name(i), "concat", shapes[0], out, inputs=tuple(values),
                                  activation=self._activation(i, options)))

    def _pad(self, i: int) -> None:
        g = self.g
        inputs = g.inputs(i)
        if len(inputs) < 2 or inputs[1] < 0:
            raise self.unsupported(i, "has no paddings input")
        paddings = g.raw_constant(inputs[1])
        if paddings is None or g.type_name(inputs[1]) not in ("INT32", "INT64"):
            raise self.unsupported(i, "paddings are not a constant integer tensor")
        if g.op_names[i] == "PADV2" and len(inputs) > 2 and inputs[2] >= 0:
            value = g.raw_constant(inputs[2])
            if value is None or np.any(np.asarray(value, np.float64) != 0.0):
                raise self.unsupported(i, "pads with a value other than a constant 0")
        paddings = np.asarray(paddings, np.int64)
        if paddings.shape != (4, 2) or np.any(paddings[0] != 0) or np.any(paddings[3] != 0):
            raise self.unsupported(i, f"paddings {paddings.tolist()} are not supported (only height and width of "
                                      "a 4-D value)")
        (top, bottom), (left, right) = paddings[1], paddings[2]
        pads = (int(top), int(left), int(bottom), int(right))
        if any(p < 0 or p > MAX_PAD for p in pads):
            raise self.unsupported(i, f"padding {pads} is outside 0..{MAX_PAD}")
        h, w, c = self.shape
        self._emit(i, SourceLayer(self._layer_name(i), "pad", self.shape, (h + top + bottom, w + left + right, c),
                                  pads=pads))

    def _softmax(self, i: int) -> None:
        g = self.g
        if g.outputs(i)[0] not in g._indices(g.graph.outputs):
            raise self.unsupported(i, "SOFTMAX is only supported as the model's last operator")
        beta = float(self._options(i).beta)
        if beta != 1.0:
            raise self.unsupported(i, f"SOFTMAX with beta {beta} is not supported (only 1)")
        if not self._is_flat():
            raise self.unsupported(i, f"SOFTMAX over a non-flat {list(self.shape)} output is not supported")
        self.head_activation = "softmax"


def load_tflite_model(path: Path) -> SourceModel:
    """Imports a float32 `.tflite` file (see the module docstring for what is supported)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelFormatError(f"{path}: cannot read ({e.strerror})") from None
    graph = TFLiteGraph(path, data)
    builder = _GraphBuilder(graph)
    input_shape, layers = builder.build()
    return SourceModel(name=path.stem, path=path, input_shape=input_shape, layers=layers,
                       param_bytes=4 * builder.param_count, head_activation=builder.head_activation)
