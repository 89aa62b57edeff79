"""Reader of `.emm` files (docs/FORMAT.md is the spec): checks every field it reads and raises
`EmmFormatError` naming the section, record and field."""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

from edgemerge.emm import constants as F
from edgemerge.emm.constants import Keys
from edgemerge.emm.graph import MergedGraph, Node, Task, Tensor
from edgemerge.emm.layout import (
    GRAPH_HEADER,
    GRAPH_HEADER_V1,
    HEADER_STRUCT,
    INPUT_RECORD,
    KEY_CHARS,
    NAME_CHARS,
    NODE_RECORD,
    REQUIRED_SECTIONS,
    SECTION_RECORD,
    TASK_RECORD,
    TENSOR_RECORD,
    input_scale_problem,
    multi_input_out_shape,
    node_flags_problem,
    node_inputs_problem,
    unpack_indices,
)
from edgemerge.errors import EmmFormatError


class _Cursor:
    """Bounded reads over one section: every read goes through `take`, which fails with 'truncated'."""

    def __init__(self, data: memoryview, where: str):
        self.data, self.pos, self.where = data, 0, where

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise EmmFormatError(f"{self.where}: truncated while reading {what} "
                                 f"(needs {n} bytes at offset {self.pos}, section has {len(self.data)})")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u32(self, what: str) -> int:
        return struct.unpack("<I", self.take(4, what))[0]

    def unpack(self, st: struct.Struct, what: str) -> tuple:
        return st.unpack(self.take(st.size, what))


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise EmmFormatError(message)


def read_sections(data: bytes | memoryview) -> dict[int, memoryview]:
    """Validates header and section table; returns each section's payload by kind."""
    buf = memoryview(data)
    _check(len(buf) >= F.HEADER_BYTES, f"header: truncated (file has {len(buf)} bytes, header needs 64)")
    (magic, version, s_u32, s_f32, header_bytes, alignment, count, flags, file_bytes, table_off,
     table_crc, r0, r1, header_crc) = HEADER_STRUCT.unpack(buf[:F.HEADER_BYTES])
    _check(magic == F.MAGIC, f"header.magic: bad magic {bytes(magic)!r}, expected {F.MAGIC!r} (not an .emm file)")
    _check(version <= F.VERSION, f"header.version: future version {version}, this reader supports "
                                 f"{F.MIN_VERSION} to {F.VERSION}")
    _check(version >= F.MIN_VERSION, f"header.version: invalid version {version}")
    _check(s_u32 == F.SENTINEL_U32, f"header.sentinel_u32: 0x{s_u32:08X}, expected 0x{F.SENTINEL_U32:08X} "
                                    "(byte-order mismatch)")
    _check(struct.pack("<f", s_f32) == struct.pack("<I", F.SENTINEL_F32_BITS),
           "header.sentinel_f32: not -1.5 (float format mismatch)")
    _check(zlib.crc32(buf[:60]) == header_crc, "header.header_crc32: CRC mismatch (header is corrupt)")
    _check(header_bytes == F.HEADER_BYTES, f"header.header_bytes: {header_bytes}, expected 64")
    _check(alignment == F.ALIGNMENT, f"header.alignment: {alignment}, expected {F.ALIGNMENT}")
    _check(flags == 0 and r0 == 0 and r1 == 0, "header: non-zero flags or reserved field")
    _check(file_bytes <= F.MAX_FILE_BYTES, f"header.file_bytes: {file_bytes} exceeds MAX_FILE_BYTES "
                                           f"{F.MAX_FILE_BYTES}")
    _check(file_bytes == len(buf), f"header.file_bytes: {file_bytes}, but the file has {len(buf)} bytes "
                                   "(truncated or padded)")
    _check(5 <= count <= F.MAX_SECTIONS, f"header.section_count: {count} outside 5..{F.MAX_SECTIONS}")
    _check(table_off == F.HEADER_BYTES, f"header.section_table_offset: {table_off}, expected 64")
    table_end = table_off + count * F.SECTION_ENTRY_BYTES
    _check(table_end <= len(buf), "section table: truncated")
    _check(zlib.crc32(buf[table_off:table_end]) == table_crc, "section table: CRC mismatch")
    sections: dict[int, memoryview] = {}
    cursor = F.align(table_end)
    required = list(REQUIRED_SECTIONS)
    previous = -1
    for i in range(count):
        kind, sflags, offset, size, crc, reserved = SECTION_RECORD.unpack_from(buf, table_off + i * 32)
        where = f"section {i} (kind {kind})"
        _check(sflags == 0 and reserved == 0, f"{where}: non-zero flags or reserved field")
        _check(offset % F.ALIGNMENT == 0, f"{where}: offset {offset} is not aligned to {F.ALIGNMENT}")
        # as the C loader: the first section right after the table, then strictly increasing offsets (an
        # empty section still takes its own offset)
        _check(i > 0 or offset == cursor, f"{where}: offset {offset}, expected {cursor} (the first section starts "
                                          "at align(64 + 32 x section_count))")
        _check(offset > previous, f"{where}: offset {offset} does not increase (previous section at {previous})")
        _check(offset >= cursor, f"{where}: offset {offset} overlaps the previous section (ends at {cursor})")
        _check(offset + size <= len(buf), f"{where}: truncated (ends at {offset + size}, file has {len(buf)})")
        _check(not any(buf[cursor:offset]), f"{where}: non-zero padding before the section")
        payload = buf[offset:offset + size]
        _check(zlib.crc32(payload) == crc, f"{where}: CRC mismatch (section data is corrupt)")
        if kind in F.Section.__members__.values():
            _check(bool(required) and kind == required[0],
                   f"{where}: section {F.Section(kind).name} out of order or repeated")
            required.pop(0)
            sections[kind] = payload
        else:
            _check(F.EXTENSION_SECTION_MIN <= kind <= F.EXTENSION_SECTION_MAX, f"{where}: unknown section kind")
        cursor, previous = offset + size, offset
    _check(not required, f"missing section(s): {', '.join(F.Section(k).name for k in required)}")
    _check(cursor == len(buf), f"file has {len(buf) - cursor} bytes after the last section")
    return sections


