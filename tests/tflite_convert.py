"""Keras model -> .tflite file through tf.lite.TFLiteConverter, as a user would convert it: float (default),
float16 weights, dynamic-range, full integer ("int8", float I/O) or full integer with int8 I/O ("int8-io", the
peer a user would likely pick on a device; `sample_shape` is the (H, W, C) of the representative samples)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf


def to_tflite(model, path: Path, *, optimise: str | None = None, sample_shape=None) -> Path:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if optimise == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif optimise == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif optimise in ("int8", "int8-io"):
        rng = np.random.default_rng(0)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([rng.random((1, *sample_shape), dtype=np.float32)]
                                                    for _ in range(8))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if optimise == "int8-io":
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    path.write_bytes(converter.convert())
    return path


def merged_tflite_pair(directory: Path, models: dict, int8_names: dict) -> dict:
    """The bench tests' fixture: Keras `models` {task: model} written as float .tflite files (paths[task]),
    int8-io ones for the tasks in `int8_names` {key: task} (paths[key]), and the float ones merged (preset accu)
    into paths["emm"] = directory / "m.emm"."""
    from edgemerge.workflows.pipeline import merge_files

    paths = {task: to_tflite(model, directory / f"{task}.tflite") for task, model in models.items()}
    for key, task in int8_names.items():
        shape = tuple(models[task].input_shape[1:])
        paths[key] = to_tflite(models[task], directory / f"{key}.tflite", optimise="int8-io", sample_shape=shape)
    paths["emm"] = directory / "m.emm"
    merge_files({task: paths[task] for task in models}, paths["emm"], preset="accu")
    return paths
