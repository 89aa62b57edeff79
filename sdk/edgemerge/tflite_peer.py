"""The peer a user would otherwise deploy: the original models in the TFLite interpreter (XNNPACK).

We use `ai-edge-litert`, the successor of `tflite-runtime`: tflite-runtime's last wheels (2.14) are built
against numpy 1.x and cannot create an interpreter under numpy 2, which this project uses.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import ModelFormatError


class TFLiteModel:
    def __init__(self, path: str | os.PathLike, num_threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFormatError(f"TFLite model {self.path}: no such file")
        try:
            self.interpreter = Interpreter(model_path=str(self.path), num_threads=num_threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ModelFormatError(f"TFLite model {self.path}: cannot load ({e})") from None
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        self.input_shape = tuple(int(d) for d in self._input["shape"][1:])

    def run_one(self, x: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self._input["index"], x.reshape(1, *self.input_shape).astype(np.float32))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output["index"])[0]

    def run_batch(self, x: np.ndarray) -> np.ndarray:
        if tuple(x.shape[1:]) != self.input_shape:
            raise ModelFormatError(f"TFLite model {self.path} expects samples of shape {self.input_shape}, "
                                   f"got {tuple(x.shape[1:])}")
        return np.stack([self.run_one(sample) for sample in x])
