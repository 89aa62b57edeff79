"""In-memory form of a merged model: exactly what an `.emm` file holds (docs/FORMAT.md).

The merge pipeline builds a `MergedGraph`; `edgemerge.emm` writes and reads it; the C runtime executes
the file. Value ids follow the format: values 0..len(inputs)-1 are the graph inputs, node i produces
value len(inputs)+i.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from edgemerge.emm.codebook import decode_codebook, decode_depthwise
from edgemerge.emm.constants import NODE_FLAG_INT8_ACT, NODE_FLAG_INT8_TABLES, NONE, Act, DType, Keys, Op, index_bits

Shape3 = tuple[int, int, int]


@dataclass
class Tensor:
    """A float32 array (weights, biases, codebooks) or an index map (unsigned ints packed at `bits`)."""
    name: str
    array: np.ndarray
    dtype: DType = DType.F32
    bits: int = 32

    @staticmethod
    def f32(name: str, array: np.ndarray) -> "Tensor":
        return Tensor(name, np.ascontiguousarray(array, dtype=np.float32), DType.F32, 32)

    @staticmethod
    def index(name: str, array: np.ndarray, codewords: int) -> "Tensor":
        return Tensor(name, np.ascontiguousarray(array, dtype=np.uint32), DType.IDX, index_bits(codewords))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.array.shape)


@dataclass
class Node:
    """One graph node (docs/FORMAT.md "struct em_node"). `input` is input 0 (the only input of a single-input
    node, which is what most code reads); multi-input ops (ADD, CONCAT, MUL; format v2) keep inputs 1.. in
    `extra_inputs`, and `inputs` is all of them in order."""
    name: str
    op: Op
    input: int                      # value id of input 0
    out_shape: Shape3
    activation: Act = Act.NONE
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)   # top, left, bottom, right
    seg_len: int = 0                # r (LUT ops)
    codewords: int = 0              # C (LUT ops)
    weight: int = NONE              # tensor id (weights, or codebook for LUT ops)
    index: int = NONE               # tensor id of the index map (LUT ops)
    bias: int = NONE                # tensor id
    sources: tuple[str, ...] = ()   # "task:layer" names this node was built from
    # "task:layer" of the source model's layer whose output equals this node's output (after folded
    # BatchNorm and fused activations); calibration compares the two. Empty where there is none.
    match_output: str = ""
    # NODE_FLAG_* bits (format.py): NODE_FLAG_INT8_TABLES on a LUT op with C = 16 makes the runtime quantise
    # its table to int8 and sum in integers (docs/FORMAT.md "int8 tables").
    flags: int = 0
    # NODE_FLAG_INT8_ACT: the input scale sx (float32; FORMAT.md "int8 activations", record word 21); 0 without it
    input_scale: float = 0.0
    extra_inputs: tuple[int, ...] = ()  # value ids of inputs 1.. (format v2 "extra-input list")

    @property
    def inputs(self) -> tuple[int, ...]:
        """Every value id the node reads, input 0 first."""
        return (self.input, *self.extra_inputs)

    @inputs.setter
    def inputs(self, values: tuple[int, ...] | list[int]) -> None:
        values = tuple(int(v) for v in values)
        if not values:
            raise ValueError(f"node {self.name!r}: a node reads at least one value")
        self.input, self.extra_inputs = values[0], values[1:]

    @property
    def int8_tables(self) -> bool:
        return bool(self.flags & NODE_FLAG_INT8_TABLES)

    @property
    def int8_act(self) -> bool:
        return bool(self.flags & NODE_FLAG_INT8_ACT)


@dataclass
class Task:
    name: str
    input: int                      # graph input index
    output: int                     # value id of the logits
    classes: int


@dataclass
class MergedGraph:
    inputs: list[Shape3] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    tensors: list[Tensor] = field(default_factory=list)
    tasks: list[Task] = field(default_factory=list)
    metadata: dict[str, int | float | str] = field(default_factory=dict)

    # -- building -------------------------------------------------------------------------------
    def add_input(self, shape: Shape3) -> int:
        self.inputs.append(tuple(int(d) for d in shape))
        return len(self.inputs) - 1

    def add_tensor(self, tensor: Tensor) -> int:
        self.tensors.append(tensor)
        return len(self.tensors) - 1

    def add_node(self, node: Node) -> int:
        """Appends a node and returns the value id it produces."""
        self.nodes.append(node)
        return len(self.inputs) + len(self.nodes) - 1

    # -- queries --------------------------------------------------------------------------------
    def value_shape(self, value: int) -> Shape3:
        if value < len(self.inputs):
            return self.inputs[value]
        return self.nodes[value - len(self.inputs)].out_shape

    def node_of_value(self, value: int) -> Node | None:
        return None if value < len(self.inputs) else self.nodes[value - len(self.inputs)]

    def task(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(f"no task named {name!r}; tasks: {', '.join(t.name for t in self.tasks)}")

    def task_input_shape(self, name: str) -> Shape3:
        return self.inputs[self.task(name).input]

    def nodes_for(self, task_name: str) -> list[int]:
        """Indices of the nodes a task needs, in execution order."""
        needed: set[int] = set()
        stack = [self.task(task_name).output]
        while stack:
            v = stack.pop()
            if v < len(self.inputs):
                continue
            i = v - len(self.inputs)
            if i not in needed:
                needed.add(i)
                stack.extend(self.nodes[i].inputs)
        return sorted(needed)

    def graph_inputs_of(self, value: int) -> set[int]:
        """The graph inputs a value is computed from, through every input of every node."""
        found: set[int] = set()
        seen: set[int] = set()
        stack = [value]
        while stack:
            v = stack.pop()
            if v in seen:
                continue
            seen.add(v)
            if v < len(self.inputs):
                found.add(v)
            else:
                stack.extend(self.nodes[v - len(self.inputs)].inputs)
        return found

    @property
    def format_version(self) -> int:
        """The version the writer gives this graph: 1 while every node reads one value (the bytes edgemerge
        wrote before v2), 2 once a node has several inputs (docs/FORMAT.md "Version 1 files")."""
        return 2 if any(n.extra_inputs for n in self.nodes) else 1

    def name_metadata(self) -> dict[str, str]:
        """The META keys that name nodes and tensors (docs/FORMAT.md "Metadata keys"), from the graph itself:
        written by the writer for every file, and by merge into the in-memory graph."""
        meta: dict[str, str] = {}
        for i, node in enumerate(self.nodes):
            meta[Keys.Node.NAME.format(i=i)] = node.name
            if node.sources:
                meta[Keys.Node.SOURCES.format(i=i)] = ",".join(node.sources)
            if node.match_output:
                meta[Keys.Node.MATCH_OUTPUT.format(i=i)] = node.match_output
        for i, tensor in enumerate(self.tensors):
            meta[Keys.Tensor.NAME.format(i=i)] = tensor.name
        return meta

    def copy(self) -> "MergedGraph":
        return dataclasses.replace(
            self, inputs=list(self.inputs), nodes=[dataclasses.replace(n) for n in self.nodes],
            tensors=[dataclasses.replace(t, array=t.array.copy()) for t in self.tensors],
            tasks=[dataclasses.replace(t) for t in self.tasks], metadata=dict(self.metadata))


def decoded_weights(graph: MergedGraph, node: Node) -> np.ndarray:
    """The ordinary weight tensor a node computes with: for LUT ops, rebuilt from codebook and index map
    ([KH, KW, Cin, Cout] for LUT_CONV2D, [In, Out] for LUT_DENSE; `codebook.decode_codebook`; [KH, KW, Cin, M]
    for LUT_DEPTHWISE_CONV2D, `codebook.decode_depthwise`); for other ops,
    the stored weights."""
    if node.op == Op.LUT_DEPTHWISE_CONV2D:
        return decode_depthwise(graph.tensors[node.weight].array, graph.tensors[node.index].array, node.kernel)
    if node.op not in (Op.LUT_CONV2D, Op.LUT_DENSE):
        return graph.tensors[node.weight].array
    in_shape = graph.value_shape(node.input)
    depth = int(np.prod(in_shape)) if node.op == Op.LUT_DENSE else in_shape[2]
    return decode_codebook(graph.tensors[node.weight].array, graph.tensors[node.index].array, depth, node.seg_len,
                           dense=node.op == Op.LUT_DENSE)
