"""Trains the MobileNetV2 of the shared-codebook measurement (issue 15): keras.applications.MobileNetV2
(alpha 0.35, weights=None, 32×32×3 input, 10 classes) on Fashion-MNIST replicated to 3 channels.

Seeded (keras.utils.set_random_seed, op determinism), 2 threads, a few minutes on 2 cores. Writes into --out:
mobilenetv2_fashion.keras, fashion3_train.npz, fashion3_test.npz (x float32 N×32×32×3, y int64) and a
train_manifest.json; cached while the files exist and the configuration is unchanged.

    python -m examples.mobilenetv2_share.train --data examples/build --out examples/build/mobilenetv2_share
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from examples._common import configure_tensorflow, load_split, write_atomically

CONFIG = {"version": 2, "alpha": 0.35, "bn_momentum": 0.9, "input": [32, 32, 3], "classes": 10, "epochs": 3, "batch_size": 128,
          "learning_rate": 2e-3, "seed": 0}
MANIFEST = "train_manifest.json"


def three_channels(x: np.ndarray) -> np.ndarray:
    """N×32×32×1 grey images as N×32×32×3 (the same plane three times)."""
    return np.ascontiguousarray(np.repeat(x, 3, axis=-1))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="examples/build", help="folder with fashion_train/test.npz (1 channel)")
    parser.add_argument("--out", default="examples/build/mobilenetv2_share")
    parser.add_argument("--epochs", type=int, default=CONFIG["epochs"])
    args = parser.parse_args(argv)
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = {**CONFIG, "epochs": args.epochs}
    model_path = out / "mobilenetv2_fashion.keras"
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        manifest = {}
    if manifest.get("config") == config and model_path.is_file():
        print(f"train: up to date in {out}")
        return
    tf = configure_tensorflow()
    import keras
    keras.utils.set_random_seed(config["seed"])
    splits = {}
    for split in ("train", "test"):
        x, y = load_split(data, "fashion", split)
        splits[split] = (three_channels(x), y)
        np.savez_compressed(out / f"fashion3_{split}.npz", x=splits[split][0], y=y)
    model = keras.applications.MobileNetV2(input_shape=tuple(config["input"]), alpha=config["alpha"],
                                           weights=None, classes=config["classes"])
    # Keras' MobileNetV2 uses BatchNorm momentum 0.999: after the ~1,400 steps of a short run its moving
    # statistics still hold mostly their initial values (test accuracy 10 % with 84 % on training batches).
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = config["bn_momentum"]
    model.compile(optimizer=keras.optimizers.Adam(config["learning_rate"]),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.time()
    model.fit(*splits["train"], batch_size=config["batch_size"], epochs=config["epochs"], verbose=2,
              shuffle=True)
    _, accuracy = model.evaluate(*splits["test"], batch_size=256, verbose=0)
    write_atomically(model_path, model.save)   # the temporary keeps the .keras suffix
    record = {"config": config, "test_accuracy": float(accuracy), "train_seconds": round(time.time() - start, 1),
              "params": int(model.count_params())}
    (out / MANIFEST).write_text(json.dumps(record, indent=2))
    print(json.dumps(record))
    del tf


if __name__ == "__main__":
    main()
