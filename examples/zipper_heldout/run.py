"""Held-out check of `edgemerge zipper`: two same-architecture models the zipper was not tuned on, reading the
same input, zippered, picked with `--max-drop 0.02`, then checked with `edgemerge eval` and `edgemerge bench`.

The zipper example (examples/mobilenets) is Fashion-MNIST images with ReLU6 MobileNets and identical heads.
This pair differs in data, task kinds, trunk and heads:

- input: spoken-word spectrograms made like the bundled example's (espeak-ng, 32×32 log-mel;
  examples/fashion_words/data.py) but a larger, fresh draw: seed 1, 2,500 clips per word (20,000 train /
  5,000 test; the example's set is seed 0, 700 per word). With the example's 5,600 training clips the
  zipper lost 3-4 points per task at every k (examples/zipper_heldout/README.md);
- task `word`: which of the 10 words is spoken (keyword spotting);
- task `voice`: is the voice a female or a male one (speaker attribute, 2 classes, 32 / 68 %): espeak-ng's
  female voice variants (f1-f4, Annie, steph, grandma) against the rest, whatever the pitch the clip was drawn
  with (15-85, which blurs the two). The label is recovered from the data set's recorded configuration (its
  seeded clip draws) and checked against the word labels stored in the files;
- trunk (both): conv 3×3/2 24 → 4 × [depthwise 3×3 (stride 1, 2, 1, 2) → BatchNorm → ReLU → point-wise 1×1
  (48, 64, 96, 128) → BatchNorm → ReLU] (plain ReLU, not ReLU6; other widths and depth than the example's);
- heads differ: `word` GAP → Dense 10; `voice` GAP → Dense 32 + ReLU → Dense 2.

Each model trains up to TRAINING["epochs"] epochs and keeps the epoch with the best accuracy on a seeded 10 %
of its training file (Keras EarlyStopping, restore_best_weights): the voice task overfits after a few epochs.

As in the paper (two MobileNets fine-tuned from one ImageNet model), both trunks start from the same seeded
weights and are then trained separately on their own labels.

Steps (each an `edgemerge` command, printed as it runs): train both (cached in --out, keyed by configuration and
data hashes), export float32 `.tflite`; `edgemerge zipper --share block`, `edgemerge zipper pick --max-drop
0.02`, `edgemerge eval` of the picked model against the two `.tflite` originals on the test sets, and
`edgemerge bench` against them. Written to --out, with `zipper_heldout_summary.json`.

    python -m examples.zipper_heldout.run            # builds its words data in --data when missing (~5 min)
    python -m examples.zipper_heldout.run --pair DIR --epochs 1 --steps-per-round 20   # own word_/voice_ files, quick
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from examples import _common as common
from examples._common import bench_summary, edgemerge
from examples.fashion_words import data as fw_data

SEED = 0
WORDS_SEED = 1              # the data set's draw: not the bundled example's (seed 0)
CLIPS_PER_WORD = 2500
TASKS = ("word", "voice")
MANIFEST_NAME = "zipper_heldout_models.json"
STEM = (3, 2, 24)                                  # kernel, stride, filters
BLOCKS = ((1, 48), (2, 64), (1, 96), (2, 128))     # (depthwise stride, point-wise filters)
TRAINING = {"epochs": 30, "patience": 6, "validation_fraction": 0.1, "batch_size": 64, "learning_rate": 2e-3,
            "init_seed": SEED, "shuffle_seed": {"word": 1, "voice": 2}}
# espeak-ng's voice variants that sound female (the others, and a voice's own default, sound male)
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "Annie", "steph", "grandma")


# ---------------------------------------------------------------------------------------------------
# Labels: the voice of each clip, from the words data set's recorded configuration
# ---------------------------------------------------------------------------------------------------
def voice_labels(data_dir: Path) -> dict[str, np.ndarray]:
    """Per split ("train", "test"), 1 where the clip's voice variant is a female one, else 0. The words data set draws every clip's parameters from its seed up front
    (fashion_words.data.draw_clip_params) and splits with stratified_split(seed + 1); both are replayed here
    from the configuration data_manifest.json recorded, and the replayed word labels must equal the files'."""
    try:
        manifest = json.loads((data_dir / fw_data.MANIFEST_NAME).read_text())
        config = manifest["words"]["config"]
    except (OSError, ValueError, KeyError):
        raise FileNotFoundError(f"{data_dir / fw_data.MANIFEST_NAME}: no words data set recorded; build it: "
                                f"python -m examples.fashion_words.data --out {data_dir}") from None
    params = fw_data.draw_clip_params(config, config["seed"])
    words = np.array([p["label"] for p in params], dtype=np.int64)
    voice = np.array([female_voice(p["voice"]) for p in params], dtype=np.int64)
    train_idx, test_idx = fw_data.stratified_split(words, config["test_fraction"], config["seed"] + 1)
    labels = {}
    for split, idx in (("train", train_idx), ("test", test_idx)):
        _, y = common.load_split(data_dir, "words", split)
        if not np.array_equal(y, words[idx]):
            raise ValueError(f"{data_dir}/words_{split}.npz: its labels differ from the clips that "
                             f"{fw_data.MANIFEST_NAME} describes; rebuild the data (python -m "
                             f"examples.fashion_words.data --out {data_dir} --force)")
        labels[split] = voice[idx]
    return labels


