"""Calibration training of a merged model (NeuralMerger, Chou et al. 2018, Sec. 3.3) and an r/C search.

After k-means encoding, every merged layer computes with weights rebuilt from a shared codebook and a per-task
index map. Calibration keeps the index maps fixed and trains what is stored as floats, with all tasks stepped
together, so a codebook shared by two tasks is pulled by both of their losses.

The differentiable form (`TFMergedGraph`) is the graph itself, written with TensorFlow ops:

- every float32 tensor that a node uses (codebooks, biases, plain/depthwise conv and dense weights, heads) is
  ONE trainable `tf.Variable` per tensor id, so nodes that reference the same codebook share the variable;
- index maps are int32 constants; a LUT node rebuilds its weights by a gather exactly as
  `graph.decoded_weights` does (W[ky, kx, s·r + j, co] = codebook[s, index[ky, kx, s, co], j], cut to Cin)
  and then runs an ordinary convolution / matmul (explicit `tf.pad`, then VALID), bias, activation;
- pools, reshape and activations follow `reference.py` (explicit pool pads map to VALID or SAME).

Nodes flagged for int8 tables (docs/FORMAT.md "int8 tables") are trained as float LUT layers: the int8
quantisation is not simulated (its effect is small for r > 1, see README) and the flag is kept in the
written file; `edgemerge eval` measures the accuracy the runtime really gets, and the part of the drop that
the int8 quantisation alone causes.

`to_graph()` writes the trained values into a copy of the graph, so the `.emm` written from it is exactly the
model that was trained and evaluated (same float32 values; the runtime agrees with `tf_forward`).

Loss, per step (one batch of every task, losses summed over tasks):

    L = Σ_task [ CE(logits, labels) + λ · mean_{LUT nodes n of the task with match_output}
                                             mean|out_n − orig_n| / scale_n ]

`orig_n` is the output of the layer named by `node.match_output` ("task:layer") in that task's original
model, computed on the same batch (a Keras file is run by Keras; a .tflite file is rebuilt in Keras from what
the importer read, `reference.build_source_keras`). `scale_n` is the mean |orig_n| over (up to) 512 calibration samples, so
each L1 term is a *relative* mismatch (about 0.05–0.5 right after encoding) whatever the activation
magnitudes of a model are; averaging over a task's nodes makes λ independent of depth, so tasks of
different depth and scale are balanced. With that normalisation λ = 1 (`DEFAULT_L1_WEIGHT`) puts the
feature term on the same footing as a cross-entropy of about 0.1–1: large enough to keep the features
close to the originals (which is what protects against over-fitting a small calibration set, the paper's
point), small enough that the labels still drive the last layers.

Schedule: Adam (β = 0.9, 0.999), learning rate warmed up linearly over the first 5 % of the steps, then a
cosine decay to 5 % of its peak. Batch 64 per task. A held-out part of the calibration data (10 %) is
evaluated periodically; the checkpoint with the best mean accuracy over tasks (ties: lower held-out
cross-entropy) is kept. Step 0 — the model as it came from the encoder — is a candidate too, so calibration
never returns a model worse on the held-out part than the one it was given.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from edgemerge.emm.constants import NONE, Act, DType, Keys, Op
from edgemerge.emm.graph import MergedGraph, Node
from edgemerge.errors import EdgemergeError

DEFAULT_L1_WEIGHT = 1.0
DEFAULT_BATCH_SIZE = 64
DEFAULT_LEARNING_RATE = 1e-3
MIN_DEFAULT_STEPS = 100
MAX_DEFAULT_STEPS = 2000
SCALE_SAMPLES = 512              # samples used to measure each original activation's mean |value|
EVAL_BATCH = 256
R_CANDIDATES = (4, 8, 16, 32)
C_CANDIDATES = (16, 32, 64, 128, 256)

_LUT_OPS = (Op.LUT_CONV2D, Op.LUT_DENSE)
_SPATIAL_OPS = (Op.CONV2D, Op.LUT_CONV2D, Op.DEPTHWISE_CONV2D)


# ================================================================================================
# The differentiable form of a merged graph
# ================================================================================================
def _pool_padding(graph: MergedGraph, node: Node) -> str:
    """TF pools know VALID and SAME (padded cells ignored); explicit pads must be one of them, mapped as
    the Keras reference maps them."""
    from edgemerge.executors.keras_reference import _pool_padding as keras_pool_padding

    try:
        return keras_pool_padding(graph, node).upper()
    except ValueError as e:
        raise EdgemergeError(str(e)) from None


def _variable_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", name) or "tensor"


class TFMergedGraph:
    """A MergedGraph as TensorFlow computation with trainable float tensors and fixed index maps.

    Create it inside `strategy.scope()` to get distributed variables. `variables` maps a tensor id to its
    `tf.Variable`; a tensor referenced by several nodes (a shared codebook) has exactly one variable.
    """

    def __init__(self, graph: MergedGraph):
        import tensorflow as tf

        self.graph = graph
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
            if node.op in _LUT_OPS:
                self._lut_index[i] = tf.constant(self._flat_codeword_ids(node), dtype=tf.int32)
        self._trainable = [self.variables[k] for k in sorted(self.variables)]

    @property
    def trainable_variables(self) -> list:
        """Every trainable variable, ordered by tensor id."""
        return list(self._trainable)

    def _flat_codeword_ids(self, node: Node) -> np.ndarray:
        """Index map as rows of the codebook reshaped to [S_cb·C, r]: s·C + index[..., s, co]."""
        codebook = self.graph.tensors[node.weight].array
        index = self.graph.tensors[node.index].array.astype(np.int64)
        if node.op == Op.LUT_DENSE:
            index = index[None, None]                            # [1, 1, S, Out]
        s_count = index.shape[2]
        if codebook.ndim != 3 or s_count > codebook.shape[0] or codebook.shape[2] != node.seg_len:
            raise EdgemergeError(f"node {node.name}: index map with {s_count} segments does not fit codebook "
                                 f"{self.graph.tensors[node.weight].name} of shape {codebook.shape} (r={node.seg_len})")
        if index.size and int(index.max()) >= codebook.shape[1]:
            raise EdgemergeError(f"node {node.name}: index map holds {int(index.max())}, past the codebook's "
                                 f"{codebook.shape[1]} codewords")
        seg = np.arange(s_count, dtype=np.int64)[None, None, :, None]
        return (seg * codebook.shape[1] + index).astype(np.int32)

    def weights(self, i: int):
        """The weights node `i` computes with ([KH, KW, Cin, Cout] or [In, Out]), differentiable."""
        import tensorflow as tf

        node = self.graph.nodes[i]
        var = self.variables[node.weight]
        if node.op not in _LUT_OPS:
            return var
        r = node.seg_len
        ids = self._lut_index[i]                                  # [KH, KW, S, Cout]
        kh, kw, s_count, cout = ids.shape
        vectors = tf.gather(tf.reshape(var, [-1, r]), ids)       # [KH, KW, S, Cout, r]
        w = tf.reshape(tf.transpose(vectors, [0, 1, 2, 4, 3]), [kh, kw, s_count * r, cout])
        in_shape = self.graph.value_shape(node.input)
        if node.op == Op.LUT_DENSE:
            return w[0, 0, :int(np.prod(in_shape)), :]
        return w[:, :, :in_shape[2], :]

    def _node(self, i: int, x):
        import tensorflow as tf

        node = self.graph.nodes[i]
        if node.op in _SPATIAL_OPS:
            top, left, bottom, right = node.pads
            if any(node.pads):
                x = tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]])
            strides = [1, node.stride[0], node.stride[1], 1]
            if node.op == Op.DEPTHWISE_CONV2D:
                y = tf.nn.depthwise_conv2d(x, self.weights(i), strides, "VALID")
            else:
                y = tf.nn.conv2d(x, self.weights(i), strides, "VALID")
        elif node.op in (Op.DENSE, Op.LUT_DENSE):
            n_in = int(np.prod(self.graph.value_shape(node.input)))
            y = tf.matmul(tf.reshape(x, [-1, n_in]), self.weights(i))
            y = tf.reshape(y, [-1, 1, 1, node.out_shape[2]])
        elif node.op == Op.MAX_POOL:
            y = tf.nn.max_pool2d(x, node.kernel, node.stride, _pool_padding(self.graph, node))
        elif node.op == Op.AVG_POOL:
            y = tf.nn.avg_pool2d(x, node.kernel, node.stride, _pool_padding(self.graph, node))
        elif node.op == Op.GLOBAL_AVG_POOL:
            y = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
        elif node.op == Op.RESHAPE:
            y = tf.reshape(x, [-1, *node.out_shape])
        elif node.op == Op.ACTIVATION:
            y = x
        else:
            raise EdgemergeError(f"node {node.name}: op {node.op!r} has no TensorFlow form")
        if node.bias != NONE:
            y = y + self.variables[node.bias]
        if node.activation == Act.RELU:
            y = tf.nn.relu(y)
        elif node.activation == Act.RELU6:
            y = tf.nn.relu6(y)
        elif node.activation != Act.NONE:
            raise EdgemergeError(f"node {node.name}: unknown activation {node.activation!r}")
        return y

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
            values[n_in + i] = self._node(i, values[self.graph.nodes[i].input])
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
    import contextlib

    import tensorflow as tf

    with tf.device(device) if device else contextlib.nullcontext():
        model = TFMergedGraph(graph)
        return _batched_logits(model, task, np.asarray(x, dtype=np.float32), batch)


def _batched_logits(model: TFMergedGraph, task: str, x: np.ndarray, batch: int = EVAL_BATCH,
                    fn=None) -> np.ndarray:
    fn = fn or (lambda xb: model.logits(task, xb))
    if len(x) == 0:
        return np.zeros((0, model.graph.task(task).classes), np.float32)
    return np.concatenate([np.asarray(fn(x[i:i + batch])) for i in range(0, len(x), batch)])


# ================================================================================================
# Calibration data
# ================================================================================================
def split_calibration(n: int, *, task: str, seed: int = 0, calib_fraction: float = 1.0,
                      val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices) of a task's calibration file of `n` samples, deterministic in
    (task, seed). The held-out part (`val_fraction` of the file) is taken first and does not depend on
    `calib_fraction`, so runs with different fractions (the paper's Fig. 4) are judged on the same samples;
    `calib_fraction` then keeps that share of the rest. Smaller fractions give subsets of larger ones."""
    if not 0.0 < calib_fraction <= 1.0:
        raise EdgemergeError(f"calib_fraction must be in (0, 1], got {calib_fraction}")
    if not 0.0 <= val_fraction < 1.0:
        raise EdgemergeError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(task.encode("utf-8"))])
    order = rng.permutation(n)
    n_val = min(n - 1, max(1, int(round(val_fraction * n)))) if val_fraction > 0 and n > 1 else 0
    pool = order[n_val:]
    n_train = max(1, int(round(calib_fraction * len(pool)))) if len(pool) else 0
    return np.sort(pool[:n_train]), np.sort(order[:n_val])


