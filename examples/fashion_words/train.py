"""Trains the example's two source models, of different architectures, and exports them.

- `lenet_fashion`: the NeuralMerger paper's LeNet on Fashion-MNIST (32×32×1, 10 classes).
- `net3_words`: three conv/BatchNorm/ReLU/pool blocks on the spoken-word spectrograms (32×32×1).

Each is saved as `.keras` and as a float32 `.tflite` (checked with the LiteRT interpreter: same top-1 as
Keras). `models_manifest.json` records accuracies, parameter counts, seeds and epochs; a model whose files
exist and whose configuration (including the data it was trained on) is unchanged is not retrained.

    python -m examples.fashion_words.train --data examples/build --out examples/build
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from examples._common import (  # noqa: F401 - shared helpers, also used as fw_train.* by callers
    THREADS,
    configure_tensorflow,
    count_params,
    export_tflite,
    load_split,
    tflite_predict,
    write_atomically,
)

MANIFEST_NAME = "models_manifest.json"
TFLITE_MIN_AGREEMENT = 0.999     # float32 TFLite vs Keras top-1; only near-ties may flip


# ---------------------------------------------------------------------------------------------------
# Architectures
# ---------------------------------------------------------------------------------------------------
# The last Dense layer of each model is named "logits" and followed by a separate softmax layer: the
# edgemerge importer drops a final softmax, so the merged model outputs exactly this layer's values.

def build_lenet_fashion(classes: int = 10, dropout: float = 0.5):
    """LeNet as in NeuralMerger (Chou et al. 2018): 32×32×1 → conv 5×5×32 → pool → conv 5×5×64 → pool →
    FC 1024 → FC classes."""
    import keras
    from keras import layers
    return keras.Sequential([
        keras.Input((32, 32, 1), name="image"),
        layers.Conv2D(32, 5, padding="valid", activation="relu", name="conv1"),    # 28×28×32
        layers.MaxPooling2D(2, name="pool1"),                                      # 14×14×32
        layers.Conv2D(64, 5, padding="valid", activation="relu", name="conv2"),    # 10×10×64
        layers.MaxPooling2D(2, name="pool2"),                                      # 5×5×64
        layers.Flatten(name="flatten"),                                            # 1600
        layers.Dense(1024, activation="relu", name="fc1"),
        layers.Dropout(dropout, name="dropout"),
        layers.Dense(classes, name="logits"),
        layers.Activation("softmax", name="probs"),
    ], name="lenet_fashion")


def build_net3_words(classes: int = 10):
    """Three 3×3 'same' conv blocks (16/32/64 filters, each BatchNorm → ReLU → max-pool) → FC 256 →
    FC classes."""
    import keras
    from keras import layers
    blocks = []
    for i, filters in enumerate((16, 32, 64), start=1):
        blocks += [
            # No conv bias: the BatchNorm right after has its own shift (β), and edgemerge folds the
            # BatchNorm into the conv anyway.
            layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i}"),
            # momentum 0.9 rather than 0.99: with a few hundred steps per epoch and few epochs, the
            # default leaves the moving statistics lagging behind the weights.
            layers.BatchNormalization(momentum=0.9, name=f"bn{i}"),
            layers.ReLU(name=f"relu{i}"),
            layers.MaxPooling2D(2, name=f"pool{i}"),
        ]                                               # 32 → 16 → 8 → 4
    return keras.Sequential([
        keras.Input((32, 32, 1), name="spectrogram"),
        *blocks,
        layers.Flatten(name="flatten"),                 # 4×4×64 = 1024
        layers.Dense(256, activation="relu", name="fc1"),
        layers.Dense(classes, name="logits"),
        layers.Activation("softmax", name="probs"),
    ], name="net3_words")


# What is trained, on which data, how. The whole entry (plus seed and data hash) is the cache key.
MODELS = {
    "lenet_fashion": {"builder": "build_lenet_fashion", "data": "fashion", "epochs": 10, "batch_size": 128,
                      "learning_rate": 1e-3},
    "net3_words": {"builder": "build_net3_words", "data": "words", "epochs": 15, "batch_size": 64,
                   "learning_rate": 1e-3},
}


# ---------------------------------------------------------------------------------------------------
# Training, export, checks
# ---------------------------------------------------------------------------------------------------

def data_hashes(data_dir: Path, name: str) -> dict:
    """The content hashes of a data set's files from data_manifest.json (empty if there is none)."""
    try:
        manifest = json.loads((data_dir / "data_manifest.json").read_text())
    except (OSError, ValueError):
        return {}
    outputs = manifest.get(name, {}).get("outputs", {})
    return {f: o["sha256"] for f, o in outputs.items() if "sha256" in o}


