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


UNPACK_CHUNK = 1 << 16
"""Indices packed or unpacked per step: bounds its temporaries to a few MiB whatever the tensor size."""


def pack_indices(values: np.ndarray, bits: int) -> bytes:
    flat = np.asarray(values).reshape(-1)
    if flat.size and int(flat.max()) >> bits:
        raise ValueError(f"index value {int(flat.max())} does not fit in {bits} bits")
    # UNPACK_CHUNK indices at a time (a multiple of 8, so every chunk ends on a byte): temporaries of a few MiB
    # instead of ~9 bytes per bit of the whole tensor
    shifts = np.arange(bits, dtype=np.uint32)
    pieces = []
    for start in range(0, flat.size, UNPACK_CHUNK):
        chunk = flat[start:start + UNPACK_CHUNK].astype(np.uint32)
        bit_matrix = ((chunk[:, None] >> shifts) & 1).astype(np.uint8)
        pieces.append(np.packbits(bit_matrix.reshape(-1), bitorder="little").tobytes())
    return b"".join(pieces)


def unpack_indices(data: bytes | memoryview, count: int, bits: int) -> np.ndarray:
    """The `count` `bits`-bit indices packed LSB first in `data` (FORMAT.md "Index maps"), as uint8 (bits <= 8)
    or uint16. Memory: the result (1-2 bytes per index) plus fixed-size temporaries: each index is read from the
    3 bytes that hold it (bits <= 16 span at most 3 bytes) and shifted, UNPACK_CHUNK indices at a time, never one
    byte per bit (which took a 16 MiB file to 2.2 GiB)."""
    if not 1 <= bits <= 16:
        raise ValueError(f"index width {bits} outside 1..16")
    raw = np.frombuffer(data, dtype=np.uint8)
    if raw.size * 8 < count * bits:
        raise ValueError(f"{raw.size} bytes hold fewer than {count} indices of {bits} bits")
    out = np.empty(count, dtype=np.uint8 if bits <= 8 else np.uint16)
    mask = np.uint32((1 << bits) - 1)
    for start in range(0, count, UNPACK_CHUNK):
        first_bit = np.arange(start, min(count, start + UNPACK_CHUNK), dtype=np.int64) * bits
        byte, shift = first_bit >> 3, (first_bit & 7).astype(np.uint32)
        # reads past the end are clipped to the last byte: they only fill bits above the index, masked off
        word = (raw.take(byte, mode="clip").astype(np.uint32)
                | (raw.take(byte + 1, mode="clip").astype(np.uint32) << 8)
                | (raw.take(byte + 2, mode="clip").astype(np.uint32) << 16))
        out[start:start + len(first_bit)] = (word >> shift) & mask
    return out


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
