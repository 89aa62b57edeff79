"""A pair of small MobileNetV2-style models of one architecture (inverted-residual blocks), for the zipper's
graph tests and the measurement in examples/mobilenets/README.md ("Residual blocks"): built as SourceModel
DAGs with tests/dag_models.py's builder, rebuilt as functional Keras files with `dag_models.to_keras`,
trained briefly on a synthetic RGB task, and read back into SourceModels (the file importer reads only
chains until the Keras functional importer lands).

Architecture (MobileNetV2 at a small size): conv 3x3/2 relu6 (16x16x3 -> 8x8x8) ->
block 1: depthwise 3x3 relu6, project 1x1 -> 8 (no expand, as MobileNetV2's first block; an Add: shapes match)
block 2: expand 1x1 -> 24 relu6, pad, depthwise 3x3/2 relu6, project 1x1 -> 12 (no Add: shape changes)
block 3: expand 1x1 -> 36 relu6, depthwise 3x3 relu6, project 1x1 -> 12, Add
block 4: expand 1x1 -> 36 relu6, depthwise 3x3 relu6, project 1x1 -> 12, Add
then a per-task tail: conv 1x1 -> 32 relu6, global average pool, dense head.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from dag_models import _Builder, to_keras

from edgemerge.emm.constants import Act
from edgemerge.importers.source_model import MODEL_INPUT, SourceModel

HW = 16
TASK_CLASSES = {"a": 4, "b": 3}


def mnv2_like(seed: int, classes: int, name: str = "mnv2") -> SourceModel:
    b = _Builder(name, np.random.default_rng(seed), input_shape=(HW, HW, 3))
    x = b.conv("stem", MODEL_INPUT, 8, k=3, stride=2, act=Act.RELU6)
    d = b.depthwise("b1_dw", x, act=Act.RELU6)
    x = b.join("b1_add", "add", (b.conv("b1_project", d, 8), x))
    e = b.conv("b2_expand", x, 24, act=Act.RELU6)
    d = b.depthwise("b2_dw", b.pad("b2_pad", e, (0, 0, 1, 1)), stride=2, act=Act.RELU6, pads=(0, 0, 0, 0))
    x = b.conv("b2_project", d, 12)
    for i in (3, 4):
        e = b.conv(f"b{i}_expand", x, 36, act=Act.RELU6)
        d = b.depthwise(f"b{i}_dw", e, act=Act.RELU6)
        x = b.join(f"b{i}_add", "add", (b.conv(f"b{i}_project", d, 12), x))
    top = b.conv("top", x, 32, act=Act.RELU6)
    b.dense("head", b.gap("gap", top), classes)
    return b.model()


def synthetic_task(n: int, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Smooth random RGB images; task a: the brightest quadrant (4 classes), task b: the dominant colour
    channel (3 classes). Both need spatial and colour features of the same images."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 1, (n, 4, 4, 3)).astype(np.float32)
    x = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2) + rng.normal(0, 0.1, (n, HW, HW, 3)).astype(np.float32)
    quadrants = x.reshape(n, 2, 8, 2, 8, 3).mean(axis=(2, 4, 5)).reshape(n, 4)
    return x.astype(np.float32), {"a": quadrants.argmax(1), "b": x.mean(axis=(1, 2)).argmax(1)}


def read_back_weights(model: SourceModel, keras_model) -> SourceModel:
    """`model` with the weights of its Keras rebuild (after training)."""
    for layer in model.layers:
        if layer.weights is not None:
            w, bias = keras_model.get_layer(layer.name).get_weights()
            layer.weights, layer.bias = np.asarray(w, np.float32), np.asarray(bias, np.float32)
    return model


def trained_pair(directory: Path, *, epochs: int = 4, n_train: int = 3000, n_val: int = 500,
                 same_init: bool = True) -> dict:
    """Two models of one architecture trained from the same initial weights (as the paper's pair, both
    fine-tuned from one model; `same_init=False`: different initial weights), saved as functional .keras files,
    with calibration / validation .npz files. Returns {"models": task -> SourceModel, "files", "calib", "val"}."""
    import keras

    x, y = synthetic_task(n_train + n_val, seed=0)
    out: dict = {"models": {}, "files": {}, "calib": {}, "val": {}}
    for i, (task, classes) in enumerate(TASK_CLASSES.items()):
        keras.utils.set_random_seed(0)
        source = mnv2_like(0 if same_init else i, classes, name=f"mnv2_{task}")
        keras_model = to_keras(source)
        keras_model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
        keras_model.fit(x[:n_train], y[task][:n_train], epochs=epochs, batch_size=64, verbose=0)
        path = directory / f"mnv2_{task}.keras"
        keras_model.save(path)
        source = read_back_weights(source, keras_model)
        source.path = path
        out["models"][task], out["files"][task] = source, path
        out["calib"][task] = directory / f"{task}_train.npz"
        np.savez(out["calib"][task], x=x[:n_train], y=y[task][:n_train])
        out["val"][task] = directory / f"{task}_val.npz"
        np.savez(out["val"][task], x=x[n_train:], y=y[task][n_train:])
    return out
