"""ONNX Runtime as a peer: an original `.onnx` model (a PyTorch export) run the way its users would deploy it,
beside the merged model (`bench --vs`) and as the reference of `eval --reference` and calibration targets.

CPUExecutionProvider with every graph optimisation on (ORT_ENABLE_ALL) and `intra_op_num_threads` = the
bench's thread count (inter-op 1: these graphs run sequentially). The interface is `TFLiteModel`'s
(`prepare_input` / `set_input` / `invoke` / `output`, `run_one` / `run_batch`), so bench and eval treat both
peers alike. Callers pass NHWC float samples, the runtime's layout; they are transposed to the model's NCHW
here, in `prepare_input`, i.e. outside the timed `invoke`.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgemerge.errors import ModelFormatError
from edgemerge.extras import require
from edgemerge.text import printable

KIND = "onnxruntime"


def runtime_version() -> str:
    try:
        from importlib.metadata import version
        return f"onnxruntime {version('onnxruntime')}"
    except Exception:   # pragma: no cover - metadata missing in unusual installs
        return "onnxruntime"


def session_options(num_threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(num_threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3          # warnings about unused initializers etc. are not the user's business
    return opts


def open_session(path: Path, num_threads: int = 1, model_bytes: bytes | None = None):
    """An ONNX Runtime CPU session of `path` (or of `model_bytes`, e.g. with extra outputs), errors as one line."""
    require("onnx", "running ONNX models")
    import onnxruntime as ort

    try:
        return ort.InferenceSession(model_bytes if model_bytes is not None else str(path),
                                    sess_options=session_options(num_threads),
                                    providers=["CPUExecutionProvider"])
    except Exception as e:   # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFormatError(f"ONNX model {printable(path)}: cannot load ({first})") from None


class ONNXModel:
    """One `.onnx` model in its own ONNX Runtime session; same interface as `TFLiteModel`."""
    kind = KIND

    def __init__(self, path: str | os.PathLike, num_threads: int = 1):
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFormatError(f"ONNX model {printable(self.path)}: no such file")
        self.session = open_session(self.path, num_threads)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelFormatError(f"ONNX model {printable(self.path)}: has {len(inputs)} inputs and "
                                   f"{len(outputs)} outputs; expected one of each")
        shape = list(inputs[0].shape)
        if len(shape) != 4 or not all(isinstance(d, int) and d > 0 for d in shape[1:]):
            raise ModelFormatError(f"ONNX model {printable(self.path)}: input shape {shape} is not N x C x H x W "
                                   "with a fixed C, H and W")
        c, h, w = shape[1:]
        self._input_name = inputs[0].name
        self.input_shape: tuple[int, ...] = (h, w, c)          # NHWC, as the runtime and TFLiteModel say it
        out_shape = outputs[0].shape
        self.output_size = int(np.prod([d for d in out_shape[1:] if isinstance(d, int)])) if out_shape else 1
        self.input_dtype = np.dtype(np.float32)
        self._feed: dict[str, np.ndarray] = {}
        self._out: np.ndarray | None = None

    quantised = False
    description = property(lambda self: f"{runtime_version()}, CPUExecutionProvider, "
                                         f"intra_op_num_threads={self.session.get_session_options().intra_op_num_threads}")

    def prepare_input(self, x: np.ndarray) -> np.ndarray:
        """One NHWC float sample [H, W, C] as the model's NCHW input tensor [1, C, H, W]."""
        x = np.asarray(x, np.float32).reshape(1, *self.input_shape)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def set_input(self, prepared: np.ndarray) -> None:
        self._feed = {self._input_name: prepared}

    def invoke(self) -> None:
        self._out = self.session.run(None, self._feed)[0]

    def output(self) -> np.ndarray:
        return np.asarray(self._out, np.float32).reshape(-1)

    def run_one(self, x: np.ndarray) -> np.ndarray:
        self.set_input(self.prepare_input(x))
        self.invoke()
        return self.output()

    def run_batch(self, x: np.ndarray, batch: int = 256) -> np.ndarray:
        """NHWC batch -> logits [N, outputs]; batched (the exports take a dynamic batch), else one by one."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise ModelFormatError(f"ONNX model {printable(self.path)} expects samples of shape {self.input_shape} "
                                   f"(NHWC), got {tuple(x.shape[1:])}")
        nchw = np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2))
        dim0 = self.session.get_inputs()[0].shape[0]
        if isinstance(dim0, int):
            return np.stack([self.run_one(sample) for sample in x]) if len(x) else np.zeros((0, self.output_size))
        parts = [self.session.run(None, {self._input_name: nchw[i:i + batch]})[0] for i in range(0, len(x), batch)]
        return np.concatenate(parts).reshape(len(x), -1) if parts else np.zeros((0, self.output_size), np.float32)


def open_peer(path: str | os.PathLike, num_threads: int = 1):
    """The peer that runs an original model file: `.onnx` -> ONNX Runtime, `.tflite` -> LiteRT (TFLiteModel)."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return ONNXModel(path, num_threads=num_threads)
    from edgemerge.measure.tflite_peer import TFLiteModel
    return TFLiteModel(path, num_threads=num_threads)


__all__ = ["KIND", "ONNXModel", "open_peer", "open_session", "runtime_version", "session_options"]
