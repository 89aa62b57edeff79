"""Writer and reader of `.emm` files (docs/FORMAT.md is the spec; this module follows it).

The writer is a small state machine (META → TASKS → GRAPH → TENSORS, then `finish`), refuses steps out of
order, and writes the file atomically (temporary name in the same folder, then rename). The reader checks
every field it reads and raises `EmmFormatError` naming the section, record and field.
"""
from __future__ import annotations

import os
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np

from . import format as F
from .errors import EmmFormatError
from .graph import MergedGraph, Node, Task, Tensor

_HEADER = struct.Struct("<4sIIfIIIIQQIIII")          # 64 bytes
_SECTION = struct.Struct("<IIQQII")                   # 32 bytes
_TASK = struct.Struct("<32sIIII")                     # 48 bytes
_INPUT = struct.Struct("<IIII")                       # 16 bytes
_NODE = struct.Struct("<24I")                         # 96 bytes
_TENSOR = struct.Struct("<IIIIIIIIQQ")                # 48 bytes
assert _HEADER.size == F.HEADER_BYTES and _SECTION.size == F.SECTION_ENTRY_BYTES
assert _TASK.size == F.TASK_RECORD_BYTES and _INPUT.size == F.INPUT_RECORD_BYTES
assert _NODE.size == F.NODE_RECORD_BYTES and _TENSOR.size == F.TENSOR_RECORD_BYTES

_REQUIRED_SECTIONS = (F.Section.META, F.Section.TASKS, F.Section.GRAPH, F.Section.TENSORS, F.Section.DATA)
_KEY_CHARS = set(b"abcdefghijklmnopqrstuvwxyz0123456789_.-")
_NAME_CHARS = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


# ------------------------------------------------------------------------------------------------
# bit packing of index maps (LSB first, see FORMAT.md "Bit packing")
# ------------------------------------------------------------------------------------------------
def pack_indices(values: np.ndarray, bits: int) -> bytes:
    flat = np.ascontiguousarray(values, dtype=np.uint64).reshape(-1)
    if flat.size and int(flat.max()) >> bits:
        raise ValueError(f"index value {int(flat.max())} does not fit in {bits} bits")
    bit_matrix = ((flat[:, None] >> np.arange(bits, dtype=np.uint64)) & 1).astype(np.uint8)
    return np.packbits(bit_matrix.reshape(-1), bitorder="little").tobytes()


def unpack_indices(data: bytes | memoryview, count: int, bits: int) -> np.ndarray:
    stream = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")[: count * bits]
    weights = (1 << np.arange(bits, dtype=np.uint64))
    return (stream.reshape(count, bits).astype(np.uint64) @ weights).astype(np.uint32)


def node_flags_problem(op: int, codewords: int, flags: int) -> str:
    """Why a node's flags are invalid (FORMAT.md "int8 tables"), or "" if they are fine."""
    unknown = int(flags) & ~F.NODE_FLAGS_KNOWN
    if unknown:
        return f"unknown node flags 0x{unknown:08X} (this version knows 0x{F.NODE_FLAGS_KNOWN:08X})"
    if flags & F.NODE_FLAG_INT8_TABLES:
        if op not in (F.Op.LUT_CONV2D, F.Op.LUT_DENSE):
            return "flag INT8_TABLES is only defined for LUT ops"
        if codewords != F.INT8_TABLE_CODEWORDS:
            return f"flag INT8_TABLES needs C = {F.INT8_TABLE_CODEWORDS} (4-bit indices), this node has C = {codewords}"
    return ""


def _tensor_nbytes(tensor: Tensor) -> int:
    numel = int(np.prod(tensor.shape, dtype=np.int64))
    return 4 * numel if tensor.dtype == F.DType.F32 else (numel * tensor.bits + 7) // 8


