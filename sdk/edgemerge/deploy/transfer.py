"""What every flash target shares when it writes a file: the error, the fixed names (em_run, the temporary-name
mark), SHA-256 of a payload, the exact form of a temporary name (so leftovers are found as text, never by a
glob), the plain-file-name check and the paced chunks of an upload (--limit)."""
from __future__ import annotations

import hashlib
import re
import time

from edgemerge.errors import EdgemergeError

EM_RUN_NAME = "em_run"
TMP_MARK = ".edgemerge-tmp."
"""Temporary files are `.<name>.edgemerge-tmp.XXXXXX` in the target folder."""
CHUNK_BYTES = 16 * 1024

class FlashError(EdgemergeError):
    """A flash could not be done; the target's previous files are unchanged (the message says otherwise)."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tmp_prefix(name: str) -> str:
    return f".{name}{TMP_MARK}"


_TMP_RANDOM = re.compile(r"[0-9a-f]{12}")
"""The random part of a temporary name a target creates (emm.files.create_temporary: 12 hex digits)."""


def is_our_temporary(entry: str, name: str) -> bool:
    """True only for a name a target creates for `name`: the literal prefix `.<name>.edgemerge-tmp.` then
    12 hex digits. Compared as text, never as a glob: `--name '*'` must not match another model's temporary."""
    prefix = tmp_prefix(name)
    return entry.startswith(prefix) and bool(_TMP_RANDOM.fullmatch(entry[len(prefix):]))


def check_file_name(name: str) -> str:
    if not name or "/" in name or name in (".", "..") or "\0" in name or "\n" in name:
        raise FlashError(f"{name!r} is not a plain file name")
    return name


def throttled_chunks(data: bytes, limit_kib: float | None):
    """`data` in CHUNK_BYTES pieces, paced to `limit_kib` KiB/s when given."""
    started = time.monotonic()
    for start in range(0, len(data), CHUNK_BYTES):
        if limit_kib:
            due = started + start / (limit_kib * 1024.0)
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        yield data[start:start + CHUNK_BYTES]