@dataclass
class _TaskData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    held_out: bool


def _load_task_data(graph: MergedGraph, calib: Mapping[str, str | os.PathLike], *, seed: int,
                    calib_fraction: float, val_fraction: float) -> dict[str, _TaskData]:
    from edgemerge.datasets import load_labelled

    out = {}
    for task in calib:
        t = graph.task(task)
        data = load_labelled(calib[task], graph.inputs[t.input])
        if len(data.y) < 2:
            raise EdgemergeError(f"calibration data {calib[task]}: {len(data.y)} sample(s), need at least 2")
        if data.y.min() < 0 or data.y.max() >= t.classes:
            raise EdgemergeError(f"calibration data {calib[task]}: labels outside 0..{t.classes - 1} "
                                 f"for task {task!r}")
        tr, va = split_calibration(len(data.y), task=task, seed=seed, calib_fraction=calib_fraction,
                                   val_fraction=val_fraction)
        held_out = len(va) > 0
        if not held_out:          # no held-out part asked for: judge (and pick checkpoints) on the train part
            va = tr
        out[task] = _TaskData(data.x[tr], data.y[tr], data.x[va], data.y[va], held_out)
    return out


# ================================================================================================
# Original models: the targets of the L1 terms
# ================================================================================================
@dataclass
class _Targets:
    """For one task: the original model with extra outputs at the matched layers."""
    model: object                       # keras.Model: x -> [matched layer outputs..., final output]
    nodes: list[int]                    # node index of each matched output (same order)
    layers: list[str]
    scales: list[float] = field(default_factory=list)


_KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


def _load_original(path: Path) -> tuple[object, Callable[[str], object]]:
    """An original model file as Keras computation: (keras.Model x -> predictions, layer name -> symbolic output,
    raising KeyError for an unknown name).

    Keras files are loaded by Keras itself (names: Keras layer names). Any other format the importers read
    (.tflite) is rebuilt in Keras from the imported `SourceModel` (`reference.build_source_keras`), i.e. from the
    weights the merge encoded; names are the layers' `match_output` (for .tflite, output tensor names), which is
    what merged nodes' match_output and the zipper's l1_targets refer to."""
    import keras

    if not path.is_file():
        raise EdgemergeError(f"original model {path}: no such file")
    if path.suffix.lower() in _KERAS_SUFFIXES:
        try:
            orig = keras.models.load_model(path, compile=False, safe_mode=True)
        except Exception as e:  # Keras raises many types for unreadable files
            raise EdgemergeError(f"original model {path}: cannot load ({e})") from None
        if len(orig.inputs) != 1 or len(orig.outputs) != 1:
            raise EdgemergeError(f"original model {path} has {len(orig.inputs)} inputs and {len(orig.outputs)} "
                                 "outputs; calibration expects one of each")

        def layer_output(name: str):
            try:
                return orig.get_layer(name).output
            except ValueError:
                raise KeyError(name) from None
        return orig, layer_output

    from edgemerge.executors.keras_reference import build_source_keras
    from edgemerge.importers import load_source_model

    model, outputs = build_source_keras(load_source_model(path))
    return model, outputs.__getitem__


def _load_targets(graph: MergedGraph, originals: Mapping[str, str | os.PathLike], tasks: list[str],
                  l1_targets: Mapping[str, list[tuple[int, str]]] | None = None
                  ) -> tuple[dict[str, _Targets], dict[str, list[str]]]:
    """Per task, the original model with extra outputs at the layers the L1 terms compare with: by default
    every LUT node of the task whose match_output names one of the task's layers; with `l1_targets`, exactly
    the given (node index, original layer name) pairs of each task listed there (any op, shared nodes too)."""
    import keras

    targets, skipped = {}, {}
    for task in tasks:
        path = Path(originals[task])
        orig, layer_output = _load_original(path)
        want_shape = tuple(graph.task_input_shape(task))
        if tuple(orig.input_shape[1:]) != want_shape:
            raise EdgemergeError(f"original model {path} expects samples of shape {tuple(orig.input_shape[1:])}, "
                                 f"task {task!r} of the merged model reads {want_shape}")
        nodes, layers, outputs, skipped[task] = [], [], [], []
        if l1_targets is not None and task in l1_targets:
            task_nodes = set(graph.nodes_for(task))
            pairs = []
            for i, layer_name in l1_targets[task]:
                if i not in task_nodes:
                    raise EdgemergeError(f"l1_targets[{task!r}]: node {i} is not computed by task {task!r}")
                pairs.append((i, layer_name))
        else:
            pairs = []
            for i in graph.nodes_for(task):
                node = graph.nodes[i]
                if node.op not in _LUT_OPS:
                    continue
                owner, _, layer_name = node.match_output.partition(":")
                if not node.match_output or owner != task or not layer_name:
                    skipped[task].append(node.name)
                    continue
                pairs.append((i, layer_name))
        for i, layer_name in pairs:
            node = graph.nodes[i]
            try:
                out = layer_output(layer_name)
            except KeyError:
                what = f"match_output {node.match_output!r}" if l1_targets is None or task not in l1_targets \
                    else f"L1 target layer {layer_name!r}"
                raise EdgemergeError(f"node {node.name}: {what} names no layer of {path}") from None
            count = int(np.prod(out.shape[1:]))
            if count != int(np.prod(node.out_shape)):
                raise EdgemergeError(f"node {node.name}: layer {layer_name} of {path} has output shape "
                                     f"{tuple(out.shape[1:])}, the node's is {node.out_shape}")
            nodes.append(i)
            layers.append(layer_name)
            outputs.append(out)
        outputs.append(orig.outputs[0])
        model = keras.Model(orig.inputs[0], outputs, name=f"targets_{task}")
        targets[task] = _Targets(model, nodes, layers)
    return targets, skipped


def _target_outputs(targets: _Targets, x) -> list:
    out = targets.model(x, training=False)
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _measure_scales(targets: _Targets, x: np.ndarray) -> None:
    outs = _target_outputs(targets, x[:SCALE_SAMPLES])[:-1]
    scales = []
    for o in outs:
        s = float(np.mean(np.abs(np.asarray(o))))
        scales.append(s if s > 1e-8 else 1.0)            # a dead layer: compare absolute values
    targets.scales = scales


# ================================================================================================
# Strategy, optimiser, schedule, progress
# ================================================================================================
def _make_strategy(strategy):
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.Strategy):
        return strategy
    if strategy in (None, "default"):
        return tf.distribute.get_strategy()
    if strategy == "mirrored":
        # All local GPUs, or the CPU where there are none.
        return tf.distribute.MirroredStrategy()
    if strategy == "multi-worker":
        # Cluster from TF_CONFIG (a single local worker without it). For a real cluster, create the
        # strategy at program start and pass the instance instead: TF requires that.
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise EdgemergeError(f"unknown strategy {strategy!r}: expected 'default', 'mirrored' or 'multi-worker' "
                         "(or a tf.distribute.Strategy)")


