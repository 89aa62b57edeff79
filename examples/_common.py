"""Helpers the examples share (so that no example imports another's runner): TensorFlow set-up, the data
files, TFLite export and prediction, atomic writes, and running the `edgemerge` command line.

The data sets themselves are built by examples/fashion_words/data.py (`python -m examples.fashion_words.data`),
which every example reads its inputs from.
"""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

THREADS = 2                      # the build machines have 2 cores; keep TF from oversubscribing them


# ---------------------------------------------------------------------------------------------------
# TensorFlow, data, TFLite
# ---------------------------------------------------------------------------------------------------
def configure_tensorflow(threads: int = THREADS):
    """Imports TensorFlow with explicit thread counts and deterministic ops; returns the module.
    Must run before TensorFlow executes anything (thread settings are fixed at its first use)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    tf.config.experimental.enable_op_determinism()
    return tf


def load_split(data_dir: Path, name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    path = data_dir / f"{name}_{split}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; build the data first: "
                                f"python -m examples.fashion_words.data --out {data_dir}")
    with np.load(path) as npz:
        return npz["x"].astype(np.float32), npz["y"].astype(np.int64)


def count_params(model) -> dict:
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    total = int(sum(np.prod(w.shape) for w in model.weights))
    return {"total": total, "trainable": trainable, "non_trainable": total - trainable}


def export_tflite(tf, model, path: Path) -> None:
    """A float32 TFLite flatbuffer of the Keras model (no quantisation, no other optimisation)."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    # The conversion goes through a SavedModel export that prints every captured variable; keep quiet.
    with contextlib.redirect_stdout(io.StringIO()):
        flatbuffer = converter.convert()
    write_atomically(path, lambda tmp: Path(tmp).write_bytes(flatbuffer))


def write_atomically(path: Path, write) -> None:
    """Calls `write(temporary path)` and then renames the result to `path`, so that other processes
    reading the models (a merge running alongside) never see a half-written file."""
    tmp = path.with_name(f"{path.stem}.tmp{path.suffix}")      # keeps the suffix Keras insists on
    write(str(tmp))
    os.replace(tmp, path)


def tflite_predict(path: Path, x: np.ndarray, batch: int = 500, threads: int = THREADS) -> np.ndarray:
    """Outputs of a .tflite model on `x`, run with the LiteRT interpreter in batches."""
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    outputs = []
    current = None
    for start in range(0, len(x), batch):
        chunk = x[start: start + batch]
        if chunk.shape[0] != current:            # only the last chunk may differ in size
            interpreter.resize_tensor_input(input_index, list(chunk.shape))
            interpreter.allocate_tensors()
            current = chunk.shape[0]
        interpreter.set_tensor(input_index, chunk)
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(output_index).copy())
    return np.concatenate(outputs)


# ---------------------------------------------------------------------------------------------------
# The edgemerge command line
# ---------------------------------------------------------------------------------------------------
def edgemerge_command() -> list[str]:
    # The edgemerge package this interpreter imports (an `edgemerge` on PATH may be another installation).
    return [sys.executable, "-m", "edgemerge.cli"]


def run(cmd: list, capture: bool = False, env: dict | None = None) -> str:
    print("$ " + " ".join(str(c) for c in cmd), flush=True)
    result = subprocess.run([str(c) for c in cmd], check=True, text=True, env=env,
                            stdout=subprocess.PIPE if capture else None)
    return result.stdout if capture else ""


def bench_summary(bench: dict, runs: int) -> dict:
    """The figures of an `edgemerge bench --json` result that the examples' summaries keep."""
    return {"merged_ms": bench["merged_ms"], "reference_ms": bench["reference_ms"], "speedup": bench["speedup"],
            "merged_peak_bytes": bench["merged_peak_bytes"], "reference_peak_bytes": bench["reference_peak_bytes"],
            "runs": runs, "threads": 1}