def train_one(tf, name: str, spec: dict, data_dir: Path, out_dir: Path, seed: int) -> dict:
    """Trains, evaluates, saves and exports one model; returns its manifest entry."""
    import keras
    x_train, y_train = load_split(data_dir, spec["data"], "train")
    x_test, y_test = load_split(data_dir, spec["data"], "test")
    classes = int(max(y_train.max(), y_test.max()) + 1)

    keras.utils.set_random_seed(seed)          # Python, numpy and TF seeds: weights, dropout, shuffling
    model = globals()[spec["builder"]](classes)
    model.compile(optimizer=keras.optimizers.Adam(spec["learning_rate"]),
                  loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    started = time.perf_counter()
    history = model.fit(x_train, y_train, epochs=spec["epochs"], batch_size=spec["batch_size"],
                        shuffle=True, verbose=2)
    train_seconds = time.perf_counter() - started

    keras_probs = model.predict(x_test, batch_size=500, verbose=0)
    keras_top1 = keras_probs.argmax(axis=1)
    test_accuracy = float(np.mean(keras_top1 == y_test))

    keras_path, tflite_path = out_dir / f"{name}.keras", out_dir / f"{name}.tflite"
    # Saved from an uncompiled copy: the .keras file then holds the weights only, not Adam's two moment
    # estimates per weight (which would triple its size and are of no use to inference or merging).
    # (keras.models.clone_model would not do: it compiles the clone like the original.)
    inference_model = type(model).from_config(model.get_config())
    inference_model.set_weights(model.get_weights())
    write_atomically(keras_path, inference_model.save)
    export_tflite(tf, model, tflite_path)
    tflite_top1 = tflite_predict(tflite_path, x_test).argmax(axis=1)
    agreement = float(np.mean(tflite_top1 == keras_top1))
    if agreement < TFLITE_MIN_AGREEMENT:
        raise RuntimeError(f"{name}: the TFLite export agrees with Keras on only {100 * agreement:.2f}% "
                           f"of the test top-1 predictions")

    return {
        "config": None,          # filled in by the caller
        "architecture": spec["builder"],
        "classes": classes,
        "train_samples": int(len(x_train)),
        "test_samples": int(len(x_test)),
        "final_train_accuracy": float(history.history["accuracy"][-1]),
        "test_accuracy": test_accuracy,
        "tflite_test_accuracy": float(np.mean(tflite_top1 == y_test)),
        "tflite_top1_agreement": agreement,
        "params": count_params(model),
        "train_seconds": round(train_seconds, 1),
        "files": {"keras": keras_path.name, "tflite": tflite_path.name,
                  "keras_bytes": keras_path.stat().st_size, "tflite_bytes": tflite_path.stat().st_size},
    }


def model_config(spec: dict, seed: int, data_dir: Path) -> dict:
    return {**spec, "seed": seed, "data_sha256": data_hashes(data_dir, spec["data"])}


def train_all(data_dir: str | Path, out_dir: str | Path, seed: int = 0, epochs: dict | None = None,
              force: bool = False) -> dict:
    """Trains whichever model is missing or out of date; returns the manifest."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / MANIFEST_NAME
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        manifest = {}
    models = manifest.setdefault("models", {})

    tf = None
    for name, base_spec in MODELS.items():
        spec = {**base_spec, "epochs": (epochs or {}).get(name) or base_spec["epochs"]}
        config = model_config(spec, seed, data_dir)
        entry = models.get(name)
        files_present = all((out_dir / f"{name}{ext}").is_file() for ext in (".keras", ".tflite"))
        if not force and entry is not None and entry.get("config") == config and files_present:
            print(f"train: {name} up to date in {out_dir} (test accuracy {100 * entry['test_accuracy']:.2f}%)")
            continue
        if tf is None:
            tf = configure_tensorflow()
        print(f"train: {name} ({spec['epochs']} epochs, seed {seed})", flush=True)
        entry = train_one(tf, name, spec, data_dir, out_dir, seed)
        entry["config"] = config
        models[name] = entry
        import keras
        manifest["versions"] = {"tensorflow": tf.__version__, "keras": keras.__version__,
                                "numpy": np.__version__}
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
        print(f"train: {name}: test accuracy {100 * entry['test_accuracy']:.2f}% "
              f"(TFLite {100 * entry['tflite_test_accuracy']:.2f}%, top-1 agreement "
              f"{100 * entry['tflite_top1_agreement']:.2f}%), {entry['params']['total']} parameters, "
              f"{entry['train_seconds']} s", flush=True)
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train and export the example's two source models.")
    parser.add_argument("--data", required=True, help="folder with the .npz data sets (see data.py)")
    parser.add_argument("--out", required=True, help="output folder for models and models_manifest.json")
    parser.add_argument("--epochs-fashion", type=int, default=None,
                        help=f"epochs of lenet_fashion (default {MODELS['lenet_fashion']['epochs']})")
    parser.add_argument("--epochs-words", type=int, default=None,
                        help=f"epochs of net3_words (default {MODELS['net3_words']['epochs']})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="retrain even when up to date")
    args = parser.parse_args(argv)
    try:
        train_all(args.data, args.out, seed=args.seed, force=args.force,
                  epochs={"lenet_fashion": args.epochs_fashion, "net3_words": args.epochs_words})
    except FileNotFoundError as e:
        sys.exit(f"train: error: {e}")


if __name__ == "__main__":
    main()
