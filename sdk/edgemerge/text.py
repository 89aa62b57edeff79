"""Text that reaches a terminal: names from files (task, node, tensor and source names, paths) are printed
through `printable`, so a crafted file cannot move the cursor, clear the screen or forge output lines."""
from __future__ import annotations


def printable(text: object) -> str:
    r"""`text` with every byte of its UTF-8 form outside printable ASCII, and the backslash, written as
    `\xNN`: the same convention as `em_run --info` (runtime_c/tools/em_run.c), so both print a name alike."""
    out = []
    for byte in str(text).encode("utf-8", "surrogateescape"):
        out.append(chr(byte) if 0x20 <= byte < 0x7F and byte != 0x5C else f"\\x{byte:02X}")
    return "".join(out)
