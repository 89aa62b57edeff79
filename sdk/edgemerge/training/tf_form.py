"""The differentiable form of a merged graph: the graph itself, written with TensorFlow ops.

- every float32 tensor that a node uses (codebooks, biases, plain/depthwise conv and dense weights, heads) is
  ONE trainable `tf.Variable` per tensor id, so nodes that reference the same codebook share the variable;
- index maps are int32 constants; a LUT node rebuilds its weights by a gather exactly as
  `graph.decoded_weights` does (W[ky, kx, s·r + j, co] = codebook[s, index[ky, kx, s, co], j], cut to Cin;
  a clustered depthwise node W[ky, kx, c, m] = codebook[0, index[t / r, c, m], t mod r], t = ky·KW + kx)
  and then runs an ordinary convolution / matmul (explicit `tf.pad`, then VALID), bias, activation;
- pools, reshape and activations follow the Keras reference (explicit pool pads map to VALID or SAME);
- format v2 nodes read every input (`Node.inputs`): ADD sums in input order, CONCAT joins channels, MUL
  multiplies (a (1, 1, C) gate broadcasts), PAD pads with zeros; activations are `graph_ops.activate`'s
  formulas (hard-sigmoid = relu6(x + 3) / 6, hard-swish = x · hard-sigmoid(x), swish = x · sigmoid(x));
- `fake_quant` (node index -> input scale sx) simulates int8 activations (docs/FORMAT.md "int8 activations") on
  those LUT nodes: the input becomes qx·sx and the codebook qcb·m/127, the runtime's values (`fake_quant_input`,
  `fake_quant_codebook`), with straight-through gradients so calibration can train under the quantisation.

The op semantics are one table, `_OP_FORMS` (op -> function), plus `_ACTIVATIONS`; a new op is one row.
"""
from __future__ import annotations

import contextlib
import dataclasses
import re
from typing import Callable, Mapping

import numpy as np

from edgemerge.emm.constants import NONE, Act, DType, Op
from edgemerge.emm.graph import MergedGraph, Node
from edgemerge.emm.shapes import keras_padding
from edgemerge.errors import EdgemergeError

EVAL_BATCH = 256
LUT_OPS = (Op.LUT_CONV2D, Op.LUT_DENSE)
INT8_MAX = 127


# ---- int8 activations, simulated ("fake quantisation") -------------------------------------------------
# The runtime's definition (docs/FORMAT.md "int8 activations", runtime_c/src/em_int8_act.h):
#   qx = clamp(round_half_even(x · f32(1 / sx)), ±127),  qcb = clamp(round_half_even(cb · f32(127 / m)), ±127)
# with m = max |cb| over the node's segments. The forward values below are qx·sx and qcb·f32(m / 127); the
# convolution of the two is then the runtime's int32 sum times k = sx·m/127, up to float32 summation order.
# Written with tf.round (half to even) and tf.stop_gradient rather than TF's fake-quant ops, because neither
# of those computes these values: tf.quantization.fake_quant_with_min_max_vars rounds half up after shifting
# by a zero point (and nudges the range), quantize_and_dequantize_v2 derives its step from the range as
# 127 / (127·sx) instead of f32(1 / sx); both land a value next to a rounding boundary on the other side now
# and then (tests/training/test_fake_quant.py shows it). The straight-through form `sg(v) + x − sg(x)` gives
# exactly v forward (x − x is 0) and the gradient of x backward.
def fake_quant_input(x, sx: float):
    """The runtime's int8 image of a LUT node's input, as float32 (qx·sx); gradient 1 where |x| is inside the
    ±127·sx range and 0 where the value saturates (the clipped straight-through estimator)."""
    import tensorflow as tf

    sx = np.float32(sx)
    inverse = np.float32(np.float32(1.0) / sx)
    q = tf.clip_by_value(tf.round(x * inverse), -float(INT8_MAX), float(INT8_MAX))
    inside = tf.clip_by_value(x, -float(INT8_MAX * sx), float(INT8_MAX * sx))
    return tf.stop_gradient(q * sx) + (inside - tf.stop_gradient(inside))


