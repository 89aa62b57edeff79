"""The targets of the L1 terms: the original models, with extra outputs at the layers that merged nodes match.

`orig_n` is the output of the layer named by `node.match_output` ("task:layer") in that task's original
model, computed on the same batch (a Keras file is run by Keras; a .tflite file is rebuilt in Keras from what
the importer read, `keras_reference.build_source_keras`). `scale_n` is the mean |orig_n| over (up to)
`SCALE_SAMPLES` calibration samples, so each L1 term is a relative mismatch whatever a model's magnitudes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from edgemerge.emm.graph import MergedGraph
from edgemerge.errors import EdgemergeError
from edgemerge.training.tf_form import LUT_OPS

SCALE_SAMPLES = 512              # samples used to measure each original activation's mean |value|


@dataclass
class Targets:
    """For one task: the original model with extra outputs at the matched layers."""
    model: object                       # keras.Model: x -> [matched layer outputs..., final output]
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
            pairs = []
            for i in graph.nodes_for(task):
                node = graph.nodes[i]
                if node.op not in LUT_OPS:
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
        targets[task] = Targets(model, nodes, layers)
    return targets, skipped


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