class _Adam:
    """Adam applied in cross-replica context to already summed gradients, so every replica (and worker)
    takes the identical step. Slots are created in the strategy's scope like the variables."""

    def __init__(self, variables: list, schedule: Callable, beta1=0.9, beta2=0.999, epsilon=1e-7):
        import tensorflow as tf

        self.variables = variables
        self.schedule = schedule
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="calibration_step")
        self.m = [tf.Variable(tf.zeros_like(v), trainable=False, name=f"m_{k}") for k, v in enumerate(variables)]
        self.v = [tf.Variable(tf.zeros_like(v), trainable=False, name=f"v_{k}") for k, v in enumerate(variables)]

    def apply(self, grads) -> "tf.Tensor":
        import tensorflow as tf

        step = tf.cast(self.iterations + 1, tf.float32)
        lr = self.schedule(tf.cast(self.iterations, tf.float32))
        correction = tf.sqrt(1.0 - tf.pow(self.beta2, step)) / (1.0 - tf.pow(self.beta1, step))
        for var, m, v, g in zip(self.variables, self.m, self.v, grads):
            if g is None:
                continue
            g = tf.convert_to_tensor(g)
            m.assign(self.beta1 * m + (1.0 - self.beta1) * g)
            v.assign(self.beta2 * v + (1.0 - self.beta2) * tf.square(g))
            var.assign_sub(lr * correction * m / (tf.sqrt(v) + self.epsilon))
        self.iterations.assign_add(1)
        return lr


def _schedule(peak: float, steps: int, floor: float = 0.05) -> Callable:
    """Linear warm-up over 5 % of the steps, then cosine decay to `floor`·peak."""
    import tensorflow as tf

    warmup = max(1, steps // 20)
    decay = max(1, steps - warmup)

    def lr(step):
        warm = peak * (step + 1.0) / warmup
        t = tf.clip_by_value((step - warmup) / decay, 0.0, 1.0)
        cosine = peak * (floor + (1.0 - floor) * 0.5 * (1.0 + tf.cos(math.pi * t)))
        return tf.where(step < warmup, warm, cosine)
    return lr


class _Bar:
    """A one-line progress bar on stderr (only on a terminal, so logs and CI stay clean)."""

    def __init__(self, total: int, enabled: bool, width: int = 30):
        self.total, self.enabled, self.width = max(1, total), enabled, width
        self.started = time.perf_counter()
        self.drawn = 0.0

    def update(self, done: int, note: str = "") -> None:
        now = time.perf_counter()
        if not self.enabled or (done < self.total and now - self.drawn < 0.1):
            return
        self.drawn = now
        filled = int(self.width * done / self.total)
        elapsed = time.perf_counter() - self.started
        eta = elapsed / done * (self.total - done) if done else 0.0
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} "
                         f"{elapsed:5.1f}s eta {eta:5.1f}s {note}\x1b[K")
        sys.stderr.flush()

    def clear(self) -> None:
        """Erases the bar so that a log line can take its place; the next update redraws it."""
        if self.enabled:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


# ================================================================================================
# calibrate()
# ================================================================================================
@dataclass
class CalibrationResult:
    graph: MergedGraph          # a copy of the input graph holding the trained (best-checkpoint) values
    report: dict


def default_steps(n_train: Mapping[str, int], batch_size: int) -> int:
    """About two epochs of the smallest task's training part, clipped to [100, 2000] steps."""
    smallest = min(n_train.values())
    return int(min(MAX_DEFAULT_STEPS, max(MIN_DEFAULT_STEPS, math.ceil(2 * smallest / batch_size))))


