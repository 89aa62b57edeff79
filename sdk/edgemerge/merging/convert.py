"""One imported model as a `MergedGraph` with its exact float weights (no codebooks): what `edgemerge convert`
writes. It is the importer's fidelity check (the C runtime on the converted file must give the framework's
logits) and a way to run one model in the runtime without merging.

Every source layer becomes one node (docs/FORMAT.md): conv -> CONV2D, depthwise -> DEPTHWISE_CONV2D,
dense -> DENSE, max_pool / avg_pool / global_avg_pool -> MAX_POOL / AVG_POOL / GLOBAL_AVG_POOL, flatten ->
RESHAPE, activation -> ACTIVATION, add / concat / mul / pad -> ADD / CONCAT / MUL / PAD, reading every input
(`Node.inputs`, format v2 when a node has several). Layer i of the model produces value 1 + i (one input).
"""
from __future__ import annotations

import re

import numpy as np

from edgemerge.emm.constants import NONE, TASK_NAME_BYTES, Op
from edgemerge.emm.graph import MergedGraph, Node, Task, Tensor
from edgemerge.errors import EdgemergeError
from edgemerge.importers.source_model import MODEL_INPUT, SourceLayer, SourceModel
from edgemerge.merging.merge import source_metadata

# source-layer kind -> op (weighted kinds and joins included; "conv" is the float CONV2D here)
KIND_OPS: dict[str, Op] = {
    "conv": Op.CONV2D, "depthwise": Op.DEPTHWISE_CONV2D, "dense": Op.DENSE, "max_pool": Op.MAX_POOL,
    "avg_pool": Op.AVG_POOL, "global_avg_pool": Op.GLOBAL_AVG_POOL, "flatten": Op.RESHAPE,
    "activation": Op.ACTIVATION, "add": Op.ADD, "concat": Op.CONCAT, "mul": Op.MUL, "pad": Op.PAD,
}
# kinds whose kernel, stride and pads the node carries
_WINDOW_KINDS = ("conv", "depthwise", "max_pool", "avg_pool")
_TASK_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def default_task_name(model: SourceModel) -> str:
    """The model's name made a valid task name ([A-Za-z0-9_.-], under TASK_NAME_BYTES bytes)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", model.name)[:TASK_NAME_BYTES - 1]
    return name or "model"


def check_task_name(task: str) -> None:
    """Raises EdgemergeError unless `task` is a valid task name (checked before any model is loaded)."""
    if not _TASK_NAME.fullmatch(task) or len(task.encode()) >= TASK_NAME_BYTES:
        from edgemerge.text import printable
        raise EdgemergeError(f"task name {printable(task)!r}: 1..{TASK_NAME_BYTES - 1} characters of "
                             "[A-Za-z0-9_.-] required")


def _node(graph: MergedGraph, task: str, layer: SourceLayer, inputs: tuple[int, ...]) -> Node:
    op = KIND_OPS.get(layer.kind)
    if op is None:
        raise EdgemergeError(f"{task}:{layer.name}: layer kind {layer.kind!r} has no format op")
    prefix = f"{task}/{layer.name}"
    node = Node(name=prefix, op=op, input=inputs[0], out_shape=tuple(layer.out_shape), activation=layer.activation,
                sources=(f"{task}:{layer.name}",),
                match_output=f"{task}:{layer.match_output}" if layer.match_output else "")
    node.extra_inputs = tuple(inputs[1:])
    if layer.kind in _WINDOW_KINDS:
        node.kernel, node.stride, node.pads = tuple(layer.kernel), tuple(layer.stride), tuple(layer.pads)
    elif layer.kind == "pad":
        node.pads = tuple(layer.pads)
    if layer.weights is not None:
        node.weight = graph.add_tensor(Tensor.f32(f"{prefix}/weights", layer.weights))
        node.bias = (graph.add_tensor(Tensor.f32(f"{prefix}/bias", layer.bias)) if layer.bias is not None
                     else NONE)
    return node


def convert_model(model: SourceModel, task: str | None = None) -> MergedGraph:
    """`model` as a one-task graph with exact float32 weights; `task` defaults to the model's name."""
    task = task or default_task_name(model)
    check_task_name(task)
    if not model.layers:
        raise EdgemergeError(f"model {model.name!r} has no layers")
    try:
        model.check_topology()
    except ValueError as e:
        raise EdgemergeError(str(e)) from None
    graph = MergedGraph()
    value_of = {MODEL_INPUT: graph.add_input(model.input_shape)}
    for i, layer in enumerate(model.layers):
        inputs = tuple(value_of[name] for name in model.inputs_of(i))
        value_of[layer.name] = graph.add_node(_node(graph, task, layer, inputs))
    output = value_of[model.layers[-1].name]
    graph.tasks.append(Task(task, 0, output, int(np.prod(graph.value_shape(output)))))
    graph.metadata.update(source_metadata({task: (model.path.name, model.param_bytes)}))
    graph.metadata.update(graph.name_metadata())
    return graph


__all__ = ["KIND_OPS", "check_task_name", "convert_model", "default_task_name"]