def female_voice(voice: str) -> bool:
    """"en-gb+f3" -> True; "de", "en-us+m2", "fi+klatt" -> False."""
    _, _, variant = voice.partition("+")
    return variant in FEMALE_VARIANTS


def prepare_pair(data_dir: Path, out: Path) -> Path:
    """Writes word_/voice_ train/test .npz (the same spectrograms, two labellings) into out/pair; returns it."""
    print(f"zipper_heldout: spoken-words data (seed {WORDS_SEED}, {CLIPS_PER_WORD} clips per word) in {data_dir}",
          flush=True)
    fw_data.build_all(data_dir, seed=WORDS_SEED, clips_per_word=CLIPS_PER_WORD, which=("words",))   # cached
    voice = voice_labels(data_dir)
    pair = out / "pair"
    pair.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        x, words = common.load_split(data_dir, "words", split)
        for task, y in (("word", words), ("voice", voice[split])):
            fw_data.save_npz(pair / f"{task}_{split}.npz", x, y)
    return pair


# ---------------------------------------------------------------------------------------------------
# The two models
# ---------------------------------------------------------------------------------------------------
def build_model(task: str, classes: int):
    import keras
    from keras import layers

    x = inputs = keras.Input((32, 32, 1), name="spectrogram")
    k, stride, filters = STEM
    x = layers.Conv2D(filters, k, strides=stride, padding="same", use_bias=False, name="conv1")(x)
    x = layers.BatchNormalization(momentum=0.9, name="conv1_bn")(x)
    x = layers.ReLU(name="conv1_relu")(x)
    for i, (stride, filters) in enumerate(BLOCKS, start=1):
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"dw{i}")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"dw{i}_bn")(x)
        x = layers.ReLU(name=f"dw{i}_relu")(x)
        x = layers.Conv2D(filters, 1, padding="same", use_bias=False, name=f"pw{i}")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"pw{i}_bn")(x)
        x = layers.ReLU(name=f"pw{i}_relu")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    if task == "voice":
        x = layers.Dense(32, activation="relu", name="fc")(x)
    x = layers.Dense(classes, name="logits")(x)
    outputs = layers.Activation("softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name=f"mobilenet_{task}")


TRUNK_PREFIXES = ("conv1", "dw", "pw")




def train_pair(pair: Path, out: Path, epochs: int | None, force: bool) -> dict:
    """Trains (or reuses) both models; returns their manifest entries."""
    config = {**TRAINING, "epochs": epochs or TRAINING["epochs"], "stem": list(STEM),
              "blocks": [list(b) for b in BLOCKS],
              "data_sha256": {t: common.file_sha256(pair / f"{t}_train.npz") for t in TASKS}}
    manifest_path = out / MANIFEST_NAME
    files = [out / f"mobilenet_{t}.{ext}" for t in TASKS for ext in ("keras", "tflite")]
    cached = common.cached_models(manifest_path, config, files, "zipper_heldout", force)
    if cached is not None:
        return cached

    tf = common.configure_tensorflow()
    import keras

    models = {}
    keras.utils.set_random_seed(config["init_seed"])
    initial_trunk = {l.name: l.get_weights() for l in build_model("word", 10).layers
                     if l.name.startswith(TRUNK_PREFIXES)}
    for task in TASKS:
        x_train, y_train = common.load_split(pair, task, "train")
        x_test, y_test = common.load_split(pair, task, "test")
        classes = int(max(y_train.max(), y_test.max())) + 1
        keras.utils.set_random_seed(config["shuffle_seed"][task])
        model = build_model(task, classes)
        # the same starting trunk for both tasks; the best epoch on a seeded 10 % of the training file (the files
        # are ordered by word)
        epochs = common.train_from(model, initial_trunk, x_train, y_train, config, config["shuffle_seed"][task],
                                   f"zipper_heldout: training mobilenet_{task}")
        keras_top1 = model.predict(x_test, batch_size=500, verbose=0).argmax(axis=1)
        clean = build_model(task, classes)         # no optimizer state in the file
        clean.set_weights(model.get_weights())
        keras_path, tflite_path = out / f"mobilenet_{task}.keras", out / f"mobilenet_{task}.tflite"
        common.write_atomically(keras_path, clean.save)
        common.export_tflite(tf, clean, tflite_path)
        tflite_top1 = common.tflite_predict(tflite_path, x_test).argmax(axis=1)
        models[task] = {"classes": classes, "params": int(clean.count_params()), **epochs,
                        "test_accuracy": float(np.mean(keras_top1 == y_test)),
                        "tflite_test_accuracy": float(np.mean(tflite_top1 == y_test)),
                        "tflite_top1_agreement": float(np.mean(tflite_top1 == keras_top1)),
                        "majority_class_share": float(np.bincount(y_test).max() / len(y_test))}
        print(f"zipper_heldout: mobilenet_{task}: test accuracy {100 * models[task]['test_accuracy']:.2f}% "
              f"(majority class {100 * models[task]['majority_class_share']:.1f}%)", flush=True)
    manifest = {"config": config, "models": models,
                "versions": {"tensorflow": tf.__version__, "keras": keras.__version__}}
    common.write_atomically(manifest_path, lambda p: Path(p).write_text(json.dumps(manifest, indent=2) + "\n"))
    return models


# ---------------------------------------------------------------------------------------------------
# The edgemerge command line
# ---------------------------------------------------------------------------------------------------
def zipper_pick_eval_bench(pair: Path, out: Path, share: str, steps: int, max_drop: float, runs: int,
                           calibration: list[str]) -> dict:
    zipped, picked = out / f"zipped_{share}", out / "picked.emm"
    originals = {t: out / f"mobilenet_{t}" for t in TASKS}
    report, k, accuracy = common.zipper_pick_eval(
        {t: f"{originals[t]}.keras" for t in TASKS}, {t: pair / f"{t}_train.npz" for t in TASKS},
        {t: pair / f"{t}_test.npz" for t in TASKS}, {t: f"{originals[t]}.tflite" for t in TASKS}, zipped, picked,
        ["--share", share, "--steps-per-round", steps, *calibration], max_drop)
    vs = [a for t in TASKS for a in ("--vs", f"{t}={originals[t]}.tflite")]
    # the tasks read the same input: bench takes it once (the first task's test spectrograms)
    bench_data = ["--data", f"{TASKS[0]}={pair / f'{TASKS[0]}_test.npz'}"]
    bench = json.loads(edgemerge(["bench", picked, *vs, *bench_data, "--threads", 1, "--runs", runs, "--json"],
                           capture=True))
    (out / "bench_picked.json").write_text(json.dumps(bench, indent=2) + "\n")
    return {
        "share": share, "steps_per_round": steps, "calibration": report.get("calibration"), "max_drop": max_drop,
        "picked_k": k,
        "depth": report["blocks"],
        "rounds": [{key: r.get(key) for key in ("k", "accuracy", "drop", "file_bytes", "compression",
                                                 "context_bytes", "latency_ms", "speedup", "speedup_vs_tflite")}
                   for r in report["rounds"]],
        "eval": accuracy["tasks"],
        "bench": bench_summary(bench, runs),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="examples/build/zipper_heldout/data",
                        help="folder of the words data set (words_*.npz, data_manifest.json); built when missing")
    parser.add_argument("--pair", default=None,
                        help="use this folder's word_/voice_ train/test .npz instead of deriving them from --data")
    parser.add_argument("--out", default="examples/build/zipper_heldout", help="output folder")
    parser.add_argument("--epochs", type=int, default=None, help=f"epochs per model (default {TRAINING['epochs']})")
    parser.add_argument("--share", choices=("block", "pointwise"), default="block")
    parser.add_argument("--steps-per-round", type=int, default=300)
    parser.add_argument("--learning-rate", default=None, help="zipper's --learning-rate (default: its own)")
    parser.add_argument("--l1-weight", default=None, help="zipper's --l1-weight (default: its own)")
    parser.add_argument("--l1-scope", default=None, help="zipper's --l1-scope (default: its own)")
    parser.add_argument("--max-drop", type=float, default=0.02)
    parser.add_argument("--runs", type=int, default=200, help="timed bench runs per side")
    parser.add_argument("--force", action="store_true", help="retrain even when the cached models are up to date")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        pair = Path(args.pair) if args.pair else prepare_pair(Path(args.data), out)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"zipper_heldout: error: {e}")
    models = train_pair(pair, out, args.epochs, args.force)
    calibration = [a for flag, value in (("--learning-rate", args.learning_rate), ("--l1-weight", args.l1_weight),
                                         ("--l1-scope", args.l1_scope)) if value is not None for a in (flag, value)]
    result = zipper_pick_eval_bench(pair, out, args.share, args.steps_per_round, args.max_drop, args.runs,
                                    calibration)
    summary = {"models": models, **result}
    common.write_atomically(out / "zipper_heldout_summary.json",
                              lambda p: Path(p).write_text(json.dumps(summary, indent=2) + "\n"))

    print("\nsummary")
    for t, m in models.items():
        print(f"  mobilenet_{t:<7} test accuracy {100 * m['test_accuracy']:.2f}% (TFLite "
              f"{100 * m['tflite_test_accuracy']:.2f}%)")
    tasks = ", ".join(f"{t} {100 * r['accuracy']:.2f}% (drop {100 * r['drop']:+.2f})"
                      for t, r in result["eval"].items())
    b = result["bench"]
    print(f"  picked k={result['picked_k']} of {result['depth']} (--share {args.share}, --max-drop {args.max_drop}): "
          f"{tasks}; merged {b['merged_ms']['median']:.4f} ms vs both originals in TFLite "
          f"{b['reference_ms']['median']:.4f} ms: speedup {b['speedup']:.2f}x")
    print(f"written: {out / 'zipper_heldout_summary.json'}")
    return summary


if __name__ == "__main__":
    main()