# ------------------------------------------------------------------------------------------------
# writer
# ------------------------------------------------------------------------------------------------
class EmmWriter:
    """Serialises one model section by section. Steps must come in the order of the file."""

    _STEPS = ("meta", "tasks", "graph", "tensors", "finished")

    def __init__(self) -> None:
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
            if not 1 <= len(raw_key) <= F.MAX_KEY_BYTES or not set(raw_key) <= _KEY_CHARS:
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
            if not 1 <= len(raw) < F.TASK_NAME_BYTES or not set(raw) <= _NAME_CHARS:
                raise ValueError(f"task name {task.name!r}: 1..31 characters of [A-Za-z0-9_.-] required")
            out += _TASK.pack(raw, task.input, task.output, task.classes, 0)
        self._payloads.append((F.Section.TASKS, bytes(out)))

    def write_graph(self, inputs: list[tuple[int, int, int]], nodes: list[Node]) -> None:
        self._advance("graph")
        out = bytearray(struct.pack("<II", len(inputs), len(nodes)))
        for h, w, c in inputs:
            out += _INPUT.pack(h, w, c, 0)
        for i, n in enumerate(nodes):
            problem = node_flags_problem(n.op, n.codewords, n.flags)
            if problem:
                raise ValueError(f"node {i} ({n.name}): {problem}")
            out += _NODE.pack(int(n.op), n.input, int(n.activation), int(n.flags), *n.out_shape, *n.kernel, *n.stride,
                              *n.pads, n.seg_len, n.codewords, n.weight, n.index, n.bias, 0, 0, 0, 0)
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
            assert len(payload) == _tensor_nbytes(t)
            data += payload
            dims = list(t.shape) + [0] * (4 - len(t.shape))
            table += _TENSOR.pack(int(t.dtype), len(t.shape), *dims, t.bits, 0, offset, len(payload))
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
            entries += _SECTION.pack(kind, 0, cursor, len(payload), zlib.crc32(payload), 0)
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
        header_wo_crc = _HEADER.pack(F.MAGIC, F.VERSION, F.SENTINEL_U32, F.SENTINEL_F32, F.HEADER_BYTES,
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
    for i, node in enumerate(graph.nodes):
        metadata.setdefault(f"node.{i}.name", node.name)
        if node.sources:
            metadata.setdefault(f"node.{i}.sources", ",".join(node.sources))
        if node.match_output:
            metadata.setdefault(f"node.{i}.match_output", node.match_output)
    for i, tensor in enumerate(graph.tensors):
        metadata.setdefault(f"tensor.{i}.name", tensor.name)
    writer = EmmWriter()
    writer.write_meta(metadata)
    writer.write_tasks(graph.tasks)
    writer.write_graph(graph.inputs, graph.nodes)
    writer.write_tensors(graph.tensors)
    return writer.finish()


def _file_mode(path: Path) -> int:
    """The permissions a written file gets: those of the file it replaces, else 0666 less the umask (what
    open() would give), never mkstemp's private 0600."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
        os.umask(mask)
        return 0o666 & ~mask


def _fsync_folder(folder: Path) -> None:
    """Makes the rename durable (POSIX); a no-op where folders cannot be opened."""
    flags = getattr(os, "O_DIRECTORY", None)
    if flags is None:
        return
    try:
        fd = os.open(folder, os.O_RDONLY | flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` through a temporary file in the same folder and a rename, so a reader (or
    an interrupted write) never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), mode)  # mkstemp makes the file 0600; the result should not be
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_emm(graph: MergedGraph, path: str | os.PathLike) -> int:
    """Writes `graph` to `path` atomically; returns the file size in bytes."""
    data = to_bytes(graph)
    atomic_write_bytes(path, data)
    return len(data)


# ------------------------------------------------------------------------------------------------
# reader
# ------------------------------------------------------------------------------------------------
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
     table_crc, r0, r1, header_crc) = _HEADER.unpack(buf[:F.HEADER_BYTES])
    _check(magic == F.MAGIC, f"header.magic: bad magic {bytes(magic)!r}, expected {F.MAGIC!r} (not an .emm file)")
    _check(version <= F.VERSION, f"header.version: future version {version}, this reader supports {F.VERSION}")
    _check(version >= 1, f"header.version: invalid version {version}")
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
    required = list(_REQUIRED_SECTIONS)
    previous = -1
    for i in range(count):
        kind, sflags, offset, size, crc, reserved = _SECTION.unpack_from(buf, table_off + i * 32)
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
        _check(set(raw) <= _KEY_CHARS, f"META entry {i}: key {raw!r} has characters outside [a-z0-9_.-]")
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
        raw, inp, outp, classes, reserved = cur.unpack(_TASK, f"task {i}")
        name = raw.split(b"\0", 1)[0]
        _check(b"\0" in raw and 1 <= len(name) and set(name) <= _NAME_CHARS, f"TASKS task {i}: invalid name")
        graph.tasks.append(Task(name.decode("ascii"), inp, outp, classes))

    cur = _Cursor(sections[F.Section.GRAPH], "GRAPH")
    n_inputs, n_nodes = cur.u32("input count"), cur.u32("node count")
    _check(1 <= n_inputs <= F.MAX_INPUTS, f"GRAPH: input count {n_inputs} outside 1..{F.MAX_INPUTS}")
    _check(1 <= n_nodes <= F.MAX_NODES, f"GRAPH: node count {n_nodes} outside 1..{F.MAX_NODES}")
    for i in range(n_inputs):
        h, w, c, _ = cur.unpack(_INPUT, f"input {i}")
        graph.inputs.append((h, w, c))
    for i in range(n_nodes):
        f = cur.unpack(_NODE, f"node {i}")
        try:
            op, act = F.Op(f[0]), F.Act(f[2])
        except ValueError:
            raise EmmFormatError(f"GRAPH node {i}: unknown op {f[0]} or activation {f[2]}") from None
        _check(f[1] < n_inputs + i, f"GRAPH node {i}: reads value {f[1]}, which is not computed before it")
        problem = node_flags_problem(op, f[16], f[3])
        _check(not problem, f"GRAPH node {i}: {problem}")
        graph.nodes.append(Node(
            name=str(graph.metadata.get(f"node.{i}.name", f"node{i}")), op=op, input=f[1], activation=act,
            out_shape=(f[4], f[5], f[6]), kernel=(f[7], f[8]), stride=(f[9], f[10]),
            pads=(f[11], f[12], f[13], f[14]), seg_len=f[15], codewords=f[16], weight=f[17], index=f[18],
            bias=f[19], sources=tuple(s for s in str(graph.metadata.get(f"node.{i}.sources", "")).split(",") if s),
            match_output=str(graph.metadata.get(f"node.{i}.match_output", "")), flags=f[3]))
    n_values = n_inputs + n_nodes
    for t in graph.tasks:
        _check(t.input < n_inputs, f"TASKS task {t.name!r}: input {t.input} does not exist")
        _check(t.output < n_values, f"TASKS task {t.name!r}: output value {t.output} does not exist")

    cur = _Cursor(sections[F.Section.TENSORS], "TENSORS")
    data_section = sections[F.Section.DATA]
    n_tensors = cur.u32("tensor count")
    _check(n_tensors <= F.MAX_TENSORS, f"TENSORS: count {n_tensors} exceeds {F.MAX_TENSORS}")
    expected_offset = 0
    for i in range(n_tensors):
        dtype, ndim, d0, d1, d2, d3, bits, reserved, offset, nbytes = cur.unpack(_TENSOR, f"tensor {i}")
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
        if node.op in (F.Op.LUT_CONV2D, F.Op.LUT_DENSE):
            _check(node.index != F.NONE and node.weight != F.NONE, f"GRAPH node {i}: LUT op without tensors")
            idx = graph.tensors[node.index]
            _check(idx.dtype == F.DType.IDX and idx.bits == F.index_bits(node.codewords),
                   f"GRAPH node {i}: index tensor {node.index} has {idx.bits} bits, expected "
                   f"{F.index_bits(node.codewords)} for C={node.codewords}")
            _check(idx.array.size == 0 or int(idx.array.max()) < node.codewords,
                   f"GRAPH node {i}: index map holds {int(idx.array.max())}, past C={node.codewords}")
    for i, t in enumerate(graph.tensors):
        t.name = str(graph.metadata.get(f"tensor.{i}.name", t.name))
    return graph