def fake_quant_codebook(codebook):
    """The runtime's int8 image of a codebook (qcb·m/127, all zero when m = 0), m = max |codebook| of the
    current values (recomputed at every call, as the runtime does at load); gradient 1 everywhere."""
    import tensorflow as tf

    m = tf.reduce_max(tf.abs(codebook))
    safe = tf.where(m > 0, m, tf.ones_like(m))
    q = tf.clip_by_value(tf.round(codebook * (float(INT8_MAX) / safe)), -float(INT8_MAX), float(INT8_MAX))
    image = tf.where(m > 0, q * (safe / float(INT8_MAX)), tf.zeros_like(codebook))
    return tf.stop_gradient(image) + (codebook - tf.stop_gradient(codebook))


def int8_input_scales(graph: MergedGraph) -> dict[int, float]:
    """node index -> input scale sx of every node flagged for int8 activations (what `fake_quant` takes)."""
    return {i: float(n.input_scale) for i, n in enumerate(graph.nodes) if n.int8_act}


def _pool_padding(graph: MergedGraph, node: Node) -> str:
    """TF pools know VALID and SAME (padded cells ignored); explicit pads must be one of them
    (emm.shapes.keras_padding, the rule the Keras reference uses too)."""
    h, w, _ = graph.value_shape(node.input)
    padding = keras_padding((h, w), node.kernel, node.stride, node.pads)
    if padding is None:
        raise EdgemergeError(f"node {node.name}: pool pads {node.pads} match neither 'valid' nor 'same'")
    return padding.upper()


def _variable_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", name) or "tensor"


# ---- one function per op: (model, node index, node, input) -> output, before bias and activation --------
def _conv(model: "TFMergedGraph", i: int, node: Node, x):
    import tensorflow as tf

    top, left, bottom, right = node.pads
    if any(node.pads):
        x = tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]])
    strides = [1, node.stride[0], node.stride[1], 1]
    if node.op in (Op.DEPTHWISE_CONV2D, Op.LUT_DEPTHWISE_CONV2D):
        return tf.nn.depthwise_conv2d(x, model.weights(i), strides, "VALID")
    return tf.nn.conv2d(x, model.weights(i), strides, "VALID")


def _dense(model: "TFMergedGraph", i: int, node: Node, x):
    import tensorflow as tf

    n_in = int(np.prod(model.graph.value_shape(node.input)))
    y = tf.matmul(tf.reshape(x, [-1, n_in]), model.weights(i))
    return tf.reshape(y, [-1, 1, 1, node.out_shape[2]])


def _max_pool(model: "TFMergedGraph", i: int, node: Node, x):
    import tensorflow as tf

    return tf.nn.max_pool2d(x, node.kernel, node.stride, _pool_padding(model.graph, node))


def _avg_pool(model: "TFMergedGraph", i: int, node: Node, x):
    import tensorflow as tf

    return tf.nn.avg_pool2d(x, node.kernel, node.stride, _pool_padding(model.graph, node))


def _global_avg_pool(model: "TFMergedGraph", i: int, node: Node, x):
    import tensorflow as tf

    return tf.reduce_mean(x, axis=[1, 2], keepdims=True)


def _reshape(model: "TFMergedGraph", i: int, node: Node, x):
    import tensorflow as tf

    return tf.reshape(x, [-1, *node.out_shape])


def _identity(model: "TFMergedGraph", i: int, node: Node, x):
    return x


# ---- format v2 ops: (model, node index, node, *inputs) -> output (graph_ops' math; no bias on these ops) ----
def _add(model: "TFMergedGraph", i: int, node: Node, *xs):
    y = xs[0]
    for x in xs[1:]:                   # summed in input order, as FORMAT.md ADD
        y = y + x
    return y


def _concat(model: "TFMergedGraph", i: int, node: Node, *xs):
    import tensorflow as tf

    return tf.concat(list(xs), axis=-1)


