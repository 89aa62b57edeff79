"""Builds the zipper example: two MobileNet-style models of the same architecture on the same images,
for different tasks (Wu, Chan & Chen, "On Merging MobileNets for Efficient Multitask Inference", 2019).

- task `a`: Fashion-MNIST's 10 classes.
- task `b`: the same images labelled with 4 super-classes: tops (T-shirt, pullover, coat, shirt),
  trousers & dresses, footwear (sandal, sneaker, ankle boot), bags. A coarser task that needs different
  features near the head (shape families rather than fine garment details) and the same low-level
  features: what zippering bets on.

Both models start from the SAME initial weights (seed 0), as the paper's two MobileNets were both
fine-tuned from the same ImageNet MobileNet; they are then trained separately on their own labels.

Architecture (32×32×1 input, ~40k parameters each): conv 3×3/2 16 → 5 × [depthwise 3×3 (stride 1, 2, 1,
2, 1) → BatchNorm → ReLU6 → point-wise 1×1 (32, 64, 64, 128, 128) → BatchNorm → ReLU6] → global average
pool → dropout 0.2 → Dense (10 or 4) → softmax. Every conv is bias-free and followed by BatchNorm (which
edgemerge folds), as in MobileNet.

Outputs (in --out, default examples/build/mobilenets): mobilenet_a.keras, mobilenet_b.keras,
a_train.npz, a_test.npz, b_train.npz, b_test.npz and pair_manifest.json. Cached: nothing is rebuilt
while the files exist and the configuration (including the data's content hash) is unchanged.

    python -m examples.mobilenets.make_pair --data examples/build --out examples/build/mobilenets
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

THREADS = 2
MANIFEST_NAME = "pair_manifest.json"
# Fashion-MNIST class -> super-class (tops, trousers & dresses, footwear, bags)
SUPER_CLASS = np.array([0, 1, 0, 1, 0, 2, 0, 2, 3, 2], dtype=np.int64)
SUPER_CLASS_NAMES = ("tops", "trousers_dresses", "footwear", "bags")

# (depthwise stride, point-wise filters) per block
BLOCKS = ((1, 32), (2, 64), (1, 64), (2, 128), (1, 128))
STEM_FILTERS = 16
CONFIG = {
    "version": 1,
    "stem": [3, 2, STEM_FILTERS],
    "blocks": [list(b) for b in BLOCKS],
    "dropout": 0.2,
    "epochs": 8,
    "batch_size": 128,
    "learning_rate": 2e-3,
    "init_seed": 0,
    "shuffle_seed": {"a": 1, "b": 2},
    "super_class": SUPER_CLASS.tolist(),
}


def build_mobilenet(classes: int, name: str):
    """The MobileNet-style model described in the module docstring."""
    import keras
    from keras import layers

    def bn(layer_name):
        # momentum 0.9: a few hundred steps per epoch would leave the default's moving statistics lagging.
        return layers.BatchNormalization(momentum=0.9, name=layer_name)

    x = inputs = keras.Input((32, 32, 1), name="image")
    k, stride, filters = CONFIG["stem"]
    x = layers.Conv2D(filters, k, strides=stride, padding="same", use_bias=False, name="conv1")(x)
    x = bn("conv1_bn")(x)
    x = layers.ReLU(6.0, name="conv1_relu")(x)
    for i, (stride, filters) in enumerate(BLOCKS, start=1):
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"dw{i}")(x)
        x = bn(f"dw{i}_bn")(x)
        x = layers.ReLU(6.0, name=f"dw{i}_relu")(x)
        x = layers.Conv2D(filters, 1, padding="same", use_bias=False, name=f"pw{i}")(x)
        x = bn(f"pw{i}_bn")(x)
        x = layers.ReLU(6.0, name=f"pw{i}_relu")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(CONFIG["dropout"], name="dropout")(x)
    x = layers.Dense(classes, name="logits")(x)
    outputs = layers.Activation("softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name=name)


def _save_npz(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, x=x, y=y)
    tmp.replace(path)


def _hash(x: np.ndarray, y: np.ndarray) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(x).tobytes())
    digest.update(np.ascontiguousarray(y).tobytes())
    return digest.hexdigest()


def task_labels(task: str, y10: np.ndarray) -> np.ndarray:
    return y10 if task == "a" else SUPER_CLASS[y10]


def prepare_data(data_dir: Path, out_dir: Path) -> dict:
    """Writes a_/b_ train/test .npz (same images, the two labellings); returns {file: sha256}."""
    from examples.fashion_words.data import make_fashion

    if not all((data_dir / f"fashion_{s}.npz").is_file() for s in ("train", "test")):
        print(f"pair: building Fashion-MNIST in {data_dir}", flush=True)
        make_fashion(data_dir)
    hashes = {}
    for split in ("train", "test"):
        with np.load(data_dir / f"fashion_{split}.npz") as npz:
            x, y = npz["x"].astype(np.float32), npz["y"].astype(np.int64)
        for task in ("a", "b"):
            labels = task_labels(task, y)
            hashes[f"{task}_{split}.npz"] = _hash(x, labels)
            path = out_dir / f"{task}_{split}.npz"
            if not path.is_file():
                _save_npz(path, x, labels)
    return hashes


def _read_manifest(out_dir: Path) -> dict:
    try:
        return json.loads((out_dir / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return {}


def make_pair(data_dir: str | Path = "examples/build", out_dir: str | Path = "examples/build/mobilenets",
              force: bool = False, epochs: int | None = None) -> dict:
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hashes = prepare_data(data_dir, out_dir)
    config = {**CONFIG, "epochs": epochs or CONFIG["epochs"], "data_sha256": hashes}
    manifest = _read_manifest(out_dir)
    files = [out_dir / f"mobilenet_{t}.keras" for t in ("a", "b")]
    if not force and manifest.get("config") == config and all(f.is_file() for f in files):
        print(f"pair: up to date in {out_dir} (" + ", ".join(
            f"{t} {100 * manifest['models'][t]['test_accuracy']:.2f}%" for t in ("a", "b")) + ")")
        return manifest

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(THREADS)
    tf.config.experimental.enable_op_determinism()
    import keras

    with np.load(data_dir / "fashion_train.npz") as npz:
        x_train, y_train = npz["x"].astype(np.float32), npz["y"].astype(np.int64)
    with np.load(data_dir / "fashion_test.npz") as npz:
        x_test, y_test = npz["x"].astype(np.float32), npz["y"].astype(np.int64)

    models = {}
    for task, classes in (("a", 10), ("b", 4)):
        keras.utils.set_random_seed(config["init_seed"])          # the same initial trunk for both tasks
        model = build_mobilenet(classes, f"mobilenet_{task}")
        keras.utils.set_random_seed(config["shuffle_seed"][task])
        model.compile(optimizer=keras.optimizers.Adam(config["learning_rate"]),
                      loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
        print(f"pair: training mobilenet_{task} ({classes} classes, {config['epochs']} epochs)", flush=True)
        started = time.perf_counter()
        model.fit(x_train, task_labels(task, y_train), epochs=config["epochs"], batch_size=config["batch_size"],
                  shuffle=True, verbose=2)
        seconds = time.perf_counter() - started
        probs = model.predict(x_test, batch_size=500, verbose=0)
        accuracy = float(np.mean(probs.argmax(axis=1) == task_labels(task, y_test)))
        # Saved from a weights-only copy: no optimizer state in the file.
        clean = build_mobilenet(classes, f"mobilenet_{task}")
        clean.set_weights(model.get_weights())
        tmp = out_dir / f".mobilenet_{task}.tmp.keras"
        clean.save(tmp)
        tmp.replace(out_dir / f"mobilenet_{task}.keras")
        models[task] = {"classes": classes, "test_accuracy": accuracy, "train_seconds": round(seconds, 1),
                        "params": int(clean.count_params()), "file": f"mobilenet_{task}.keras"}
        print(f"pair: mobilenet_{task}: test accuracy {100 * accuracy:.2f}%, {clean.count_params()} parameters, "
              f"{seconds:.0f} s", flush=True)
    manifest = {"config": config, "models": models,
                "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__}}
    tmp = out_dir / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(out_dir / MANIFEST_NAME)
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the zipper example's two MobileNet-style models.")
    parser.add_argument("--data", default="examples/build", help="folder with fashion_train/test.npz "
                        "(built there from the Debian package when missing)")
    parser.add_argument("--out", default="examples/build/mobilenets", help="output folder")
    parser.add_argument("--epochs", type=int, default=None, help=f"epochs per model (default {CONFIG['epochs']})")
    parser.add_argument("--force", action="store_true", help="retrain even when up to date")
    args = parser.parse_args(argv)
    try:
        make_pair(args.data, args.out, force=args.force, epochs=args.epochs)
    except FileNotFoundError as e:
        sys.exit(f"pair: error: {e}")


if __name__ == "__main__":
    main()