def calibrate(graph: MergedGraph, originals: Mapping[str, str | os.PathLike],
              calib: Mapping[str, str | os.PathLike], *, steps: int | None = None,
              batch_size: int = DEFAULT_BATCH_SIZE, learning_rate: float = DEFAULT_LEARNING_RATE,
              l1_weight: float = DEFAULT_L1_WEIGHT, calib_fraction: float = 1.0, val_fraction: float = 0.1,
              strategy="default", seed: int = 0, eval_every: int | None = None,
              progress: Callable[[str], None] | None = None,
              l1_targets: Mapping[str, list[tuple[int, str]]] | None = None) -> CalibrationResult:
    """Trains the codebooks and float tensors of `graph` on every task at once (index maps fixed).

    originals: task -> original model file, .keras/.h5 or .tflite (targets of the L1 terms, and the reference
               accuracy).
    calib:     task -> .npz with `x` (NHWC float32) and `y` (labels); every task of the graph needs one.
    steps:     optimiser steps (each takes one batch of every task); default `default_steps`.
    l1_weight: λ of the feature-matching term (relative L1, see the module docstring); 0 = cross-entropy only.
    calib_fraction / val_fraction / seed: see `split_calibration`.
    strategy:  "default", "mirrored" (MirroredStrategy: local GPUs or the CPU), "multi-worker"
               (MultiWorkerMirroredStrategy from TF_CONFIG), or a tf.distribute.Strategy instance.
    progress:  called with a line of text at every evaluation (per-task loss and accuracy); a progress bar
               is drawn on stderr as well when it is a terminal. None: silent.
    l1_targets: task -> [(node index, layer name of the task's original model)]: the L1 terms of that task
               compare exactly these node outputs with these layers' outputs, whatever the nodes' ops (e.g.
               the plain conv layers that zippered models share, `edgemerge.zipper.core`); a node shared by two
               tasks may be listed for both. Tasks not listed keep the default: their LUT nodes with a
               match_output.

    Returns the trained copy of the graph (values of the best held-out checkpoint; index maps, nodes and
    tensor order unchanged; metadata gains `calibrate.*` keys) and a report:
      tasks.<task>: n_train, n_val, held_out, batch_size, reference_accuracy (original model),
                    accuracy_before, accuracy_after, val_ce_before, val_ce_after (held-out part),
                    final_loss, final_ce, final_l1 (training loss over the last evaluation interval),
                    l1_layers, l1_skipped_nodes, l1_scales, steps, best_step, seconds
      steps, best_step, seconds, train_seconds, batch_size, learning_rate, l1_weight, calib_fraction,
      val_fraction, seed, strategy {name, replicas}, history [{step, lr, tasks: {accuracy, ce, train}}]
    """
    import tensorflow as tf

    started = time.perf_counter()
    say = progress or (lambda message: None)
    tasks = [t.name for t in graph.tasks]
    for what, given in (("calibration data", calib), ("original model", originals)):
        missing = [t for t in tasks if t not in given]
        if missing:
            raise EdgemergeError(f"no {what} for task(s) {', '.join(missing)}")
        unknown = [t for t in given if t not in tasks]
        if unknown:
            raise EdgemergeError(f"{what} given for task(s) {', '.join(unknown)} not in the merged model "
                                 f"(tasks: {', '.join(tasks)})")
    if batch_size < 1:
        raise EdgemergeError(f"batch_size must be positive, got {batch_size}")
    if steps is not None and steps < 0:
        raise EdgemergeError(f"steps must be >= 0, got {steps}")
    if l1_weight < 0:
        raise EdgemergeError(f"l1_weight must be >= 0, got {l1_weight}")

    data = _load_task_data(graph, {t: calib[t] for t in tasks}, seed=seed, calib_fraction=calib_fraction,
                           val_fraction=val_fraction)
    strat = _make_strategy(strategy)
    replicas = int(strat.num_replicas_in_sync)
    # Per task: the largest batch <= batch_size that the training part fills and the replicas split evenly.
    batch = {}
    for task in tasks:
        b = min(batch_size, len(data[task].y_train))
        b -= b % replicas
        if b < replicas:
            raise EdgemergeError(f"task {task!r}: {len(data[task].y_train)} training sample(s) cannot fill "
                                 f"one batch on {replicas} replicas")
        batch[task] = b
    steps = default_steps({t: len(d.y_train) for t, d in data.items()}, batch_size) if steps is None else steps
    eval_every = eval_every or max(1, steps // 10)

    with strat.scope():
        model = TFMergedGraph(graph)
        targets, skipped_l1 = _load_targets(graph, {t: originals[t] for t in tasks}, tasks, l1_targets)
        optimiser = _Adam(model.trainable_variables, _schedule(learning_rate, max(1, steps)))
    for task in tasks:
        _measure_scales(targets[task], data[task].x_train)
        if skipped_l1[task]:
            say(f"calibrate: task {task}: no match_output for LUT node(s) {', '.join(skipped_l1[task])}; "
                "their L1 terms are left out")
    variables = model.trainable_variables
    lam = float(l1_weight)

    # ---- data: each element is {task: (x, y)}, one batch of every task ----------------------------
    def dataset_fn(ctx: tf.distribute.InputContext):
        parts = {}
        for k, task in enumerate(tasks):
            d = data[task]
            ds = tf.data.Dataset.from_tensor_slices((d.x_train, d.y_train.astype(np.int32)))
            if ctx.num_input_pipelines > 1:
                ds = ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
            ds = ds.shuffle(len(d.y_train), seed=seed * 1009 + k, reshuffle_each_iteration=True).repeat()
            parts[task] = ds.batch(ctx.get_per_replica_batch_size(batch[task]), drop_remainder=True)
        return tf.data.Dataset.zip(parts).prefetch(2)

    # ---- one step ---------------------------------------------------------------------------------
    def task_losses(task: str, x, y):
        """Per-replica sums normalised by the global batch, so summing over replicas gives means."""
        tg = targets[task]
        logits, outs = model.forward(task, x, want=tg.nodes)
        gb = float(batch[task])
        ce = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)) / gb
        l1 = tf.constant(0.0)
        if tg.nodes and lam > 0:
            orig = _target_outputs(tg, x)
            terms = []
            for node_i, o, scale in zip(tg.nodes, orig, tg.scales):
                diff = tf.abs(tf.reshape(outs[node_i], [tf.shape(x)[0], -1]) - tf.reshape(o, [tf.shape(x)[0], -1]))
                terms.append(tf.reduce_sum(tf.reduce_mean(diff, axis=1)) / (gb * scale))
            l1 = tf.add_n(terms) / len(terms)
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), y), tf.float32))
        return ce, l1, correct / gb

    def replica_step(batches):
        with tf.GradientTape() as tape:
            total = tf.constant(0.0)
            metrics = {}
            for task in tasks:
                x, y = batches[task]
                ce, l1, acc = task_losses(task, x, y)
                total += ce + lam * l1
                metrics[task] = (ce, l1, acc)
        grads = tape.gradient(total, variables)
        grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g) for g, v in zip(grads, variables)]
        return grads, metrics

    @tf.function
    def train_step(iterator):
        grads, metrics = strat.run(replica_step, args=(next(iterator),))
        grads = [strat.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in grads]
        lr = optimiser.apply(grads)
        metrics = tf.nest.map_structure(lambda m: strat.reduce(tf.distribute.ReduceOp.SUM, m, axis=None), metrics)
        return lr, metrics

    eval_fns = {}
    for task in tasks:
        shape = graph.task_input_shape(task)
        eval_fns[task] = tf.function(lambda xb, _t=task: model.logits(_t, xb),
                                     input_signature=[tf.TensorSpec([None, *shape], tf.float32)])

    def evaluate() -> dict[str, dict]:
        out = {}
        for task in tasks:
            d = data[task]
            logits = _batched_logits(model, task, d.x_val, fn=eval_fns[task]).astype(np.float64)
            logits -= logits.max(axis=1, keepdims=True)
            logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
            out[task] = {"accuracy": float(np.mean(np.argmax(logits, axis=1) == d.y_val)),
                         "ce": float(-np.mean(logp[np.arange(len(d.y_val)), d.y_val]))}
        return out

    def score(ev: dict) -> tuple[float, float]:
        return (float(np.mean([ev[t]["accuracy"] for t in tasks])), -float(np.mean([ev[t]["ce"] for t in tasks])))

    # ---- reference accuracy of the originals on the held-out part ------------------------------------
    reference = {}
    for task in tasks:
        d = data[task]
        pred = _batched_logits(model, task, d.x_val, fn=lambda xb, _t=task: _target_outputs(targets[_t], xb)[-1])
        reference[task] = float(np.mean(np.argmax(pred, axis=1) == d.y_val))

    before = evaluate()
    best_score, best_step, best_values, best_eval = score(before), 0, model.values(), before
    say(f"calibrate: {len(tasks)} task(s), {steps} steps, batch {', '.join(f'{t} {batch[t]}' for t in tasks)}, "
        f"lr {learning_rate:g}, l1 weight {lam:g}, {replicas} replica(s); before: " +
        ", ".join(f"{t} acc {before[t]['accuracy']:.4f} (original {reference[t]:.4f})" for t in tasks))

    history = [{"step": 0, "tasks": before}]
    last = {t: {"ce": float("nan"), "l1": float("nan"), "loss": float("nan"), "accuracy": float("nan")} for t in tasks}
    bar = _Bar(steps, enabled=progress is not None and sys.stderr.isatty())
    train_started = time.perf_counter()
    if steps > 0:
        iterator = iter(strat.distribute_datasets_from_function(dataset_fn))
        running = {t: np.zeros(3) for t in tasks}
        count = 0
        for step in range(1, steps + 1):
            lr, metrics = train_step(iterator)
            for t in tasks:
                running[t] += [float(v) for v in metrics[t]]
            count += 1
            bar.update(step)
            if step % eval_every == 0 or step == steps:
                for t in tasks:
                    ce, l1, acc = running[t] / count
                    last[t] = {"ce": ce, "l1": l1, "loss": ce + lam * l1, "accuracy": acc}
                running = {t: np.zeros(3) for t in tasks}
                count = 0
                ev = evaluate()
                history.append({"step": step, "lr": float(lr),
                                "tasks": {t: {**ev[t], "train": dict(last[t])} for t in tasks}})
                improved = score(ev) > best_score
                if improved:
                    best_score, best_step, best_values, best_eval = score(ev), step, model.values(), ev
                bar.clear()
                say(f"calibrate: step {step}/{steps} lr {float(lr):.2e} | " + " | ".join(
                    f"{t} loss {last[t]['loss']:.4f} (ce {last[t]['ce']:.4f} l1 {last[t]['l1']:.4f}) "
                    f"acc {last[t]['accuracy']:.3f} held-out {ev[t]['accuracy']:.4f}" for t in tasks)
                    + (" *" if improved else ""))
    bar.clear()
    train_seconds = time.perf_counter() - train_started

    model.assign(best_values)
    trained = model.to_graph(best_values)
    trained.metadata.update({Keys.Calibrate.STEPS: int(steps), Keys.Calibrate.BEST_STEP: int(best_step),
                             Keys.Calibrate.SEED: int(seed), Keys.Calibrate.CALIB_FRACTION: float(calib_fraction),
                             "calibrate.l1_weight": lam})
    seconds = round(time.perf_counter() - started, 2)
    per_task = {}
    for t in tasks:
        per_task[t] = {
            "n_train": int(len(data[t].y_train)), "n_val": int(len(data[t].y_val)),
            "held_out": data[t].held_out, "batch_size": batch[t],
            "reference_accuracy": reference[t],
            "accuracy_before": before[t]["accuracy"], "accuracy_after": best_eval[t]["accuracy"],
            "val_ce_before": before[t]["ce"], "val_ce_after": best_eval[t]["ce"],
            "final_loss": last[t]["loss"], "final_ce": last[t]["ce"], "final_l1": last[t]["l1"],
            "l1_layers": list(targets[t].layers), "l1_skipped_nodes": list(skipped_l1[t]),
            "l1_scales": [round(s, 6) for s in targets[t].scales],
            "steps": int(steps), "best_step": int(best_step), "seconds": seconds,
        }
    report = {
        "tasks": per_task, "steps": int(steps), "best_step": int(best_step), "seconds": seconds,
        "train_seconds": round(train_seconds, 2), "batch_size": int(batch_size),
        "learning_rate": float(learning_rate), "l1_weight": lam, "calib_fraction": float(calib_fraction),
        "val_fraction": float(val_fraction), "seed": int(seed),
        "strategy": {"name": type(strat).__name__, "replicas": replicas}, "history": history,
    }
    say(f"calibrate: done in {seconds} s, best step {best_step}: " + ", ".join(
        f"{t} {per_task[t]['accuracy_before']:.4f} -> {per_task[t]['accuracy_after']:.4f}" for t in tasks))
    return CalibrationResult(trained, report)


