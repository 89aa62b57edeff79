"""Writer of `.emm` files (docs/FORMAT.md is the spec; this module follows it).

The writer is a small state machine (META → TASKS → GRAPH → TENSORS, then `finish`), refuses steps out of
order, and writes the file atomically (temporary name in the same folder, then rename).
"""
from __future__ import annotations

import os
import struct
import zlib

import numpy as np

from edgemerge.emm import constants as F
from edgemerge.emm.files import atomic_write_bytes
from edgemerge.emm.graph import MergedGraph, Node, Task, Tensor
from edgemerge.emm.layout import (
    GRAPH_HEADER,
    GRAPH_HEADER_V1,
    HEADER_STRUCT,
    INPUT_RECORD,
    KEY_CHARS,
    NAME_CHARS,
    NODE_RECORD,
    SECTION_RECORD,
    TASK_RECORD,
    TENSOR_RECORD,
    input_scale_problem,
    node_flags_problem,
    node_inputs_problem,
    pack_indices,
    tensor_nbytes,
)


def _scale_word(node) -> int:
    """Record word 21 (FORMAT.md "int8 activations"): the input scale's float32 bits with INT8_ACT, else 0."""
    if not node.flags & F.NODE_FLAG_INT8_ACT:
        return 0
    return struct.unpack("<I", struct.pack("<f", float(node.input_scale)))[0]