def _read_meta(payload: memoryview) -> dict[str, int | float | str]:
    cur = _Cursor(payload, "META")
    count = cur.u32("entry count")
    _check(count <= F.MAX_META_ENTRIES, f"META: {count} entries exceed the limit {F.MAX_META_ENTRIES}")
    meta: dict[str, int | float | str] = {}
    for i in range(count):
        key_len = cur.u32(f"entry {i} key length")
        _check(1 <= key_len <= F.MAX_KEY_BYTES, f"META entry {i}: key length {key_len} outside 1..255")
        raw = bytes(cur.take(key_len, f"entry {i} key"))
        _check(set(raw) <= KEY_CHARS, f"META entry {i}: key {raw!r} has characters outside [a-z0-9_.-]")
        key = raw.decode("ascii")
        _check(key not in meta, f"META entry {i}: duplicate key {key!r}")
        vtype = cur.u32(f"entry {key} type")
        if vtype == F.MetaType.U64:
            meta[key] = struct.unpack("<Q", cur.take(8, key))[0]
        elif vtype == F.MetaType.I64:
            meta[key] = struct.unpack("<q", cur.take(8, key))[0]
        elif vtype == F.MetaType.F64:
            meta[key] = struct.unpack("<d", cur.take(8, key))[0]
        elif vtype == F.MetaType.STRING:
            n = cur.u32(f"{key} string length")
            _check(n <= F.MAX_STRING_BYTES, f"META {key!r}: string of {n} bytes exceeds the limit")
            try:
                meta[key] = bytes(cur.take(n, key)).decode("utf-8")
            except UnicodeDecodeError as e:
                raise EmmFormatError(f"META {key!r}: string is not UTF-8 ({e})") from None
        else:
            raise EmmFormatError(f"META {key!r}: unknown value type {vtype}")
    _check(cur.pos == len(payload), f"META: {len(payload) - cur.pos} unexpected bytes after the last entry")
    return meta