# ================================================================================================
# r/C search for a budget (`--budget max-drop=X` / `min-compression=Y`)
# ================================================================================================
@dataclass(frozen=True)
class Budget:
    """max_drop: largest allowed accuracy drop of any task against its original model (0.01 = 1 point);
    min_compression: smallest allowed original-bytes / file-bytes ratio. Either or both."""
    max_drop: float | None = None
    min_compression: float | None = None


def parse_budget(text: str | Budget) -> Budget:
    """Parses "max-drop=0.01", "max-drop=1%", "min-compression=20" or "min-compression=20x" (comma-separated
    to give both)."""
    if isinstance(text, Budget):
        return text
    max_drop = min_compression = None
    for item in str(text).split(","):
        key, sep, value = item.strip().partition("=")
        value = value.strip().lower()
        try:
            if key == "max-drop" and sep:
                max_drop = float(value[:-1]) / 100 if value.endswith("%") else float(value)
                if not 0 <= max_drop < 1:
                    raise ValueError
                continue
            if key == "min-compression" and sep:
                min_compression = float(value[:-1] if value.endswith("x") else value)
                if min_compression <= 0:
                    raise ValueError
                continue
        except ValueError:
            pass
        raise EdgemergeError(f"budget {item.strip()!r}: expected max-drop=X (0 <= X < 1, or X%) or "
                             "min-compression=Y (Y > 0, e.g. 20 or 20x)")
    return Budget(max_drop, min_compression)


@dataclass
class RCSearchResult:
    layer_rc: dict[str, tuple[int, int]]   # the chosen (r, C) per group key
    table: list[dict]                      # every setting measured: what it was, bytes, compression, accuracy
    graph: MergedGraph                     # the chosen merge (calibrated when calibrate_final)
    report: dict                           # final check: compression, per-task accuracy/drop, within_budget


@dataclass
class _Group:
    key: str
    codebook: int
    nodes: list[Node]


def lut_groups(graph: MergedGraph) -> list[_Group]:
    """One group per codebook tensor shared by LUT nodes. The key is the first node's first source
    ("task:layer", what `--layer-rc` accepts), else the node's name."""
    groups: dict[int, _Group] = {}
    for node in graph.nodes:
        if node.op in _LUT_OPS:
            if node.weight not in groups:
                groups[node.weight] = _Group(node.sources[0] if node.sources else node.name, node.weight, [])
            groups[node.weight].nodes.append(node)
    return list(groups.values())


