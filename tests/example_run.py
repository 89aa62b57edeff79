"""What the end-to-end example tests (tests/examples/) share: the repository root, a skip when the Debian
Fashion-MNIST package is missing, and the environment that runs `python -m examples...` from the repository."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def require_fashion_mnist() -> None:
    """Skips the test when Fashion-MNIST (Debian's dataset-fashion-mnist, tools/setup.sh) is not installed."""
    sys.path.insert(0, str(ROOT))
    from examples.fashion_words.data import find_fashion_dir
    try:
        find_fashion_dir()
    except Exception as e:   # the Debian data package is set up by tools/setup.sh
        pytest.skip(f"Fashion-MNIST not installed: {e}")


def example_env() -> dict:
    """os.environ with sdk/ and the repository root first on PYTHONPATH (the examples import both)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "sdk"), str(ROOT),
                                                                      os.environ.get("PYTHONPATH")]))}