def _read_graph(payload: memoryview, version: int, graph: MergedGraph) -> None:
    """GRAPH (docs/FORMAT.md): inputs, node records and, in version 2, the extra-input list; every node's
    inputs are checked to be computed before it and to fit its op (arity, shapes, broadcast)."""
    cur = _Cursor(payload, "GRAPH")
    if version >= 2:
        n_inputs, n_nodes, n_extra, reserved = cur.unpack(GRAPH_HEADER, "the graph header")
        _check(reserved == 0, f"GRAPH: reserved is {reserved}, expected 0")
    else:
        (n_inputs, n_nodes), n_extra = cur.unpack(GRAPH_HEADER_V1, "the graph header"), 0
    _check(1 <= n_inputs <= F.MAX_INPUTS, f"GRAPH: input count {n_inputs} outside 1..{F.MAX_INPUTS}")
    _check(1 <= n_nodes <= F.MAX_NODES, f"GRAPH: node count {n_nodes} outside 1..{F.MAX_NODES}")
    _check(n_extra <= n_nodes * (F.MAX_NODE_INPUTS - 1),
           f"GRAPH: extra_input_count {n_extra} exceeds node_count x (MAX_NODE_INPUTS - 1)")
    for i in range(n_inputs):
        h, w, c, _ = cur.unpack(INPUT_RECORD, f"input {i}")
        graph.inputs.append((h, w, c))
    records = [cur.unpack(NODE_RECORD, f"node {i}") for i in range(n_nodes)]
    counts = [f[20] if version >= 2 else 1 for f in records]
    for i, count in enumerate(counts):
        _check(1 <= count <= F.MAX_NODE_INPUTS,
               f"GRAPH node {i}: input_count {count} outside 1..MAX_NODE_INPUTS ({F.MAX_NODE_INPUTS})")
    declared = sum(c - 1 for c in counts)
    _check(declared == n_extra, f"GRAPH: extra_input_count is {n_extra}, but the nodes' input_count fields need "
                                f"{declared} extra inputs")
    extra = cur.unpack(struct.Struct(f"<{n_extra}I"), "the extra-input list")
    _check(cur.pos == len(payload), f"GRAPH: {len(payload) - cur.pos} unexpected bytes after the "
                                    f"{'extra-input list' if version >= 2 else 'last node'}")
    shapes = list(graph.inputs)
    at = 0
    for i, f in enumerate(records):
        try:
            op, act = F.Op(f[0]), F.Act(f[2])
        except ValueError:
            raise EmmFormatError(f"GRAPH node {i}: unknown op {f[0]} or activation {f[2]}") from None
        _check(f[1] < n_inputs + i, f"GRAPH node {i}: reads value {f[1]}, which is not computed before it")
        problem = node_flags_problem(op, f[16], f[3])
        _check(not problem, f"GRAPH node {i}: {problem}")
        input_scale = 0.0
        if f[3] & F.NODE_FLAG_INT8_ACT:   # FORMAT.md "int8 activations": sx in record word 21
            input_scale = float(struct.unpack("<f", struct.pack("<I", f[F.NODE_WORD_INPUT_SCALE]))[0])
            problem = input_scale_problem(input_scale)
            _check(not problem, f"GRAPH node {i}: {problem}")
            f = (*f[:F.NODE_WORD_INPUT_SCALE], 0, *f[F.NODE_WORD_INPUT_SCALE + 1:])
        reserved_words = f[21:24] if version >= 2 else f[20:24]
        _check(not any(reserved_words), f"GRAPH node {i}: non-zero reserved field")
        node = Node(
            name=str(graph.metadata.get(Keys.Node.NAME.format(i=i), f"node{i}")), op=op, input=f[1], activation=act,
            out_shape=(f[4], f[5], f[6]), kernel=(f[7], f[8]), stride=(f[9], f[10]),
            pads=(f[11], f[12], f[13], f[14]), seg_len=f[15], codewords=f[16], weight=f[17], index=f[18],
            bias=f[19], sources=tuple(s for s in str(graph.metadata.get(Keys.Node.SOURCES.format(i=i), "")).split(",") if s),
            match_output=str(graph.metadata.get(Keys.Node.MATCH_OUTPUT.format(i=i), "")), flags=f[3],
            input_scale=input_scale,
            extra_inputs=tuple(extra[at:at + counts[i] - 1]))
        at += counts[i] - 1
        problem = node_inputs_problem(node, n_inputs + i, shapes)
        _check(not problem, f"GRAPH node {i} ({op.name}): {problem}")
        if node.extra_inputs:
            expected = multi_input_out_shape(op, [shapes[v] for v in node.inputs])
            _check(tuple(node.out_shape) == tuple(expected), f"GRAPH node {i} ({op.name}): declared output shape "
                                                           f"{tuple(node.out_shape)} does not match the computed {expected}")
        shapes.append(tuple(node.out_shape))
        graph.nodes.append(node)


