"""Reading a `.tflite` flatbuffer for the TFLite importer (tflite_import): subgraph 0 through the schema's
generated object API that ships inside `ai-edge-litert` (`ai_edge_litert.schema_py_generated`; only
`flatbuffers` is needed, no TensorFlow), with every tensor and buffer index bounds-checked once so that a
crafted file gives one clear `ModelFormatError`, the operator names, the constant tensors' data (float16
included), and readable layer names made from the converter's tensor names."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgemerge.errors import ModelFormatError
from edgemerge.text import printable


def schema_module():
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError as e:   # pragma: no cover - ai-edge-litert is a dependency
        raise ModelFormatError(f"reading .tflite files needs the ai-edge-litert package ({e})") from None
    return schema_py_generated


def enum_names(enum_class: Any) -> dict[int, str]:
    return {v: k for k, v in vars(enum_class).items() if not k.startswith("_") and isinstance(v, int)}


_SECONDARY_LEAF = re.compile(r"(relu|batchnorm|batch_norm|fusedbatchnorm|biasadd|add|mul)", re.IGNORECASE)


def scope_name(tensor_name: str) -> str:
    """The layer scope of a converter tensor name, or "" when it has none. Names of fused operators join
    several names with ';' ("seq/re_lu/Relu6;seq/conv2d/convolution"): the part naming the main computation
    (not an activation, BatchNorm or bias add) wins, so a conv fused with its ReLU is named after the conv."""
    parts = [[p for p in part.split("/") if p] for part in tensor_name.split(";")]
    parts = [path for path in parts if len(path) >= 2]
    if not parts:
        return ""
    main = [path for path in parts if not _SECONDARY_LEAF.match(path[-1])]
    path = (main or parts)[0]
    candidate = path[-2] if len(path) >= 3 else path[0]     # model scope / layer / op, or layer / op
    return re.sub(r"[^A-Za-z0-9_.-]", "_", candidate)


def readable_name(tensor_names: list[str], op_name: str, index: int) -> str:
    """A short layer name: the layer scope of the first of `tensor_names` that has one (the output tensor,
    then the weights), else "<op>_<index>"."""
    for name in tensor_names:
        scope = scope_name(name)
        if scope:
            return scope
    return f"{op_name.lower()}_{index}"


@dataclass
class Tensor:
    index: int
    name: str
    type: int
    shape: tuple[int, ...]


class TFLiteGraph:
    """The parts of subgraph 0 the importer needs, with decoded names and constant data."""

    def __init__(self, path: Path, data: bytes):
        schema = schema_module()
        self.path, self.file_name, self.data = path, path.name, data
        if len(data) < 8 or not schema.Model.ModelBufferHasIdentifier(data, 0):
            raise ModelFormatError(f"{self.file_name}: not a TFLite flatbuffer (no 'TFL3' identifier)")
        try:
            self.model = schema.ModelT.InitFromPackedBuf(data, 0)
        except Exception as e:       # flatbuffers raises struct.error, IndexError, ... on damaged input
            raise ModelFormatError(f"{self.file_name}: cannot parse the TFLite flatbuffer "
                                   f"({type(e).__name__}: {e})") from None
        if not self.model.subgraphs:
            raise ModelFormatError(f"{self.file_name}: the model has no subgraph")
        self.graph = self.model.subgraphs[0]
        self.type_names = enum_names(schema.TensorType)
        self.builtin_names = enum_names(schema.BuiltinOperator)
        self.schema = schema
        self.tensors = [Tensor(i, (t.name or b"").decode("utf-8", "replace"), int(t.type),
                                tuple(int(d) for d in (t.shape if t.shape is not None else ())))
                        for i, t in enumerate(self.graph.tensors or [])]
        self.ops = list(self.graph.operators or [])
        self._check_indices()
        self.op_names = [self._op_name(op) for op in self.ops]
        self.producer: dict[int, int] = {}
        self.consumers: dict[int, list[tuple[int, int]]] = {}
        for i, op in enumerate(self.ops):
            for t in self._indices(op.outputs):
                self.producer[t] = i
            for pos, t in enumerate(self._indices(op.inputs)):
                if t >= 0:
                    self.consumers.setdefault(t, []).append((i, pos))

    def _check_indices(self) -> None:
        """Every tensor index the file holds (graph inputs/outputs, operator inputs/outputs, -1 = an omitted
        optional input) and every buffer index is bounds-checked once here, so the rest of the importer indexes
        lists without a check (a crafted file must give one clear error, never an IndexError)."""
        n = len(self.tensors)

        def check(values: Any, what: str, optional: bool = False) -> None:
            for v in self._indices(values):
                if not (0 <= v < n or (optional and v == -1)):
                    raise ModelFormatError(f"{printable(self.file_name)}: {what} refers to tensor {v}, but subgraph 0 "
                                           f"has {n} tensors")

        check(self.graph.inputs, "the graph input list")
        check(self.graph.outputs, "the graph output list")
        for i, op in enumerate(self.ops):
            check(op.inputs, f"op {i}'s input list", optional=True)
            check(op.outputs, f"op {i}'s output list")
        n_buffers = len(self.model.buffers or [])
        for i, t in enumerate(self.graph.tensors or []):
            if not 0 <= int(t.buffer) < max(1, n_buffers):
                raise ModelFormatError(f"{printable(self.file_name)}: tensor {i} refers to buffer {t.buffer}, but the "
                                       f"file has {n_buffers} buffers")

    @staticmethod
    def _indices(values: Any) -> list[int]:
        return [int(v) for v in (values if values is not None else ())]

    def _op_name(self, op: Any) -> str:
        codes = self.model.operatorCodes or []
        if not 0 <= op.opcodeIndex < len(codes):
            raise ModelFormatError(f"{self.file_name}: operator code index {op.opcodeIndex} out of range")
        code = codes[op.opcodeIndex]
        # Newer files keep the code in builtinCode, older ones in deprecatedBuiltinCode: the larger is right.
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        name = self.builtin_names.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM":
            return f"CUSTOM({(code.customCode or b'').decode('utf-8', 'replace')})"
        return name

    def inputs(self, op_index: int) -> list[int]:
        return self._indices(self.ops[op_index].inputs)

    def outputs(self, op_index: int) -> list[int]:
        return self._indices(self.ops[op_index].outputs)

    def type_name(self, tensor: int) -> str:
        return self.type_names.get(self.tensors[tensor].type, str(self.tensors[tensor].type))

    def raw_constant(self, tensor: int) -> np.ndarray | None:
        """The data of a constant tensor (buffer-backed), or None when the tensor has no data."""
        t = self.graph.tensors[tensor]
        buffers = self.model.buffers or []
        if not 0 < t.buffer < len(buffers):
            return None
        buffer = buffers[t.buffer]
        if buffer.data is not None and len(buffer.data):
            raw = np.asarray(buffer.data, dtype=np.uint8).tobytes()
        elif buffer.offset > 1 and buffer.size > 0:       # large models keep tensor data after the flatbuffer
            raw = self.data[buffer.offset:buffer.offset + buffer.size]
            if len(raw) != buffer.size:
                raise ModelFormatError(f"{self.file_name}: tensor '{self.tensors[tensor].name}' data is truncated")
        else:
            return None
        dtype = {"FLOAT32": "<f4", "FLOAT16": "<f2", "INT32": "<i4", "INT64": "<i8", "INT8": "i1",
                 "UINT8": "u1", "INT16": "<i2"}.get(self.type_name(tensor))
        if dtype is None:
            return None
        itemsize = np.dtype(dtype).itemsize
        if len(raw) % itemsize:
            raise ModelFormatError(f"{printable(self.file_name)}: tensor '{printable(self.tensors[tensor].name)}' "
                                   f"({self.type_name(tensor)}) has a buffer of {len(raw)} bytes, not a multiple of "
                                   f"{itemsize}")
        values = np.frombuffer(raw, dtype=dtype)
        shape = self.tensors[tensor].shape
        if any(d < 0 for d in shape):
            raise ModelFormatError(f"{printable(self.file_name)}: constant tensor "
                                   f"'{printable(self.tensors[tensor].name)}' has a negative dimension {list(shape)}")
        if values.size != int(np.prod(shape, dtype=np.int64)):
            raise ModelFormatError(f"{self.file_name}: tensor '{self.tensors[tensor].name}' holds {values.size} "
                                   f"values, its shape {list(shape)} needs {int(np.prod(shape))}")
        return values.reshape(shape)