def _mul(model: "TFMergedGraph", i: int, node: Node, a, b):
    return a * b                       # (1, 1, C) broadcasts over (H, W, C) as numpy/TF do


def _pad(model: "TFMergedGraph", i: int, node: Node, x):
    import tensorflow as tf

    top, left, bottom, right = node.pads
    return tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]])


_OP_FORMS: dict[Op, Callable] = {
    Op.CONV2D: _conv,
    Op.LUT_CONV2D: _conv,
    Op.DEPTHWISE_CONV2D: _conv,
    Op.LUT_DEPTHWISE_CONV2D: _conv,
    Op.DENSE: _dense,
    Op.LUT_DENSE: _dense,
    Op.MAX_POOL: _max_pool,
    Op.AVG_POOL: _avg_pool,
    Op.GLOBAL_AVG_POOL: _global_avg_pool,
    Op.RESHAPE: _reshape,
    Op.ACTIVATION: _identity,          # the node's activation (applied below) is all it does
    Op.ADD: _add,
    Op.CONCAT: _concat,
    Op.MUL: _mul,
    Op.PAD: _pad,                      # zeros, then the activation: padding becomes act(0) as FORMAT.md says
}


def _hard_sigmoid(y):
    import tensorflow as tf

    return tf.nn.relu6(y + 3.0) / 6.0          # graph_ops.activate / TFLite: relu6(x + 3) / 6


def _activation(act: Act) -> Callable | None:
    """Every activation of FORMAT.md, by the formulas of `executors.graph_ops.activate`."""
    import tensorflow as tf

    return {Act.NONE: lambda y: y, Act.RELU: tf.nn.relu, Act.RELU6: tf.nn.relu6, Act.SIGMOID: tf.sigmoid,
            Act.HARD_SIGMOID: _hard_sigmoid, Act.HARD_SWISH: lambda y: y * _hard_sigmoid(y),
            Act.SWISH: lambda y: y * tf.sigmoid(y)}.get(act)