def read_emm(source: str | os.PathLike | bytes | memoryview) -> MergedGraph:
    """Reads an `.emm` file (a path or its bytes) into a MergedGraph, with index maps unpacked."""
    if isinstance(source, (str, os.PathLike)):
        try:
            data = Path(source).read_bytes()
        except FileNotFoundError:
            raise EmmFormatError(f"{source}: no such file") from None
        except OSError as e:
            raise EmmFormatError(f"{source}: cannot read ({e.strerror})") from None
    else:
        data = bytes(source)
    sections = read_sections(data)
    graph = MergedGraph(metadata=_read_meta(sections[F.Section.META]))

    cur = _Cursor(sections[F.Section.TASKS], "TASKS")
    n_tasks = cur.u32("task count")
    _check(1 <= n_tasks <= F.MAX_TASKS, f"TASKS: count {n_tasks} outside 1..{F.MAX_TASKS}")
    for i in range(n_tasks):
        raw, inp, outp, classes, reserved = cur.unpack(TASK_RECORD, f"task {i}")
        name = raw.split(b"\0", 1)[0]
        _check(b"\0" in raw and 1 <= len(name) and set(name) <= NAME_CHARS, f"TASKS task {i}: invalid name")
        graph.tasks.append(Task(name.decode("ascii"), inp, outp, classes))

    _read_graph(sections[F.Section.GRAPH], struct.unpack_from("<I", data, 4)[0], graph)
    n_inputs, n_nodes = len(graph.inputs), len(graph.nodes)
    n_values = n_inputs + n_nodes
    for t in graph.tasks:
        _check(t.input < n_inputs, f"TASKS task {t.name!r}: input {t.input} does not exist")
        _check(t.output < n_values, f"TASKS task {t.name!r}: output value {t.output} does not exist")
        others = sorted(graph.graph_inputs_of(t.output) - {t.input})
        _check(not others, f"TASKS task {t.name!r}: output value {t.output} is computed from graph input "
                           f"{others[0] if others else ''}, not from the task's input {t.input}")

    cur = _Cursor(sections[F.Section.TENSORS], "TENSORS")
    data_section = sections[F.Section.DATA]
    n_tensors = cur.u32("tensor count")
    _check(n_tensors <= F.MAX_TENSORS, f"TENSORS: count {n_tensors} exceeds {F.MAX_TENSORS}")
    expected_offset = 0
    for i in range(n_tensors):
        dtype, ndim, d0, d1, d2, d3, bits, reserved, offset, nbytes = cur.unpack(TENSOR_RECORD, f"tensor {i}")
        where = f"TENSORS tensor {i}"
        _check(1 <= ndim <= 4, f"{where}: ndim {ndim} outside 1..4")
        dims = (d0, d1, d2, d3)
        _check(all(1 <= d <= F.MAX_DIM for d in dims[:ndim]) and not any(dims[ndim:]),
               f"{where}: dims {dims[:ndim]} outside 1..{F.MAX_DIM} (or unused dims non-zero)")
        numel = int(np.prod(dims[:ndim], dtype=object))
        _check(numel <= F.MAX_TENSOR_ELEMENTS, f"{where}: {numel} elements exceed the limit")
        _check(offset == expected_offset, f"{where}: offset {offset}, expected {expected_offset} (not contiguous)")
        if dtype == F.DType.F32:
            _check(bits == 32 and nbytes == 4 * numel, f"{where}: F32 tensor with bits {bits} / nbytes {nbytes}")
        elif dtype == F.DType.IDX:
            _check(1 <= bits <= 16 and nbytes == (numel * bits + 7) // 8,
                   f"{where}: IDX tensor with bits {bits} / nbytes {nbytes}")
        else:
            raise EmmFormatError(f"{where}: unknown dtype {dtype}")
        _check(offset + nbytes <= len(data_section), f"{where}: data truncated (DATA has {len(data_section)} bytes)")
        raw = data_section[offset:offset + nbytes]
        shape = dims[:ndim]
        name = f"tensor{i}"
        if dtype == F.DType.F32:
            graph.tensors.append(Tensor(name, np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)))
        else:
            graph.tensors.append(Tensor(name, unpack_indices(raw, numel, bits).reshape(shape), F.DType.IDX, bits))
        expected_offset = F.align(offset + nbytes)
        data_end = offset + nbytes
    if n_tensors == 0:
        data_end = 0
    _check(len(data_section) == data_end,
           f"DATA: {len(data_section)} bytes, but the last tensor ends at {data_end}")

    for i, node in enumerate(graph.nodes):
        for field_name in ("weight", "index", "bias"):
            ref = getattr(node, field_name)
            _check(ref == F.NONE or ref < n_tensors, f"GRAPH node {i}: {field_name} tensor {ref} does not exist")
        if node.op in (F.Op.LUT_CONV2D, F.Op.LUT_DENSE, F.Op.LUT_DEPTHWISE_CONV2D):
            _check(node.index != F.NONE and node.weight != F.NONE, f"GRAPH node {i}: LUT op without tensors")
            idx = graph.tensors[node.index]
            _check(idx.dtype == F.DType.IDX and idx.bits == F.index_bits(node.codewords),
                   f"GRAPH node {i}: index tensor {node.index} has {idx.bits} bits, expected "
                   f"{F.index_bits(node.codewords)} for C={node.codewords}")
            _check(idx.array.size == 0 or int(idx.array.max()) < node.codewords,
                   f"GRAPH node {i}: index map holds {int(idx.array.max())}, past C={node.codewords}")
    for i, t in enumerate(graph.tensors):
        t.name = str(graph.metadata.get(Keys.Tensor.NAME.format(i=i), t.name))
    return graph
