"""Record layouts of the `.emm` file (docs/FORMAT.md "Header", "Section table", the record tables), index
bit packing and node-flag rules: what the writer and the reader share."""
from __future__ import annotations

import struct

import numpy as np

from edgemerge.emm import constants as F
from edgemerge.emm.graph import Node, Shape3, Tensor

HEADER_STRUCT = struct.Struct("<4sIIfIIIIQQIIII")          # 64 bytes
SECTION_RECORD = struct.Struct("<IIQQII")                   # 32 bytes
TASK_RECORD = struct.Struct("<32sIIII")                     # 48 bytes
INPUT_RECORD = struct.Struct("<IIII")                       # 16 bytes
NODE_RECORD = struct.Struct("<24I")                         # 96 bytes (word 20: input_count in v2)
GRAPH_HEADER_V1 = struct.Struct("<II")                      # input_count, node_count
GRAPH_HEADER = struct.Struct("<IIII")                       # v2: + extra_input_count, reserved
TENSOR_RECORD = struct.Struct("<IIIIIIIIQQ")                # 48 bytes
assert HEADER_STRUCT.size == F.HEADER_BYTES and SECTION_RECORD.size == F.SECTION_ENTRY_BYTES
assert TASK_RECORD.size == F.TASK_RECORD_BYTES and INPUT_RECORD.size == F.INPUT_RECORD_BYTES
assert NODE_RECORD.size == F.NODE_RECORD_BYTES and TENSOR_RECORD.size == F.TENSOR_RECORD_BYTES
assert GRAPH_HEADER_V1.size == F.GRAPH_HEADER_BYTES_V1 and GRAPH_HEADER.size == F.GRAPH_HEADER_BYTES

# inputs each op takes (docs/FORMAT.md op table): (min, max)
OP_INPUTS = {F.Op.ADD: (2, F.MAX_NODE_INPUTS), F.Op.CONCAT: (2, F.MAX_NODE_INPUTS), F.Op.MUL: (2, 2)}

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
    if flags & F.NODE_FLAG_INT8_TABLES and flags & F.NODE_FLAG_INT8_ACT:
        return "flags INT8_ACT and INT8_TABLES exclude each other"
    if flags & F.NODE_FLAG_INT8_TABLES:
        if op not in (F.Op.LUT_CONV2D, F.Op.LUT_DENSE):
            return "flag INT8_TABLES is only defined for LUT ops"
        if codewords != F.INT8_TABLE_CODEWORDS:
            return f"flag INT8_TABLES needs C = {F.INT8_TABLE_CODEWORDS} (4-bit indices), this node has C = {codewords}"
    if flags & F.NODE_FLAG_INT8_ACT:   # FORMAT.md "int8 activations"
        if op not in (F.Op.LUT_CONV2D, F.Op.LUT_DENSE):
            return "flag INT8_ACT is only defined for LUT ops"
    return ""


def input_scale_problem(scale: float) -> str:
    """Why an INT8_ACT input scale is invalid (FORMAT.md "int8 activations": finite, > 0, with a finite
    float32 inverse), or "" if it is fine."""
    s = np.float32(scale)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        inverse = np.float32(1.0) / s
    if not (np.isfinite(s) and s > 0 and np.isfinite(inverse)):
        return f"flag INT8_ACT: input scale {float(s)!r} is not a finite positive float with a finite inverse"
    return ""


def tensor_nbytes(tensor: Tensor) -> int:
    numel = int(np.prod(tensor.shape, dtype=np.int64))
    return 4 * numel if tensor.dtype == F.DType.F32 else (numel * tensor.bits + 7) // 8


def node_inputs_problem(node: Node, own_value: int, shapes: list[Shape3]) -> str:
    """Why a node's inputs break docs/FORMAT.md v2 (arity, inputs computed before the node, the shape and
    broadcast rules of ADD / CONCAT / MUL), or "" if they are fine. `shapes[v]`: the shape of value v < own."""
    inputs = node.inputs
    low, high = OP_INPUTS.get(node.op, (1, 1))
    if len(inputs) > F.MAX_NODE_INPUTS:
        return f"{len(inputs)} inputs exceed MAX_NODE_INPUTS {F.MAX_NODE_INPUTS}"
    if not low <= len(inputs) <= high:
        takes = str(low) if low == high else f"{low} to {high}"
        return f"{len(inputs)} inputs, {F.Op(node.op).name} takes {takes}"
    for k, v in enumerate(inputs):
        if not 0 <= v < own_value:
            return f"input {k} reads value {v}, which is not computed before it (this node produces value {own_value})"
    got = [tuple(shapes[v]) for v in inputs]
    if node.op == F.Op.ADD:
        for k, shape in enumerate(got[1:], 1):
            if shape != got[0]:
                return (f"input {k} (value {inputs[k]}) has shape {shape}, input 0 (value {inputs[0]}) has {got[0]}: "
                        "ADD needs equal shapes (no broadcasting)")
    elif node.op == F.Op.CONCAT:
        for k, shape in enumerate(got[1:], 1):
            if shape[:2] != got[0][:2]:
                return (f"input {k} (value {inputs[k]}) is {shape[0]}x{shape[1]}, input 0 (value {inputs[0]}) is "
                        f"{got[0][0]}x{got[0][1]}: CONCAT joins channels of equal spatial sizes")
    elif node.op == F.Op.MUL:
        a, b = got
        if not (a == b or (a[2] == b[2] and (a[:2] == (1, 1) or b[:2] == (1, 1)))):
            return (f"input 0 (value {inputs[0]}) has shape {a}, input 1 (value {inputs[1]}) has {b}: MUL broadcasts "
                    "only equal shapes or (1, 1, C) with (H, W, C)")
    return ""


def multi_input_out_shape(op: int, shapes: list[Shape3]) -> Shape3:
    """The output shape of ADD / CONCAT / MUL over inputs of these (valid) shapes."""
    if op == F.Op.CONCAT:
        return (shapes[0][0], shapes[0][1], sum(s[2] for s in shapes))
    return max(shapes, key=lambda s: s[0] * s[1])
