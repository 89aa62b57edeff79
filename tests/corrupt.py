"""Hand-made corrupt `.emm` files. Each mutation keeps every CRC valid unless the point is a bad CRC, so
the loader must find the deeper problem by itself."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from cli_runner import run_cli

from edgemerge.emm import constants as F
from edgemerge.emm.layout import SECTION_RECORD
from edgemerge.errors import EmmFormatError
from edgemerge.runtime import Runtime


def section_span(data: bytes, kind: int) -> tuple[int, int, int]:
    """(table entry index, offset, size) of the section of `kind`."""
    count = struct.unpack_from("<I", data, 24)[0]
    for i in range(count):
        k, _, off, size, _, _ = SECTION_RECORD.unpack_from(data, 64 + 32 * i)
        if k == kind:
            return i, off, size
    raise KeyError(kind)


def fix_crcs(data: bytes | bytearray) -> bytes:
    buf = bytearray(data)
    count = struct.unpack_from("<I", buf, 24)[0]
    for i in range(count):
        entry = 64 + 32 * i
        k, fl, off, size, _, res = SECTION_RECORD.unpack_from(buf, entry)
        SECTION_RECORD.pack_into(buf, entry, k, fl, off, size, zlib.crc32(bytes(buf[off:off + size])), res)
    struct.pack_into("<I", buf, 48, zlib.crc32(bytes(buf[64:64 + 32 * count])))
    struct.pack_into("<I", buf, 60, zlib.crc32(bytes(buf[:60])))
    return bytes(buf)


def reseal(data: bytes | bytearray) -> bytes:
    """fix_crcs for arbitrary bytes (fuzzer inputs): every read bounded by the buffer, sections that do not
    fit it left alone, nothing to do below 64 bytes."""
    buf = bytearray(data)
    if len(buf) < F.HEADER_BYTES:
        return bytes(buf)
    count = min(struct.unpack_from("<I", buf, 24)[0], (len(buf) - F.HEADER_BYTES) // F.SECTION_ENTRY_BYTES)
    for i in range(count):
        entry = 64 + 32 * i
        offset, size = struct.unpack_from("<QQ", buf, entry + 8)
        if offset <= len(buf) and size <= len(buf) - offset:
            struct.pack_into("<I", buf, entry + 24, zlib.crc32(bytes(buf[offset:offset + size])))
    struct.pack_into("<I", buf, 48, zlib.crc32(bytes(buf[64:64 + 32 * count])))
    struct.pack_into("<I", buf, 60, zlib.crc32(bytes(buf[:60])))
    return bytes(buf)


def patch_u32(data: bytes, offset: int, value: int, fix: bool = True) -> bytes:
    buf = bytearray(data)
    struct.pack_into("<I", buf, offset, value)
    return fix_crcs(buf) if fix else bytes(buf)


def bad_magic(data: bytes) -> bytes:
    return fix_crcs(b"GGUF" + data[4:])


def future_version(data: bytes) -> bytes:
    return patch_u32(data, 4, F.VERSION + 1)


def bad_header_crc(data: bytes) -> bytes:
    return patch_u32(data, 60, struct.unpack_from("<I", data, 60)[0] ^ 1, fix=False)


def bad_section_crc(data: bytes) -> bytes:
    _, off, size = section_span(data, F.Section.DATA)
    buf = bytearray(data)
    buf[off + size // 2] ^= 0x40
    return bytes(buf)


def truncated_section(data: bytes) -> bytes:
    """Cuts the file in the middle of DATA and fixes file_bytes, so only the section bounds are wrong."""
    _, off, size = section_span(data, F.Section.DATA)
    cut = bytearray(data[:off + size // 2])
    struct.pack_into("<Q", cut, 32, len(cut))
    return fix_crcs(cut)


def index_past_codewords(data: bytes) -> bytes:
    """Raises one packed index to the largest value its bits hold, which is >= C when C is not a power of 2."""
    from edgemerge.emm import read_emm, to_bytes
    graph = read_emm(data)
    for node in graph.nodes:
        if node.op in (F.Op.LUT_CONV2D, F.Op.LUT_DENSE) and node.codewords < (1 << F.index_bits(node.codewords)):
            graph.tensors[node.index].array.reshape(-1)[0] = (1 << F.index_bits(node.codewords)) - 1
            return to_bytes(graph)
    raise ValueError("graph has no LUT node with C below a power of two")


def shape_overflow(data: bytes) -> bytes:
    """Sets the first tensor's dims to MAX_DIM × MAX_DIM × MAX_DIM (2^72 elements: overflows 64 bits)."""
    _, off, _ = section_span(data, F.Section.TENSORS)
    rec = off + 4
    buf = bytearray(data)
    struct.pack_into("<IIII", buf, rec + 4, 3, F.MAX_DIM, F.MAX_DIM, F.MAX_DIM)
    return fix_crcs(buf)


CORRUPTIONS = {
    "bad_magic": (bad_magic, "magic"),
    "future_version": (future_version, "version"),
    "bad_header_crc": (bad_header_crc, "crc"),
    "bad_section_crc": (bad_section_crc, "crc"),
    "truncated_section": (truncated_section, "truncat"),
    "index_past_codewords": (index_past_codewords, "index"),
    "shape_overflow": (shape_overflow, "tensor"),
}


# -- what every refusal must look like -------------------------------------------------------------------
def c_loader_refuses(valid: bytes, mutate, keyword: str) -> tuple[bytes, EmmFormatError]:
    """`mutate(valid)` changes the file, and the C loader (Runtime) raises EmmFormatError naming `keyword` for
    it; the bad bytes and the error are returned for more checks."""
    bad = mutate(valid)
    assert bad != valid
    with pytest.raises(EmmFormatError) as info:
        Runtime(bad)
    assert keyword in str(info.value).lower(), str(info.value)
    return bad, info.value


def cli_refuses(folder, name: str, bad: bytes, keyword: str, input_shape: tuple[int, int, int], task: str) -> None:
    """`inspect --json` and `eval --data` on the file `bad` both exit 1 with one `error:` line naming `keyword`
    and no traceback (`input_shape` and `task` make a valid --data file, so only the model is at fault)."""
    path = folder / f"{name}.emm"
    path.write_bytes(bad)
    data = folder / f"{task}.npz"
    np.savez(data, x=np.zeros((2, *input_shape), np.float32), y=np.zeros(2, np.int64))
    for args in (["inspect", path, "--json"], ["eval", path, "--data", f"{task}={data}", "--json"]):
        result = run_cli(*args, timeout=120)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
        assert keyword in result.stderr.lower(), result.stderr
        assert "Traceback" not in result.stderr
