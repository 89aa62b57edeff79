"""Helpers the examples share (so that no example imports another's runner): TensorFlow set-up, the data
files, TFLite export and prediction, atomic writes, and running the `edgemerge` command line.

The data sets themselves are built by examples/fashion_words/data.py (`python -m examples.fashion_words.data`),
which every example reads its inputs from.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
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
    # A second call in one process (a data builder, then a trainer) finds TensorFlow initialised; setting the
    # same counts again is then skipped (TensorFlow refuses any change after its first use).
    if tf.config.threading.get_intra_op_parallelism_threads() != threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    if tf.config.threading.get_inter_op_parallelism_threads() != threads:
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


def read_manifest(path: Path) -> dict:
    """A JSON manifest of cached outputs, {} when it is missing or unreadable (everything is then rebuilt)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def cached_models(manifest_path: Path, config: dict, files: list, name: str, force: bool = False) -> dict | None:
    """The "models" of a training manifest when it was written with `config` and every file in `files` is
    there (printing their test accuracies), else None: train again."""
    manifest = read_manifest(manifest_path)
    if force or manifest.get("config") != config or not all(Path(f).is_file() for f in files):
        return None
    print(f"{name}: models up to date (" + ", ".join(
        f"{t} {100 * m['test_accuracy']:.2f}%" for t, m in manifest["models"].items()) + ")", flush=True)
    return manifest["models"]


def train_from(model, initial: dict, x_train: np.ndarray, y_train: np.ndarray, config: dict, seed: int,
               what: str) -> dict:
    """Sets every layer of `model` named in `initial` ({layer name: weights}: the pair's common starting trunk),
    compiles it (Adam config["learning_rate"], sparse cross-entropy on its softmax output, accuracy) and trains
    it with `fit_keeping_best_epoch`, announcing `what`. Returns {"best_epoch", "epochs_run"}."""
    import keras

    for layer in model.layers:
        if layer.name in initial:
            layer.set_weights(initial[layer.name])
    model.compile(optimizer=keras.optimizers.Adam(config["learning_rate"]),
                  loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    print(f"{what} ({model.output_shape[-1]} classes, up to {config['epochs']} epochs, {len(y_train)} samples)",
          flush=True)
    return fit_keeping_best_epoch(model, x_train, y_train, config, seed)


def fit_keeping_best_epoch(model, x_train: np.ndarray, y_train: np.ndarray, config: dict, seed: int) -> dict:
    """Trains a compiled Keras model up to config["epochs"] epochs and keeps the epoch with the best accuracy on
    a seeded config["validation_fraction"] of the training data (a seeded draw, not Keras' validation_split,
    which takes the last rows of files ordered by class), stopping after config["patience"] epochs without a
    better one. Returns {"best_epoch", "epochs_run"}."""
    import keras

    held = np.random.default_rng(seed).permutation(len(y_train))
    n_val = round(config["validation_fraction"] * len(y_train))
    val, fit = np.sort(held[:n_val]), np.sort(held[n_val:])
    stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=config["patience"],
                                         restore_best_weights=True)
    history = model.fit(x_train[fit], y_train[fit], epochs=config["epochs"], batch_size=config["batch_size"],
                        shuffle=True, verbose=2, validation_data=(x_train[val], y_train[val]), callbacks=[stop])
    return {"best_epoch": int(np.argmax(history.history["val_accuracy"])) + 1,
            "epochs_run": len(history.history["val_accuracy"])}


INT8_SAMPLES = 256               # representative samples of a TFLite full-integer conversion


def export_int8_tflite(tf, model, x_train: np.ndarray, path: Path, samples: int = INT8_SAMPLES) -> None:
    """A full-integer TFLite model of the Keras model (int8 weights and activations, float input and output),
    its activation ranges calibrated on the first `samples` training inputs: the int8 peer of the examples."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x_train[i:i + 1]] for i in range(samples))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with contextlib.redirect_stdout(io.StringIO()):
        flatbuffer = converter.convert()
    write_atomically(path, lambda tmp: Path(tmp).write_bytes(flatbuffer))


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 4 MiB chunks (the RGB data files are over a GiB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


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


def edgemerge(args: list, capture: bool = False) -> str:
    """Runs `edgemerge ARGS` with the edgemerge this interpreter imports, printing the command."""
    return run(edgemerge_command() + list(args), capture=capture)


def zipper_pick_eval(models: dict, calib: dict, test: dict, references: dict, zipped: Path, picked: Path,
                     zipper_options: list, max_drop: float, run_zipper: bool = True) -> tuple[dict, int, dict]:
    """`edgemerge zipper TASK=MODEL... --calib --val (test) -o zipped OPTIONS` (unless `run_zipper` is False:
    an existing folder), `zipper pick --max-drop` into `picked`, and `eval` of it on the test files against
    `references` ({task: file}). Returns (report.json, the picked k, eval's JSON)."""
    tasks = list(models)
    if run_zipper:
        edgemerge(["zipper", *(f"{t}={models[t]}" for t in tasks),
                   *(a for t in tasks for a in ("--calib", f"{t}={calib[t]}")),
                   *(a for t in tasks for a in ("--val", f"{t}={test[t]}")), "-o", zipped, *zipper_options])
    edgemerge(["zipper", "pick", zipped, "--max-drop", max_drop, "-o", picked])
    report = json.loads((Path(zipped) / "report.json").read_text())
    picked_sha = hashlib.sha256(Path(picked).read_bytes()).hexdigest()
    k = next(r["k"] for r in report["rounds"] if r["sha256"] == picked_sha)
    data = [a for t in tasks for a in ("--data", f"{t}={test[t]}")]
    refs = [a for t in tasks for a in ("--reference", f"{t}={references[t]}")]
    return report, k, json.loads(edgemerge(["eval", picked, *data, *refs, "--json"], capture=True))


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
