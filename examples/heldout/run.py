"""Held-out check of the fast runtime: two models the runtime was not tuned on, of architectures different from
the bundled example's LeNet / net3 and from each other, trained on the same data, merged, evaluated, timed.

- `vgg_fashion` (Fashion-MNIST 32×32): VGG-style, three stages of two 3×3 'same' convs (16/32/64) + max-pool,
  FC 128, dropout, logits.
- `strided_words` (spoken-word spectrograms 32×32): no pooling at all; three stride-2 'same' convs with
  5×5, 5×5 and 3×3 kernels (24/48/96, BatchNorm, ReLU), two hidden FC layers (192, 64), logits.

Steps: train both (seeded, deterministic; cached in --out like train.py's models), save `.keras` and a float32
`.tflite`, then per preset `edgemerge merge` (with `--calib` on the training sets when --steps > 0),
`edgemerge eval` against the originals on the test sets, and
`edgemerge bench --vs ...tflite --threads 1 --json`. Everything is written to --out, with a summary in
`heldout_summary.json`.

    python -m examples.heldout.run                       # data from examples/build, outputs in examples/build/heldout
    python -m examples.heldout.run --samples small --epochs 1 --presets light --steps 0   # a quick smoke run
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from examples import _common as common
from examples._common import bench_summary, edgemerge_command, run  # noqa: F401 - run is also heldout.run.run

SAMPLES = {"full": None, "small": (512, 256)}      # (train, test) samples per task; None: all
SEED = 0
MANIFEST_NAME = "heldout_models.json"


# ---------------------------------------------------------------------------------------------------
# Architectures (each ends with a Dense "logits" and a separate softmax, which edgemerge drops)
# ---------------------------------------------------------------------------------------------------
def build_vgg_fashion(classes: int = 10):
    import keras
    from keras import layers
    stages = []
    for s, filters in enumerate((16, 32, 64), start=1):
        stages += [layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{s}a"),
                   layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{s}b"),
                   layers.MaxPooling2D(2, name=f"pool{s}")]                       # 32 → 16 → 8 → 4
    return keras.Sequential([
        keras.Input((32, 32, 1), name="image"),
        *stages,
        layers.Flatten(name="flatten"),                                          # 4×4×64 = 1024
        layers.Dense(128, activation="relu", name="fc1"),
        layers.Dropout(0.3, name="dropout"),
        layers.Dense(classes, name="logits"),
        layers.Activation("softmax", name="probs"),
    ], name="vgg_fashion")


def build_strided_words(classes: int = 10):
    import keras
    from keras import layers
    blocks = []
    for i, (filters, kernel) in enumerate(((24, 5), (48, 5), (96, 3)), start=1):
        blocks += [layers.Conv2D(filters, kernel, strides=2, padding="same", use_bias=False, name=f"conv{i}"),
                   layers.BatchNormalization(momentum=0.9, name=f"bn{i}"),
                   layers.ReLU(name=f"relu{i}")]                                 # 32 → 16 → 8 → 4
    return keras.Sequential([
        keras.Input((32, 32, 1), name="spectrogram"),
        *blocks,
        layers.Flatten(name="flatten"),                                          # 4×4×96 = 1536
        layers.Dense(192, activation="relu", name="fc1"),
        layers.Dense(64, activation="relu", name="fc2"),
        layers.Dense(classes, name="logits"),
        layers.Activation("softmax", name="probs"),
    ], name="strided_words")


# task -> how it is trained; the whole entry (with seed, sample count and data hashes) is the cache key
MODELS = {
    "fashion": {"name": "vgg_fashion", "builder": "build_vgg_fashion", "data": "fashion", "epochs": 3,
                "batch_size": 128, "learning_rate": 1e-3},
    "words": {"name": "strided_words", "builder": "build_strided_words", "data": "words", "epochs": 10,
              "batch_size": 64, "learning_rate": 1e-3},
}


def subsample(x: np.ndarray, y: np.ndarray, n: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if n is None or n >= len(y):
        return x, y
    keep = np.sort(np.random.default_rng(seed).permutation(len(y))[:n])
    return x[keep], y[keep]


def prepare_data(data_dir: Path, out: Path, samples: str, seed: int) -> dict[str, dict[str, Path]]:
    """Per task, the train/test .npz files to use: the example's own files, or seeded subsets of them
    written to `out` for --samples small."""
    limits = SAMPLES[samples]
    files = {}
    for task, spec in MODELS.items():
        files[task] = {}
        for k, split in enumerate(("train", "test")):
            source = data_dir / f"{spec['data']}_{split}.npz"
            if limits is None:
                if not source.is_file():
                    raise FileNotFoundError(f"{source} not found; build the data first: "
                                            f"python -m examples.fashion_words.data --out {data_dir}")
                files[task][split] = source
                continue
            x, y = common.load_split(data_dir, spec["data"], split)
            x, y = subsample(x, y, limits[k], seed)
            path = out / f"{spec['data']}_{split}_{samples}.npz"
            np.savez(path, x=x, y=y)
            files[task][split] = path
    return files


def train_models(files: dict, out: Path, epochs: int | None, seed: int, force: bool) -> dict:
    """Trains (or reuses) both models; returns their manifest entries."""
    manifest_path = out / MANIFEST_NAME
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        manifest = {}
    tf = None
    for task, base in MODELS.items():
        spec = {**base, "epochs": epochs or base["epochs"]}
        config = {**spec, "seed": seed, "train_sha256": common.file_sha256(files[task]["train"])}
        name = spec["name"]
        keras_path, tflite_path = out / f"{name}.keras", out / f"{name}.tflite"
        entry = manifest.get(name)
        if not force and entry and entry.get("config") == config and keras_path.is_file() and tflite_path.is_file():
            print(f"heldout: {name} up to date (test accuracy {100 * entry['test_accuracy']:.2f}%)", flush=True)
            continue
        if tf is None:
            tf = common.configure_tensorflow()
        import keras
        with np.load(files[task]["train"]) as npz:
            x_train, y_train = npz["x"].astype(np.float32), npz["y"].astype(np.int64)
        with np.load(files[task]["test"]) as npz:
            x_test, y_test = npz["x"].astype(np.float32), npz["y"].astype(np.int64)
        keras.utils.set_random_seed(seed)
        model = globals()[spec["builder"]](10)
        model.compile(optimizer=keras.optimizers.Adam(spec["learning_rate"]),
                      loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
        print(f"heldout: training {name} ({spec['epochs']} epochs, seed {seed}, {len(y_train)} samples)", flush=True)
        model.fit(x_train, y_train, epochs=spec["epochs"], batch_size=spec["batch_size"], shuffle=True, verbose=2)
        keras_top1 = model.predict(x_test, batch_size=500, verbose=0).argmax(axis=1)
        inference_model = type(model).from_config(model.get_config())       # no optimizer state in the file
        inference_model.set_weights(model.get_weights())
        common.write_atomically(keras_path, inference_model.save)
        common.export_tflite(tf, model, tflite_path)
        tflite_top1 = common.tflite_predict(tflite_path, x_test).argmax(axis=1)
        manifest[name] = {
            "config": config, "task": task, "params": common.count_params(model),
            "test_accuracy": float(np.mean(keras_top1 == y_test)),
            "tflite_test_accuracy": float(np.mean(tflite_top1 == y_test)),
            "tflite_top1_agreement": float(np.mean(tflite_top1 == keras_top1)),
            "keras_bytes": keras_path.stat().st_size, "tflite_bytes": tflite_path.stat().st_size,
        }
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
        print(f"heldout: {name}: test accuracy {100 * manifest[name]['test_accuracy']:.2f}% (TFLite agreement "
              f"{100 * manifest[name]['tflite_top1_agreement']:.2f}%)", flush=True)
    return {MODELS[t]["name"]: manifest[MODELS[t]["name"]] for t in MODELS}


# ---------------------------------------------------------------------------------------------------
# The edgemerge command line
# ---------------------------------------------------------------------------------------------------
def merge_eval_bench(files: dict, out: Path, preset: str, steps: int, runs: int) -> dict:
    em = edgemerge_command()
    names = {t: MODELS[t]["name"] for t in MODELS}
    merged = out / f"merged_{preset}.emm"
    calib = [a for t in MODELS for a in ("--calib", f"{t}={files[t]['train']}")] + ["--steps", steps] if steps else []
    summary = json.loads(run(em + ["merge", *(f"{t}={out / names[t]}.keras" for t in MODELS), "-o", merged,
                                   "--preset", preset, "--seed", SEED, *calib, "--json"], capture=True))
    info = json.loads(run(em + ["inspect", merged, "--json"], capture=True))
    data = [a for t in MODELS for a in ("--data", f"{t}={files[t]['test']}")]
    refs = [a for t in MODELS for a in ("--reference", f"{t}={out / names[t]}.tflite")]
    accuracy = json.loads(run(em + ["eval", merged, *data, *refs, "--json"], capture=True))
    vs = [a for t in MODELS for a in ("--vs", f"{t}={out / names[t]}.tflite")]
    bench = json.loads(run(em + ["bench", merged, *vs, "--threads", 1, "--runs", runs, "--json"], capture=True))
    (out / f"bench_{preset}.json").write_text(json.dumps(bench, indent=2) + "\n")
    calibration = summary.get("calibration")
    return {
        "file": merged.name, "file_bytes": info["file_bytes"], "original_bytes": info["original_bytes"],
        "compression": info["compression"], "context_bytes": info["context_bytes"],
        "calibration_steps": steps,
        "calibration": None if calibration is None else {
            t: {k: calibration["tasks"][t][k] for k in ("accuracy_before", "accuracy_after", "reference_accuracy")}
            for t in calibration["tasks"]},
        "tasks": accuracy["tasks"],
        "bench": bench_summary(bench, runs),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="examples/build", help="folder with fashion_*.npz and words_*.npz")
    parser.add_argument("--out", default="examples/build/heldout", help="output folder")
    parser.add_argument("--samples", choices=sorted(SAMPLES), default="full",
                        help="full data sets, or small seeded subsets (512 train / 256 test per task)")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"epochs of both models (default {MODELS['fashion']['epochs']} for "
                             f"{MODELS['fashion']['name']}, {MODELS['words']['epochs']} for {MODELS['words']['name']})")
    parser.add_argument("--presets", default="accu,light", help="comma-separated merge presets")
    parser.add_argument("--steps", type=int, default=300, help="calibration steps after merging (0: none)")
    parser.add_argument("--runs", type=int, default=200, help="timed bench runs per side")
    parser.add_argument("--seed", type=int, default=SEED, help="training seed")
    parser.add_argument("--force", action="store_true", help="retrain even when the cached models are up to date")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    files = prepare_data(Path(args.data), out, args.samples, args.seed)
    models = train_models(files, out, args.epochs, args.seed, args.force)
    summary = {"samples": args.samples, "models": models, "presets": {}}
    for preset in args.presets.split(","):
        summary["presets"][preset] = merge_eval_bench(files, out, preset, args.steps, args.runs)
    (out / "heldout_summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    print("\nsummary")
    for name, m in models.items():
        print(f"  {name:<14} test accuracy {100 * m['test_accuracy']:.2f}% (TFLite {100 * m['tflite_test_accuracy']:.2f}%)")
    for preset, s in summary["presets"].items():
        tasks = ", ".join(f"{t} {100 * r['accuracy']:.2f}% (drop {100 * r['drop']:+.2f})" for t, r in s["tasks"].items())
        b = s["bench"]
        print(f"  {preset:<6} {s['compression']:.1f}x smaller ({s['file_bytes']} bytes); {tasks}; merged "
              f"{b['merged_ms']['median']:.4f} ms vs TFLite {b['reference_ms']['median']:.4f} ms: "
              f"speedup {b['speedup']:.2f}x")
    print(f"written: {out / 'heldout_summary.json'}")
    return summary


if __name__ == "__main__":
    main()
