"""Silencing native libraries' start-up chatter on the process's stderr (file descriptor 2).

TensorFlow's and LiteRT's C++ code writes banners such as "INFO: Created TensorFlow Lite XNNPACK delegate for
CPU." straight to fd 2, past Python's sys.stderr and past TF_CPP_MIN_LOG_LEVEL; they would bury edgemerge's own
messages. Python exceptions raised inside still propagate (and are printed after fd 2 is restored).
"""
from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def native_stderr_silenced():
    """Points fd 2 at /dev/null for the duration of the block, then restores it."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):   # no usable fd 2 (embedded interpreters): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
