"""Accuracy of a merged model (through the C runtime) against the original models."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgemerge.datasets import load_labelled
from edgemerge.emm.constants import NODE_FLAG_INT8_ACT, NODE_FLAG_INT8_TABLES
from edgemerge.errors import EdgemergeError, ModelFormatError
from edgemerge.runtime import Runtime


def reference_predictions(model_path: str | os.PathLike, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Top-1 predictions of an original model file (.keras/.h5 through Keras, .tflite through LiteRT, .onnx
    through ONNX Runtime; `x` is NHWC for all three)."""
    path = Path(model_path)
    if not path.is_file():
        raise ModelFormatError(f"reference model {path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".keras", ".h5", ".hdf5"):
        import keras
        try:
            model = keras.models.load_model(path, compile=False, safe_mode=True)
        except Exception as e:  # Keras raises many types for unreadable files
            raise ModelFormatError(f"reference model {path}: cannot load ({e})") from None
        expected = tuple(model.input_shape[1:])
        if expected != tuple(x.shape[1:]):
            raise EdgemergeError(f"reference model {path} expects samples of shape {expected}, "
                                 f"data has {tuple(x.shape[1:])}")
        return np.concatenate([np.argmax(np.asarray(model(x[i:i + batch], training=False)), axis=-1)
                               for i in range(0, len(x), batch)])
    if suffix == ".tflite":
        from edgemerge.measure.tflite_peer import TFLiteModel
        return np.argmax(TFLiteModel(path).run_batch(x), axis=-1)
    if suffix == ".onnx":
        from edgemerge.measure.onnx_peer import ONNXModel
        return np.argmax(ONNXModel(path).run_batch(x, batch), axis=-1)
    raise ModelFormatError(f"reference model {path}: unsupported file type {suffix!r} (.keras, .h5, .tflite, .onnx)")


def _onnx_task_data(labelled, hwc: tuple[int, ...]):
    from edgemerge.importers.onnx_import import onnx_task_samples

    labelled.x = onnx_task_samples(labelled.x, hwc, f"data file {labelled.path}")
    return labelled


def _float_tables_twin(model_path: str | os.PathLike) -> tuple[Runtime | None, set[str]]:
    """For a file with int8-table layers (FORMAT.md "int8 tables"): the same model with the flag cleared
    (identical codebooks and indices, float tables), and the tasks that run an int8-table layer."""
    from edgemerge import emm
    graph = emm.read_emm(model_path)
    flagged = [i for i, node in enumerate(graph.nodes) if node.int8_tables or node.int8_act]
    if not flagged:
        return None, set()
    tasks = {t.name for t in graph.tasks if set(graph.nodes_for(t.name)) & set(flagged)}
    for node in graph.nodes:
        node.flags &= ~(NODE_FLAG_INT8_TABLES | NODE_FLAG_INT8_ACT)   # and int8 activations (FORMAT.md)
        node.input_scale = 0.0
    return Runtime(emm.to_bytes(graph)), tasks


def evaluate(model_path: str | os.PathLike, data: dict[str, str], references: dict[str, str]) -> dict:
    """Accuracy per task of the merged model, and of each task's reference model when given. For a task
    that runs int8-table layers, also the accuracy of the same file with float tables and the difference
    (`int8_drop`): the cost of the int8 quantisation alone."""
    runtime = Runtime(model_path)
    float_twin, int8_tasks = _float_tables_twin(model_path)
    unknown = [t for t in list(data) + list(references) if t not in runtime.task_names]
    if unknown:
        raise EdgemergeError(f"task(s) {', '.join(sorted(set(unknown)))} not in {model_path} "
                             f"(tasks: {', '.join(runtime.task_names)})")
    without_data = [t for t in references if t not in data]
    if without_data:
        raise EdgemergeError(f"--reference given for {', '.join(without_data)} without --data")
    results: dict[str, dict] = {}
    for task, data_path in data.items():
        info = runtime.task(task)
        onnx_task = Path(references.get(task, "")).suffix.lower() == ".onnx"
        labelled = load_labelled(data_path, None if onnx_task else info.input_shape)
        if onnx_task:   # an ONNX original's data may be NCHW, as its users know it (importers/onnx_import.to_nhwc)
            labelled = _onnx_task_data(labelled, tuple(info.input_shape))
        if labelled.y.size and (labelled.y.min() < 0 or labelled.y.max() >= info.classes):
            raise EdgemergeError(f"data file {data_path}: labels outside 0..{info.classes - 1} for task {task!r}")
        predicted = runtime.predict(task, labelled.x)
        accuracy = float(np.mean(predicted == labelled.y)) if labelled.y.size else 0.0
        ref_accuracy = drop = None
        if task in references:
            ref_pred = reference_predictions(references[task], labelled.x)
            ref_accuracy = float(np.mean(ref_pred == labelled.y)) if labelled.y.size else 0.0
            drop = ref_accuracy - accuracy
        results[task] = {"n": int(labelled.y.size), "accuracy": accuracy,
                         "reference_accuracy": ref_accuracy, "drop": drop}
        if float_twin is not None and task in int8_tasks:
            float_pred = float_twin.predict(task, labelled.x)
            float_accuracy = float(np.mean(float_pred == labelled.y)) if labelled.y.size else 0.0
            results[task].update({"float_tables_accuracy": float_accuracy, "int8_drop": float_accuracy - accuracy})
    return {"tasks": results}
