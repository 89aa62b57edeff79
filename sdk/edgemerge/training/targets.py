"""The targets of the L1 terms: the original models, with extra outputs at the layers that merged nodes match.

`orig_n` is the output of the layer named by `node.match_output` ("task:layer") in that task's original
model, computed on the same batch (a Keras file is run by Keras; a .tflite file is rebuilt in Keras from what
the importer read, `keras_reference.build_source_keras`; an .onnx file is run by ONNX Runtime with the matched
tensors added as graph outputs, `OnnxTargetModel`, after a check that they are what the importer matched). `scale_n` is the mean |orig_n| over (up to)
`SCALE_SAMPLES` calibration samples, so each L1 term is a relative mismatch whatever a model's magnitudes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from edgemerge.emm.constants import Op
from edgemerge.emm.graph import MergedGraph
from edgemerge.errors import EdgemergeError
from edgemerge.training.tf_form import LUT_OPS

SCALE_SAMPLES = 512              # samples used to measure each original activation's mean |value|


@dataclass
class Targets:
    """For one task: the original model with extra outputs at the matched layers."""
    model: object                       # keras.Model (or OnnxTargetModel): x -> [matched outputs..., final output]
    nodes: list[int]                    # node index of each matched output (same order)
    layers: list[str]
    scales: list[float] = field(default_factory=list)


_KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


def load_original(path: Path) -> tuple[object, Callable[[str], object]]:
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


class OnnxTargetModel:
    """An ONNX original in ONNX Runtime (CPU, optimisations on) with `tensors` exposed as extra outputs: called
    like a Keras model on an NHWC batch, it returns [each tensor in NHWC, final logits]. Inside a tf.function
    (the training step) it runs through tf.numpy_function; the targets are constants, no gradient flows."""

    def __init__(self, path: Path, tensors: list[str]):
        import onnx
        import onnxruntime as ort

        model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
        known = {v.name: v for v in list(model.graph.value_info) + list(model.graph.output)}
        final = model.graph.output[0].name
        del model.graph.output[:]
        for name in tensors:
            if name not in known:
                raise KeyError(name)
            model.graph.output.append(known[name])
        model.graph.output.append(known[final])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(model.SerializeToString(), sess_options=opts,
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.tensors = list(tensors)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        nchw = np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2))
        outs = self.session.run(None, {self.input_name: nchw})
        return [np.ascontiguousarray(o.transpose(0, 2, 3, 1)) if o.ndim == 4 else o for o in outs]

    def __call__(self, x, training: bool = False):
        if isinstance(x, np.ndarray):
            return self.run(x)
        import tensorflow as tf

        outs = tf.numpy_function(lambda a: [o.astype(np.float32) for o in self.run(a)], [x],
                                 [tf.float32] * (len(self.tensors) + 1), stateful=False)
        return list(outs)


def _onnx_targets(path: Path, graph: MergedGraph, task: str, pairs: list[tuple[int, str]]) -> Targets:
    """Targets of an ONNX original, the matching checked before training: each exposed tensor has the node's
    shape, and on two seeded samples equals (1e-3 relative) the imported layer whose match_output it is."""
    from edgemerge.executors.numpy_exec import LAYER_OPS, activate
    from edgemerge.importers import load_source_model
    from edgemerge.importers.source_model import MODEL_INPUT

    source = load_source_model(path)
    want_shape = tuple(graph.task_input_shape(task))
    if tuple(source.input_shape) != want_shape:
        raise EdgemergeError(f"original model {path} expects samples of shape {tuple(source.input_shape)}, "
                             f"task {task!r} of the merged model reads {want_shape}")
    try:
        model = OnnxTargetModel(path, [layer for _, layer in pairs])
    except KeyError as e:
        node = graph.nodes[next(i for i, layer in pairs if layer == e.args[0])]
        raise EdgemergeError(f"node {node.name}: match_output {node.match_output!r} names no tensor of {path}") from None
    x = np.random.default_rng(0).random((2, *want_shape), dtype=np.float32)
    outs = model.run(x)
    values: dict[str, np.ndarray] = {MODEL_INPUT: x.astype(np.float64)}
    by_tensor: dict[str, np.ndarray] = {}
    for i, layer in enumerate(source.layers):
        y = activate(LAYER_OPS[layer.kind](layer, [values[n] for n in source.inputs_of(i)]), layer.activation)
        values[layer.name] = y
        if layer.match_output:
            by_tensor[layer.match_output] = y
    for (i, name), out in zip(pairs, outs):
        node = graph.nodes[i]
        if int(np.prod(out.shape[1:])) != int(np.prod(node.out_shape)):
            raise EdgemergeError(f"node {node.name}: tensor {name} of {path} has shape {tuple(out.shape[1:])} "
                                 f"(NHWC), the node's is {node.out_shape}")
        mine = by_tensor.get(name)
        if mine is None or mine.size != out.size or \
                np.max(np.abs(mine.reshape(-1) - out.reshape(-1))) > 1e-3 * max(np.max(np.abs(out)), 1e-6):
            raise EdgemergeError(f"node {node.name}: tensor {name} of {path} in ONNX Runtime does not match the "
                                 "imported layer's output (numeric spot check); the L1 target would be wrong")
    return Targets(model, [i for i, _ in pairs], [name for _, name in pairs])


def load_targets(graph: MergedGraph, originals: Mapping[str, str | os.PathLike], tasks: list[str],
                  l1_targets: Mapping[str, list[tuple[int, str]]] | None = None
                  ) -> tuple[dict[str, Targets], dict[str, list[str]]]:
    """Per task, the original model with extra outputs at the layers the L1 terms compare with: by default
    every LUT node of the task whose match_output names one of the task's layers; with `l1_targets`, exactly
    the given (node index, original layer name) pairs of each task listed there (any op, shared nodes too)."""
    import keras

    targets, skipped = {}, {}
    for task in tasks:
        path = Path(originals[task])
        if path.suffix.lower() == ".onnx":
            skipped[task] = []
            pairs = [(i, layer) for i, layer in (l1_targets or {}).get(task, [])] if l1_targets and task in l1_targets \
                else _default_pairs(graph, task, skipped[task])
            targets[task] = _onnx_targets(path, graph, task, pairs)
            continue
        orig, layer_output = load_original(path)
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
            pairs = _default_pairs(graph, task, skipped[task])
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
        targets[task] = Targets(model, nodes, layers)
    return targets, skipped


def _default_pairs(graph: MergedGraph, task: str, skipped: list[str]) -> list[tuple[int, str]]:
    """(node index, original layer name) of every LUT node (clustered depthwise included) of `task` whose
    match_output names a layer of it."""
    pairs = []
    for i in graph.nodes_for(task):
        node = graph.nodes[i]
        if node.op not in LUT_OPS and node.op != Op.LUT_DEPTHWISE_CONV2D:
            continue
        owner, _, layer_name = node.match_output.partition(":")
        if not node.match_output or owner != task or not layer_name:
            skipped.append(node.name)
            continue
        pairs.append((i, layer_name))
    return pairs


def target_outputs(targets: Targets, x) -> list:
    out = targets.model(x, training=False)
    return list(out) if isinstance(out, (list, tuple)) else [out]


def measure_scales(targets: Targets, x: np.ndarray) -> None:
    outs = target_outputs(targets, x[:SCALE_SAMPLES])[:-1]
    scales = []
    for o in outs:
        s = float(np.mean(np.abs(np.asarray(o))))
        scales.append(s if s > 1e-8 else 1.0)            # a dead layer: compare absolute values
    targets.scales = scales