def _estimated_group_bytes(graph: MergedGraph, group: _Group, r: int, c: int) -> int:
    """Bytes of the group's codebook and index maps at (r, C), from the node shapes."""
    from edgemerge.emm.constants import index_bits

    total, s_cb = 0, 0
    for node in group.nodes:
        in_shape = graph.value_shape(node.input)
        cin = int(np.prod(in_shape)) if node.op == Op.LUT_DENSE else in_shape[2]
        s = -(-cin // r)
        s_cb = max(s_cb, s)
        total += (node.kernel[0] * node.kernel[1] * s * node.out_shape[2] * index_bits(c) + 7) // 8
    return total + 4 * s_cb * c * r


def _default_merge_fn(sources: Mapping[str, str | os.PathLike], seed: int, options: dict) -> Callable:
    from edgemerge.importers import load_source_model
    from edgemerge.merging.merge import merge_models

    models = {task: load_source_model(path) for task, path in sources.items()}
    return lambda layer_rc: merge_models(models, layer_rc=layer_rc, **{"seed": seed, **options}).graph


def search_rc(sources: Mapping[str, str | os.PathLike] | None, originals: Mapping[str, str | os.PathLike],
              calib: Mapping[str, str | os.PathLike], budget: str | Budget, *,
              merge_fn: Callable[[dict[str, tuple[int, int]]], MergedGraph] | None = None,
              merge_options: dict | None = None,
              r_values=R_CANDIDATES, c_values=C_CANDIDATES, proxy_samples: int = 512,
              val_fraction: float = 0.1, seed: int = 0, calibrate_final: bool = True,
              calibrate_kwargs: dict | None = None, progress: Callable[[str], None] | None = None) -> RCSearchResult:
    """Chooses (r, C) per merged-layer group for a budget, the way the paper tuned them: one group at a time.

    merge_fn(layer_rc) -> MergedGraph merges the sources with the given (r, C) per group key (groups not in
    `layer_rc` get the merger's defaults). Without it, `sources` (task -> model file) are imported once and
    merged with `edgemerge.merging.merge.merge_models(..., **merge_options)` (e.g. preset, alignment, kmeans_inits,
    n_jobs). Group keys are those of `lut_groups` on the default merge ("task:layer" of a member).

    1. Proxy (cheap): top-1 accuracy WITHOUT calibration on a held-out slice (`proxy_samples` per task, from
       the held-out part `split_calibration` gives calibrate() too), against each original model on the same
       slice. Baseline: every group at its least compressive candidate.
    2. Per group, candidates are ordered by the group's estimated bytes; assuming accuracy falls as bytes
       fall, a binary search finds the most compressive candidate whose drop against the baseline (that
       group changed, all others at baseline) is at most a tolerance t: about log2(|r|·|C|) ≈ 5 merges per
       group and tolerance. Results are cached, so later tolerances mostly reuse them.
    3. max-drop=X: t starts at X minus the baseline's own drop and is halved until the combined merge's
       proxy drop is within X. min-compression=Y: t climbs a ladder (0, 0.25 %, ... 32 %, 100 %) until the
       combined merge's exact file size reaches Y (and, with both, the drop stays within X).
    4. The chosen merge is calibrated (`calibrate_kwargs` passed on) and checked against the budget with the
       calibrated accuracy; `report["within_budget"]` says whether it holds. The proxy ignores calibration,
       so it is conservative for max-drop.

    Cost: merges ≈ 1 + G·(5..10) + ladder steps (G = groups), each followed by a forward pass over
    2·proxy_samples samples; then one calibration.
    """
    from edgemerge import emm

    say = progress or (lambda message: None)
    started = time.perf_counter()
    budget = parse_budget(budget)
    if budget.max_drop is None and budget.min_compression is None:
        raise EdgemergeError("search_rc needs a budget: max-drop=X and/or min-compression=Y")
    if not 0 < val_fraction < 1:
        raise EdgemergeError(f"search_rc needs a held-out part: val_fraction in (0, 1), got {val_fraction}")
    if merge_fn is None:
        if not sources:
            raise EdgemergeError("search_rc needs either sources (task -> model file) or merge_fn")
        merge_fn = _default_merge_fn(sources, seed, dict(merge_options or {}))
    candidates_rc = [(int(r), int(c)) for r in r_values for c in c_values]

    table: list[dict] = []
    cache: dict[tuple, dict] = {}
    default = merge_fn({})
    tasks = [t.name for t in default.tasks]
    groups = lut_groups(default)
    if not groups:
        raise EdgemergeError("the merged model has no LUT layers: nothing to choose r/C for")
    order = {g.key: sorted(candidates_rc, key=lambda rc, _g=g: (-_estimated_group_bytes(default, _g, *rc), -rc[1]))
             for g in groups}
    baseline = {g.key: order[g.key][0] for g in groups}

    # ---- the proxy slice and the originals' accuracy on it ---------------------------------------
    from edgemerge.datasets import load_labelled

    slices, original_acc = {}, {}
    for task in tasks:
        data = load_labelled(calib[task], default.task_input_shape(task))
        _, val = split_calibration(len(data.y), task=task, seed=seed, val_fraction=val_fraction)
        val = val[:proxy_samples]
        slices[task] = (data.x[val], data.y[val])
        orig, _ = _load_original(Path(originals[task]))
        pred = np.concatenate([np.asarray(orig(data.x[val][i:i + EVAL_BATCH], training=False))
                               for i in range(0, len(val), EVAL_BATCH)])
        original_acc[task] = float(np.mean(np.argmax(pred, axis=1) == data.y[val]))
    original_bytes = int(default.metadata.get(Keys.General.ORIGINAL_BYTES, 0))

    def measure(layer_rc: dict[str, tuple[int, int]], what: str) -> dict:
        key = tuple(sorted(layer_rc.items()))
        if key in cache:
            return cache[key]
        row = {"what": what, "layer_rc": {k: list(v) for k, v in layer_rc.items()}}
        try:
            graph = default if not layer_rc else merge_fn(dict(layer_rc))
        except Exception as e:  # noqa: BLE001 - any failure of the caller's merge (e.g. C above the number
            # of sub-vectors) makes that setting infeasible; the search goes on without it
            row.update(error=f"{type(e).__name__}: {e}", feasible=False)
            cache[key] = row
            table.append(row)
            return row
        file_bytes = len(emm.to_bytes(graph))
        acc = {t: float(np.mean(np.argmax(tf_forward(graph, t, slices[t][0]), axis=1) == slices[t][1]))
               for t in tasks}
        row.update(feasible=True, file_bytes=file_bytes,
                   compression=original_bytes / file_bytes if original_bytes else None, accuracy=acc,
                   drop=max(original_acc[t] - acc[t] for t in tasks))
        cache[key] = row
        table.append(row)
        say(f"search_rc: {what}: {file_bytes} bytes" +
            (f" ({row['compression']:.1f}x)" if row["compression"] else "") +
            ", accuracy " + ", ".join(f"{t} {acc[t]:.4f}" for t in tasks) + f", drop {row['drop']:.4f}")
        return row

    measure({}, "default")
    base_row = measure(baseline, "baseline")
    if not base_row["feasible"]:
        raise EdgemergeError(f"the baseline setting {baseline} does not merge: {base_row['error']}")

    def increase(group: _Group, rc: tuple[int, int]) -> float:
        """Accuracy lost (worst task) against the baseline when only `group` is set to `rc`."""
        if rc == baseline[group.key]:
            return 0.0
        row = measure({**baseline, group.key: rc}, f"{group.key}={rc[0]}/{rc[1]}")
        if not row["feasible"]:
            return math.inf
        return max(base_row["accuracy"][t] - row["accuracy"][t] for t in tasks)

    def choose(tolerance: float) -> dict[str, tuple[int, int]]:
        out = {}
        for g in groups:
            cands = order[g.key]
            lo, hi = 0, len(cands) - 1
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if increase(g, cands[mid]) <= tolerance + 1e-12:
                    lo = mid
                else:
                    hi = mid - 1
            # Accuracy is not strictly monotone in bytes: a more compressive setting measured on the way
            # (now or for another tolerance) that fits is better than where the bisection stopped.
            for k in range(len(cands) - 1, lo, -1):
                key = tuple(sorted({**baseline, g.key: cands[k]}.items()))
                if key in cache and increase(g, cands[k]) <= tolerance + 1e-12:
                    lo = k
                    break
            out[g.key] = cands[lo]
        return out

    def fits(row: dict, drop_ok: bool = True) -> bool:
        if not row["feasible"]:
            return False
        if budget.max_drop is not None and drop_ok and row["drop"] > budget.max_drop + 1e-12:
            return False
        return budget.min_compression is None or (row["compression"] or 0) >= budget.min_compression

    chosen, chosen_row = baseline, base_row
    if budget.min_compression is None:
        # Per-group drops do not simply add up: shrink the tolerance until the combination fits.
        tolerance = max(budget.max_drop - base_row["drop"], 0.0)
        for _ in range(8):
            rc = choose(tolerance)
            row = measure(rc, f"combined t={tolerance:.4f}")
            if fits(row):
                chosen, chosen_row = rc, row
                break
            if tolerance == 0.0:
                break
            tolerance = tolerance * 0.7 if tolerance > 1e-3 else 0.0
    else:
        ladder = [0.0, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 1.0]
        if budget.max_drop is not None:
            ladder = [t for t in ladder if t <= max(budget.max_drop - base_row["drop"], 0.0)] or [0.0]
        best = None
        for tolerance in ladder:
            rc = choose(tolerance)
            row = measure(rc, f"combined t={tolerance:.4f}")
            if row["feasible"] and (best is None or row["compression"] > best[1]["compression"]) and \
                    (budget.max_drop is None or row["drop"] <= budget.max_drop + 1e-12):
                best = (rc, row)
            if fits(row):
                break
        if best is not None:
            chosen, chosen_row = best

    say(f"search_rc: chose {', '.join(f'{k}={r}/{c}' for k, (r, c) in chosen.items())} "
        f"(proxy drop {chosen_row['drop']:.4f}, {chosen_row['file_bytes']} bytes)")
    graph = default if chosen == {} else merge_fn(dict(chosen))
    calibration = None
    accuracy, reference = dict(chosen_row["accuracy"]), dict(original_acc)
    if calibrate_final:
        kwargs = {"seed": seed, "val_fraction": val_fraction, "progress": progress, **(calibrate_kwargs or {})}
        result = calibrate(graph, originals, calib, **kwargs)
        graph, calibration = result.graph, result.report
        accuracy = {t: calibration["tasks"][t]["accuracy_after"] for t in tasks}
        reference = {t: calibration["tasks"][t]["reference_accuracy"] for t in tasks}
    file_bytes = len(emm.to_bytes(graph))
    compression = original_bytes / file_bytes if original_bytes else None
    drop = {t: reference[t] - accuracy[t] for t in tasks}
    within = (budget.max_drop is None or max(drop.values()) <= budget.max_drop + 1e-12) and \
             (budget.min_compression is None or (compression or 0) >= budget.min_compression)
    report = {
        "budget": dataclasses.asdict(budget), "layer_rc": {k: list(v) for k, v in chosen.items()},
        "file_bytes": file_bytes, "original_bytes": original_bytes, "compression": compression,
        "calibrated": calibrate_final, "accuracy": accuracy, "reference_accuracy": reference, "drop": drop,
        "proxy_drop": chosen_row["drop"], "within_budget": bool(within),
        "merges": sum(1 for row in table if "error" not in row) + 1, "seconds": round(time.perf_counter() - started, 2),
        "calibration": calibration,
    }
    say(f"search_rc: {'within' if within else 'OUTSIDE'} budget: " +
        (f"{compression:.1f}x, " if compression else "") +
        ", ".join(f"{t} drop {drop[t]:.4f}" for t in tasks) + f" ({report['seconds']} s)")
    return RCSearchResult(dict(chosen), table, graph, report)
