"""The optional dependency stacks (setup.py `extras_require`) and the one-line error a command gives when the
stack it needs is not installed.

`pip install edgemerge` installs what runs a merged model (numpy, click and the C runtime module); merging,
calibrating and zippering need TensorFlow and scikit-learn (`[merge]`), timing against the originals needs
LiteRT (`[peers]`), the trade-off plots need matplotlib (`[plots]`), ONNX models (PyTorch exports) need onnx and ONNX Runtime
(`[onnx]`). Commands check with `require()` before
importing, so a missing stack is `error: edgemerge merge needs TensorFlow: pip install "edgemerge[merge]"`,
not a ModuleNotFoundError traceback from deep inside the merge.
"""
from __future__ import annotations

import importlib.util

from edgemerge.errors import EdgemergeError

# extra -> (import name, what a user calls it), in the order they are checked
EXTRAS: dict[str, tuple[tuple[str, str], ...]] = {
    "merge": (("tensorflow", "TensorFlow"), ("sklearn", "scikit-learn"), ("h5py", "h5py"), ("scipy", "SciPy")),
    "peers": (("ai_edge_litert", "LiteRT (ai-edge-litert)"),),
    "plots": (("matplotlib", "matplotlib"),),
    "onnx": (("onnx", "onnx"), ("onnxruntime", "ONNX Runtime (onnxruntime)")),
}


class MissingExtraError(EdgemergeError):
    """A command needs an optional dependency stack that is not installed."""


def missing(extra: str) -> list[str]:
    """The packages of `extra` that cannot be imported here (user-facing names)."""
    return [label for module, label in EXTRAS[extra] if importlib.util.find_spec(module) is None]


def require(extra: str, what: str) -> None:
    """Raises MissingExtraError naming the first missing package of `extra` and how to install it.
    `what` names the command or feature for the message, e.g. "edgemerge merge"."""
    absent = missing(extra)
    if absent:
        raise MissingExtraError(f'{what} needs {absent[0]}: pip install "edgemerge[{extra}]"')