class EmmWriter:
    """Serialises one model section by section. Steps must come in the order of the file."""

    _STEPS = ("meta", "tasks", "graph", "tensors", "finished")

    def __init__(self) -> None:
        self.version = F.VERSION  # write_graph lowers it to 1 for a graph without multi-input nodes
        self._step = 0
        self._payloads: list[tuple[int, bytes]] = []

    def _advance(self, step: str) -> None:
        expected = self._STEPS[self._step]
        if step != expected:
            raise RuntimeError(f"EmmWriter: cannot write {step} now, the next step is {expected}")
        self._step += 1

    def write_meta(self, metadata: dict[str, int | float | str]) -> None:
        self._advance("meta")
        if len(metadata) > F.MAX_META_ENTRIES:
            raise ValueError(f"{len(metadata)} metadata entries exceed the limit {F.MAX_META_ENTRIES}")
        out = bytearray(struct.pack("<I", len(metadata)))
        for key, value in metadata.items():
            raw_key = key.encode("utf-8")
            if not 1 <= len(raw_key) <= F.MAX_KEY_BYTES or not set(raw_key) <= KEY_CHARS:
                raise ValueError(f"metadata key {key!r}: 1..{F.MAX_KEY_BYTES} bytes of [a-z0-9_.-] required")
            out += struct.pack("<I", len(raw_key)) + raw_key
            if isinstance(value, bool) or isinstance(value, (int, np.integer)):
                value = int(value)
                if value >= 0:
                    out += struct.pack("<IQ", F.MetaType.U64, value)
                else:
                    out += struct.pack("<Iq", F.MetaType.I64, value)
            elif isinstance(value, (float, np.floating)):
                out += struct.pack("<Id", F.MetaType.F64, float(value))
            elif isinstance(value, str):
                raw = value.encode("utf-8")
                if len(raw) > F.MAX_STRING_BYTES:
                    raise ValueError(f"metadata {key!r}: string longer than {F.MAX_STRING_BYTES} bytes")
                out += struct.pack("<II", F.MetaType.STRING, len(raw)) + raw
            else:
                raise TypeError(f"metadata {key!r}: unsupported value type {type(value).__name__}")
        self._payloads.append((F.Section.META, bytes(out)))

    def write_tasks(self, tasks: list[Task]) -> None:
        self._advance("tasks")
        if not 1 <= len(tasks) <= F.MAX_TASKS:
            raise ValueError(f"a model needs 1..{F.MAX_TASKS} tasks, got {len(tasks)}")
        out = bytearray(struct.pack("<I", len(tasks)))
        for task in tasks:
            raw = task.name.encode("utf-8")
            if not 1 <= len(raw) < F.TASK_NAME_BYTES or not set(raw) <= NAME_CHARS:
                raise ValueError(f"task name {task.name!r}: 1..31 characters of [A-Za-z0-9_.-] required")
            out += TASK_RECORD.pack(raw, task.input, task.output, task.classes, 0)
        self._payloads.append((F.Section.TASKS, bytes(out)))

    def write_graph(self, inputs: list[tuple[int, int, int]], nodes: list[Node]) -> None:
        """GRAPH in version 1 while every node reads one value (the bytes edgemerge wrote before v2), else in
        version 2 with the extra-input list (docs/FORMAT.md "GRAPH", "Version 1 files")."""
        self._advance("graph")
        self.version = 2 if any(n.extra_inputs for n in nodes) else 1
        extra = [v for n in nodes for v in n.extra_inputs]
        if self.version == 1:
            out = bytearray(GRAPH_HEADER_V1.pack(len(inputs), len(nodes)))
        else:
            out = bytearray(GRAPH_HEADER.pack(len(inputs), len(nodes), len(extra), 0))
        for h, w, c in inputs:
            out += INPUT_RECORD.pack(h, w, c, 0)
        shapes = [tuple(s) for s in inputs]
        for i, n in enumerate(nodes):
            problem = node_flags_problem(n.op, n.codewords, n.flags) or \
                (input_scale_problem(n.input_scale) if n.flags & F.NODE_FLAG_INT8_ACT else "") or \
                node_inputs_problem(n, len(inputs) + i, shapes)
            if problem:
                raise ValueError(f"node {i} ({n.name}): {problem}")
            shapes.append(tuple(n.out_shape))
            input_count = len(n.inputs) if self.version >= 2 else 0  # v1: the reserved word
            out += NODE_RECORD.pack(int(n.op), n.input, int(n.activation), int(n.flags), *n.out_shape, *n.kernel, *n.stride,
                              *n.pads, n.seg_len, n.codewords, n.weight, n.index, n.bias, input_count,
                              _scale_word(n), 0, 0)
        out += struct.pack(f"<{len(extra)}I", *extra)
        self._payloads.append((F.Section.GRAPH, bytes(out)))

    def write_tensors(self, tensors: list[Tensor]) -> None:
        self._advance("tensors")
        table = bytearray(struct.pack("<I", len(tensors)))
        data = bytearray()
        for t in tensors:
            if not 1 <= len(t.shape) <= 4:
                raise ValueError(f"tensor {t.name!r}: rank {len(t.shape)} is outside 1..4")
            data += b"\0" * (F.align(len(data)) - len(data))
            offset = len(data)
            if t.dtype == F.DType.F32:
                payload = np.ascontiguousarray(t.array, dtype="<f4").tobytes()
            else:
                payload = pack_indices(t.array, t.bits)
            assert len(payload) == tensor_nbytes(t)
            data += payload
            dims = list(t.shape) + [0] * (4 - len(t.shape))
            table += TENSOR_RECORD.pack(int(t.dtype), len(t.shape), *dims, t.bits, 0, offset, len(payload))
        self._payloads.append((F.Section.TENSORS, bytes(table)))
        self._payloads.append((F.Section.DATA, bytes(data)))

    def finish(self) -> bytes:
        self._advance("finished")
        count = len(self._payloads)
        table_end = F.HEADER_BYTES + F.SECTION_ENTRY_BYTES * count
        body = bytearray()
        entries = bytearray()
        cursor = F.align(table_end)
        for i, (kind, payload) in enumerate(self._payloads):
            entries += SECTION_RECORD.pack(kind, 0, cursor, len(payload), zlib.crc32(payload), 0)
            body += payload
            end = cursor + len(payload)
            if i + 1 < count:  # the file ends exactly at the end of the last section
                pad = F.align(end) - end
                body += b"\0" * pad
                end += pad
            cursor = end
        file_bytes = cursor
        if file_bytes > F.MAX_FILE_BYTES:
            raise ValueError(f"the model needs {file_bytes} bytes, more than MAX_FILE_BYTES {F.MAX_FILE_BYTES}")
        header_wo_crc = HEADER_STRUCT.pack(F.MAGIC, self.version, F.SENTINEL_U32, F.SENTINEL_F32, F.HEADER_BYTES,
                                     F.ALIGNMENT, count, 0, file_bytes, F.HEADER_BYTES,
                                     zlib.crc32(entries), 0, 0, 0)[:60]
        header = header_wo_crc + struct.pack("<I", zlib.crc32(header_wo_crc))
        prefix = header + entries
        prefix += b"\0" * (F.align(table_end) - len(prefix))
        blob = bytes(prefix + body)
        assert len(blob) == file_bytes
        return blob


def to_bytes(graph: MergedGraph) -> bytes:
    metadata = dict(graph.metadata)
    for key, value in graph.name_metadata().items():
        metadata.setdefault(key, value)
    writer = EmmWriter()
    writer.write_meta(metadata)
    writer.write_tasks(graph.tasks)
    writer.write_graph(graph.inputs, graph.nodes)
    writer.write_tensors(graph.tensors)
    return writer.finish()


def write_emm(graph: MergedGraph, path: str | os.PathLike) -> int:
    """Writes `graph` to `path` atomically; returns the file size in bytes."""
    data = to_bytes(graph)
    atomic_write_bytes(path, data)
    return len(data)