class TFMergedGraph:
    """A MergedGraph as TensorFlow computation with trainable float tensors and fixed index maps.

    Create it inside `strategy.scope()` to get distributed variables. `variables` maps a tensor id to its
    `tf.Variable`; a tensor referenced by several nodes (a shared codebook) has exactly one variable.
    """

    def __init__(self, graph: MergedGraph, fake_quant: Mapping[int, float] | None = None):
        import tensorflow as tf

        self.graph = graph
        self.fake_quant = dict(fake_quant or {})
        for i, sx in self.fake_quant.items():
            if not 0 <= i < len(graph.nodes) or graph.nodes[i].op not in LUT_OPS:
                raise EdgemergeError(f"fake quantisation: node {i} is not a LUT_CONV2D / LUT_DENSE node")
            if not (np.isfinite(sx) and sx > 0 and np.isfinite(np.float32(1.0) / np.float32(sx))):
                raise EdgemergeError(f"node {graph.nodes[i].name}: input scale {sx!r} is not a finite positive "
                                     "float with a finite inverse")
        self.variables: dict[int, "tf.Variable"] = {}
        self._lut_index: dict[int, "tf.Tensor"] = {}     # node index -> int32 flat codeword ids
        for i, node in enumerate(graph.nodes):
            for tid in (node.weight, node.bias):
                if tid == NONE or tid in self.variables:
                    continue
                tensor = graph.tensors[tid]
                if tensor.dtype != DType.F32:
                    raise EdgemergeError(f"node {node.name}: tensor {tid} ({tensor.name}) is not float32")
                self.variables[tid] = tf.Variable(tensor.array.astype(np.float32), trainable=True,
                                                  name=_variable_name(tensor.name))
            if node.op in LUT_OPS:
                self._lut_index[i] = tf.constant(self._flat_codeword_ids(node), dtype=tf.int32)
            elif node.op == Op.LUT_DEPTHWISE_CONV2D:
                self._lut_index[i] = tf.constant(self._depthwise_codeword_ids(node), dtype=tf.int32)
        self._trainable = [self.variables[k] for k in sorted(self.variables)]

    @property
    def trainable_variables(self) -> list:
        """Every trainable variable, ordered by tensor id."""
        return list(self._trainable)

    def _flat_codeword_ids(self, node: Node) -> np.ndarray:
        """Index map as rows of the codebook reshaped to [S_cb·C, r]: s·C + index[..., s, co] (index itself for
        a layer-shared codebook [1, C, r]: every segment gathers from the one variable)."""
        codebook = self.graph.tensors[node.weight].array
        index = self.graph.tensors[node.index].array.astype(np.int64)
        if node.op == Op.LUT_DENSE:
            index = index[None, None]                            # [1, 1, S, Out]
        s_count = index.shape[2]
        shared = codebook.ndim == 3 and codebook.shape[0] == 1
        if codebook.ndim != 3 or (s_count > codebook.shape[0] and not shared) or codebook.shape[2] != node.seg_len:
            raise EdgemergeError(f"node {node.name}: index map with {s_count} segments does not fit codebook "
                                 f"{self.graph.tensors[node.weight].name} of shape {codebook.shape} (r={node.seg_len})")
        if index.size and int(index.max()) >= codebook.shape[1]:
            raise EdgemergeError(f"node {node.name}: index map holds {int(index.max())}, past the codebook's "
                                 f"{codebook.shape[1]} codewords")
        seg = np.arange(s_count, dtype=np.int64)[None, None, :, None] * (not shared)
        return (seg * codebook.shape[1] + index).astype(np.int32)

    def _depthwise_codeword_ids(self, node: Node) -> np.ndarray:
        """A clustered depthwise node's index map [KH·KW / r, Cin, M], checked against its codebook [1, C, r]."""
        codebook = self.graph.tensors[node.weight].array
        index = self.graph.tensors[node.index].array.astype(np.int64)
        taps = node.kernel[0] * node.kernel[1]
        if (codebook.ndim != 3 or codebook.shape[0] != 1 or codebook.shape[2] != node.seg_len or index.ndim != 3
                or index.shape[0] * node.seg_len != taps):
            raise EdgemergeError(f"node {node.name}: depthwise codebook {self.graph.tensors[node.weight].name} of "
                                 f"shape {codebook.shape} and index map {index.shape} do not fit a "
                                 f"{node.kernel[0]}x{node.kernel[1]} kernel")
        if index.size and int(index.max()) >= codebook.shape[1]:
            raise EdgemergeError(f"node {node.name}: index map holds {int(index.max())}, past the codebook's "
                                 f"{codebook.shape[1]} codewords")
        return index.astype(np.int32)

    def weights(self, i: int):
        """The weights node `i` computes with ([KH, KW, Cin, Cout] or [In, Out]), differentiable."""
        import tensorflow as tf

        node = self.graph.nodes[i]
        var = self.variables[node.weight]
        if node.op == Op.LUT_DEPTHWISE_CONV2D:       # W[ky, kx, c, m] = codebook[0, index[t / r, c, m], t mod r]
            _, cin, m = self._lut_index[i].shape
            vectors = tf.gather(var[0], self._lut_index[i])                   # [S, Cin, M, r]
            return tf.reshape(tf.transpose(vectors, [0, 3, 1, 2]), [*node.kernel, cin, m])
        if node.op not in LUT_OPS:
            return var
        r = node.seg_len
        ids = self._lut_index[i]                                  # [KH, KW, S, Cout]
        kh, kw, s_count, cout = ids.shape
        if i in self.fake_quant:   # the node's own S segments (a layer-shared codebook: its one), as m is taken
            var = fake_quant_codebook(var if var.shape[0] == 1 else var[:s_count])
        vectors = tf.gather(tf.reshape(var, [-1, r]), ids)       # [KH, KW, S, Cout, r]
        w = tf.reshape(tf.transpose(vectors, [0, 1, 2, 4, 3]), [kh, kw, s_count * r, cout])
        in_shape = self.graph.value_shape(node.input)
        if node.op == Op.LUT_DENSE:
            return w[0, 0, :int(np.prod(in_shape)), :]
        return w[:, :, :in_shape[2], :]

    def _node(self, i: int, *xs):
        """Node `i` on its inputs (one, or every input of a multi-input node in order)."""
        node = self.graph.nodes[i]
        form = _OP_FORMS.get(node.op)
        if form is None:
            raise EdgemergeError(f"node {node.name}: op {node.op!r} has no TensorFlow form")
        if i in self.fake_quant:
            xs = (fake_quant_input(xs[0], self.fake_quant[i]),)
        y = form(self, i, node, *xs)
        if node.bias != NONE:
            y = y + self.variables[node.bias]
        activation = _activation(node.activation)
        if activation is None:
            raise EdgemergeError(f"node {node.name}: unknown activation {node.activation!r}")
        return activation(y)

    def forward(self, task: str, x, want: tuple[int, ...] | list[int] | None = ()):
        """Runs `task` on an NHWC batch. Returns (logits [N, classes], {node index: output [N, h, w, c]})
        for the node indices in `want` (all of the task's nodes when `want` is None)."""
        import tensorflow as tf

        t = self.graph.task(task)
        order = self.graph.nodes_for(task)
        wanted = set(order if want is None else want)
        missing = wanted.difference(order)
        if missing:
            raise EdgemergeError(f"task {task!r} does not compute node(s) {sorted(missing)}")
        n_in = len(self.graph.inputs)
        values = {t.input: tf.convert_to_tensor(x, dtype=tf.float32)}
        outputs = {}
        for i in order:
            values[n_in + i] = self._node(i, *(values[v] for v in self.graph.nodes[i].inputs))
            if i in wanted:
                outputs[i] = values[n_in + i]
        logits = tf.reshape(values[t.output], [-1, t.classes])
        return logits, outputs

    def logits(self, task: str, x):
        return self.forward(task, x)[0]

    def node_outputs(self, task: str, x) -> dict:
        """Every node output of `task` by node index."""
        return self.forward(task, x, want=None)[1]

    def values(self) -> dict[int, np.ndarray]:
        return {tid: np.asarray(var.numpy(), dtype=np.float32) for tid, var in self.variables.items()}

    def assign(self, values: Mapping[int, np.ndarray]) -> None:
        for tid, value in values.items():
            self.variables[tid].assign(value)

    def to_graph(self, values: Mapping[int, np.ndarray] | None = None) -> MergedGraph:
        """A copy of the graph with every trained tensor replaced by its current (or the given) value."""
        values = self.values() if values is None else values
        out = self.graph.copy()
        for tid, value in values.items():
            old = out.tensors[tid]
            if tuple(value.shape) != old.shape:
                raise EdgemergeError(f"tensor {old.name}: trained shape {value.shape} != {old.shape}")
            out.tensors[tid] = dataclasses.replace(old, array=np.ascontiguousarray(value, dtype=np.float32))
        return out


def tf_forward(graph: MergedGraph, task: str, x: np.ndarray, batch: int = EVAL_BATCH,
               device: str | None = "/CPU:0") -> np.ndarray:
    """Logits of `task` computed by the TensorFlow form of `graph` (what calibration trains).

    Runs on the CPU by default: it is the float32 yardstick for the C runtime, and GPUs may compute
    convolutions in TF32 (about 1e-3 relative). `device=None` leaves placement to TensorFlow."""
    import tensorflow as tf

    with tf.device(device) if device else contextlib.nullcontext():
        model = TFMergedGraph(graph)
        return batched_logits(model, task, np.asarray(x, dtype=np.float32), batch)


def batched_logits(model: TFMergedGraph, task: str, x: np.ndarray, batch: int = EVAL_BATCH,
                   fn=None) -> np.ndarray:
    """`fn` (default: the model's logits of `task`) over `x` in batches, concatenated as numpy."""
    fn = fn or (lambda xb: model.logits(task, xb))
    if len(x) == 0:
        return np.zeros((0, model.graph.task(task).classes), np.float32)
    return np.concatenate([np.asarray(fn(x[i:i + batch])) for i in range(0, len(x), batch)])
