"""Trains the residual pair of issue 15's merge example (two architectures that are not in the repository):

- `garment`: keras.applications.MobileNetV2(input_shape=(64, 64, 3), alpha=0.35, weights=None, classes=10) on the
  RGB garments (examples/residual_pair/data.py: Fashion-MNIST painted in colour, 24,000 train / 10,000 test);
- `words`: a ResNet-8 (conv3x3 16 + BN + ReLU, three residual blocks of 16/32/64 channels with two conv3x3+BN
  each, stride 2 and a 1x1 conv+BN projection shortcut where the shape changes, Add, ReLU; global average pool;
  Dense 10) on the bundled example's spoken words (32x32x1 log-mel).

Each model is written as .keras, float .tflite (examples/_common.export_tflite) and full-integer int8 .tflite
(TFLite full-integer conversion with float I/O, 256 representative training samples), the sizes the merged
files are compared with. Seeded (keras.utils.set_random_seed, op determinism), 2 threads; cached per model by
train_manifest.json while the files exist and the configuration is unchanged. Missing data is built first
(examples.fashion_words.data into --data, examples.residual_pair.data into --out).

    python -m examples.residual_pair.train --data examples/build --out examples/build/residual_pair
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from examples._common import configure_tensorflow, export_int8_tflite, export_tflite, load_split, write_atomically

MANIFEST = "train_manifest.json"
# BatchNorm momentum 0.9 for both: Keras' MobileNetV2 defaults to 0.999, whose moving statistics still hold
# mostly their initial values after the few hundred steps of a short run (examples/mobilenetv2_share/train.py).
MODELS = {
    "garment": {"version": 1, "arch": "keras.applications.MobileNetV2", "alpha": 0.35, "input": [64, 64, 3],
                "classes": 10, "bn_momentum": 0.9, "epochs": 4, "batch_size": 64, "learning_rate": 2e-3,
                "seed": 0, "data": "garment64"},
    "words": {"version": 1, "arch": "resnet8", "widths": [16, 32, 64], "input": [32, 32, 1], "classes": 10,
              "bn_momentum": 0.9, "epochs": 20, "batch_size": 64, "learning_rate": 2e-3, "seed": 0,
              "data": "words"},
}
FILE_STEMS = {"garment": "mobilenetv2_garment", "words": "resnet8_words"}


def build_resnet8(keras, spec: dict):
    """ResNet-8 (He et al.'s CIFAR ResNet with one block per stage), Keras functional."""
    layers = keras.layers
    momentum = spec["bn_momentum"]

    def conv_bn(x, filters, kernel, stride, name):
        x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
        return layers.BatchNormalization(momentum=momentum, name=f"{name}_bn")(x)

    inputs = keras.Input(tuple(spec["input"]), name="input")
    x = layers.ReLU(name="stem_relu")(conv_bn(inputs, spec["widths"][0], 3, 1, "stem"))
    for i, width in enumerate(spec["widths"]):
        stride = 1 if i == 0 else 2
        shortcut = x
        if stride != 1 or x.shape[-1] != width:
            shortcut = conv_bn(x, width, 1, stride, f"block{i}_proj")
        y = layers.ReLU(name=f"block{i}_relu1")(conv_bn(x, width, 3, stride, f"block{i}_a"))
        y = conv_bn(y, width, 3, 1, f"block{i}_b")
        x = layers.ReLU(name=f"block{i}_out")(layers.Add(name=f"block{i}_add")([y, shortcut]))
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(spec["classes"], activation="softmax", name="logits")(x)
    return keras.Model(inputs, outputs, name="resnet8_words")


def build_mobilenetv2(keras, spec: dict):
    model = keras.applications.MobileNetV2(input_shape=tuple(spec["input"]), alpha=spec["alpha"], weights=None,
                                           classes=spec["classes"])
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = spec["bn_momentum"]
    return model


def ensure_data(data: Path, out: Path) -> None:
    """The spoken words and 32x32 Fashion files (bundled example) and the 64x64 RGB garments."""
    needed = [data / f"{n}_{s}.npz" for n in ("fashion", "words") for s in ("train", "test")]
    if not all(p.is_file() for p in needed):
        from examples.fashion_words import data as fashion_words_data
        fashion_words_data.build_all(data)
    from examples.residual_pair import data as rgb_data
    rgb_data.build(data, out, MODELS["garment"]["input"][0])


def data_dir(task: str, data: Path, out: Path) -> Path:
    return out if task == "garment" else data




def model_files(out: Path, task: str) -> dict:
    stem = FILE_STEMS[task]
    return {"keras": out / f"{stem}.keras", "tflite": out / f"{stem}.tflite", "int8": out / f"{stem}.int8.tflite"}


def train_one(tf, keras, task: str, spec: dict, data: Path, out: Path) -> dict:
    from examples._common import tflite_predict
    keras.utils.set_random_seed(spec["seed"])
    x_train, y_train = load_split(data_dir(task, data, out), spec["data"], "train")
    x_test, y_test = load_split(data_dir(task, data, out), spec["data"], "test")
    model = build_mobilenetv2(keras, spec) if task == "garment" else build_resnet8(keras, spec)
    model.compile(optimizer=keras.optimizers.Adam(spec["learning_rate"]),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.time()
    model.fit(x_train, y_train, batch_size=spec["batch_size"], epochs=spec["epochs"], verbose=2, shuffle=True)
    seconds = time.time() - start
    _, accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    files = model_files(out, task)
    write_atomically(files["keras"], model.save)
    export_tflite(tf, model, files["tflite"])
    export_int8_tflite(tf, model, x_train, files["int8"])
    return {"config": spec, "test_accuracy": float(accuracy), "train_seconds": round(seconds, 1),
            "params": int(model.count_params()),
            "float_tflite_accuracy": float(np.mean(tflite_predict(files["tflite"], x_test).argmax(1) == y_test)),
            "int8_tflite_accuracy": float(np.mean(tflite_predict(files["int8"], x_test).argmax(1) == y_test)),
            "bytes": {kind: path.stat().st_size for kind, path in files.items()}}


def train_all(data: Path, out: Path, epochs: dict | None = None, tasks=tuple(MODELS)) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    ensure_data(data, out)
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        manifest = {}
    tf = keras = None
    for task in tasks:
        spec = {**MODELS[task], "epochs": (epochs or {}).get(task) or MODELS[task]["epochs"]}
        if manifest.get(task, {}).get("config") == spec and all(p.is_file() for p in model_files(out, task).values()):
            print(f"train: {task} up to date in {out}", flush=True)
            continue
        if tf is None:
            tf = configure_tensorflow()
            import keras
        print(f"train: {task} ({spec['arch']}, {spec['epochs']} epochs, seed {spec['seed']})", flush=True)
        manifest[task] = train_one(tf, keras, task, spec, data, out)
        write_atomically(out / MANIFEST, lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=2) + "\n"))
        print(json.dumps({task: manifest[task]}), flush=True)
    return manifest


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="examples/build",
                        help="folder with fashion_*.npz and words_*.npz (built there when missing)")
    parser.add_argument("--out", default="examples/build/residual_pair")
    parser.add_argument("--task", choices=tuple(MODELS), action="append", help="train only these (default both)")
    parser.add_argument("--epochs-garment", type=int, default=None)
    parser.add_argument("--epochs-words", type=int, default=None)
    args = parser.parse_args(argv)
    train_all(Path(args.data), Path(args.out), {"garment": args.epochs_garment, "words": args.epochs_words},
              tuple(args.task or MODELS))


if __name__ == "__main__":
    main()
