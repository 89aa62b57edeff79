"""The peer a user would otherwise deploy: the original models in the TFLite interpreter (XNNPACK).

We use `ai-edge-litert`, the successor of `tflite-runtime`: tflite-runtime's last wheels (2.14) are built
against numpy 1.x and cannot create an interpreter under numpy 2, which this project uses. The default op
resolver applies the XNNPACK delegate with `num_threads` threads.

Float and quantised models both work: a quantised input (int8/uint8 with a scale and zero point) is
quantised from float here and a quantised output dequantised, so callers always pass and get float32.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgemerge.errors import ModelFormatError
from edgemerge.quiet import native_stderr_silenced


def interpreter_version() -> str:
    try:
        from importlib.metadata import version
        return f"ai-edge-litert {version('ai-edge-litert')}"
    except Exception:   # pragma: no cover - metadata missing in unusual installs
        return "ai-edge-litert"


class TFLiteModel:
    """One `.tflite` model in its own interpreter. `set_input` / `invoke` / `output` split a run so that a
    benchmark can time `invoke` alone; `run_one` / `run_batch` are the convenient forms."""

    def __init__(self, path: str | os.PathLike, num_threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFormatError(f"TFLite model {self.path}: no such file")
        try:
            with native_stderr_silenced():   # XNNPACK's "INFO: Created TensorFlow Lite XNNPACK delegate" line
                self.interpreter = Interpreter(model_path=str(self.path), num_threads=num_threads)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ModelFormatError(f"TFLite model {self.path}: cannot load ({e})") from None
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelFormatError(f"TFLite model {self.path}: has {len(inputs)} inputs and {len(outputs)} "
                                   "outputs; expected one of each")
        self._input, self._output = inputs[0], outputs[0]
        shape = tuple(int(d) for d in self._input["shape"])
        if len(shape) != 4:
            raise ModelFormatError(f"TFLite model {self.path}: input shape {list(shape)} is not (1, H, W, C)")
        self.input_shape: tuple[int, ...] = shape[1:]
        self.output_size = int(np.prod(self._output["shape"][1:]))
        self.input_dtype = np.dtype(self._input["dtype"])
        self._in_scale, self._in_zero = self._quantisation(self._input)
        self._out_scale, self._out_zero = self._quantisation(self._output)
        self.precision = self._precision()

    @staticmethod
    def _quantisation(details: dict) -> tuple[float, int]:
        scale, zero = details.get("quantization", (0.0, 0))
        return float(scale), int(zero)

    def _precision(self) -> str:
        """What the model computes in, from its tensors (not its input type: a full-integer model converted with
        float input and output still runs int8 inside): the type of its quantised tensors ("int8", "uint8",
        "int16"; the first found, in that order) when it has any, else "float16" when it stores float16
        weights, else "float32"."""
        quantised, float16 = set(), False
        for t in self.interpreter.get_tensor_details():
            dtype = np.dtype(t["dtype"])
            scales = t.get("quantization_parameters", {}).get("scales")
            if dtype.kind in "iu" and dtype.itemsize <= 2 and (
                    (scales is not None and len(scales)) or t.get("quantization", (0.0, 0))[0]):
                quantised.add(dtype.name)
            float16 |= dtype == np.float16
        for name in ("int8", "uint8", "int16"):
            if name in quantised:
                return name
        return "float16" if float16 else "float32"

    @property
    def quantised(self) -> bool:
        return self.input_dtype != np.float32

    def prepare_input(self, x: np.ndarray) -> np.ndarray:
        """One float sample [H, W, C] as the interpreter's input tensor (quantised if the model is)."""
        x = np.asarray(x, np.float32).reshape(1, *self.input_shape)
        if self.input_dtype == np.float32:
            return x
        if not self._in_scale:
            raise ModelFormatError(f"TFLite model {self.path}: {self.input_dtype} input without quantisation "
                                   "parameters")
        info = np.iinfo(self.input_dtype)
        q = np.round(x / self._in_scale) + self._in_zero
        return np.clip(q, info.min, info.max).astype(self.input_dtype)

    def set_input(self, prepared: np.ndarray) -> None:
        self.interpreter.set_tensor(self._input["index"], prepared)

    def invoke(self) -> None:
        self.interpreter.invoke()

    def output(self) -> np.ndarray:
        y = self.interpreter.get_tensor(self._output["index"]).reshape(-1)
        if y.dtype != np.float32:
            y = (y.astype(np.float32) - self._out_zero) * self._out_scale
        return y

    def run_one(self, x: np.ndarray) -> np.ndarray:
        self.set_input(self.prepare_input(x))
        self.invoke()
        return self.output()

    def run_batch(self, x: np.ndarray) -> np.ndarray:
        if tuple(x.shape[1:]) != self.input_shape:
            raise ModelFormatError(f"TFLite model {self.path} expects samples of shape {self.input_shape}, "
                                   f"got {tuple(x.shape[1:])}")
        return np.stack([self.run_one(sample) for sample in x])
