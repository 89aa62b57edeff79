"""Record layouts of the `.emm` file (docs/FORMAT.md "Header", "Section table", the record tables), index
bit packing and node-flag rules: what the writer and the reader share."""
from __future__ import annotations

import struct

import numpy as np

from edgemerge.emm import constants as F
from edgemerge.emm.graph import Tensor

HEADER_STRUCT = struct.Struct("<4sIIfIIIIQQIIII")          # 64 bytes
SECTION_RECORD = struct.Struct("<IIQQII")                   # 32 bytes
TASK_RECORD = struct.Struct("<32sIIII")                     # 48 bytes
INPUT_RECORD = struct.Struct("<IIII")                       # 16 bytes
NODE_RECORD = struct.Struct("<24I")                         # 96 bytes
TENSOR_RECORD = struct.Struct("<IIIIIIIIQQ")                # 48 bytes
assert HEADER_STRUCT.size == F.HEADER_BYTES and SECTION_RECORD.size == F.SECTION_ENTRY_BYTES
assert TASK_RECORD.size == F.TASK_RECORD_BYTES and INPUT_RECORD.size == F.INPUT_RECORD_BYTES
assert NODE_RECORD.size == F.NODE_RECORD_BYTES and TENSOR_RECORD.size == F.TENSOR_RECORD_BYTES

REQUIRED_SECTIONS = (F.Section.META, F.Section.TASKS, F.Section.GRAPH, F.Section.TENSORS, F.Section.DATA)
KEY_CHARS = set(b"abcdefghijklmnopqrstuvwxyz0123456789_.-")
NAME_CHARS = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


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


def tensor_nbytes(tensor: Tensor) -> int:
    numel = int(np.prod(tensor.shape, dtype=np.int64))
    return 4 * numel if tensor.dtype == F.DType.F32 else (numel * tensor.bits + 7) // 8
