"""Per-segment vs layer-shared codebooks on a real MobileNetV2 (issue 15), the measurement that chose the
`accu` preset's `one_tap_shared` setting (sdk/edgemerge/merging/merge.py).

1. train.py (cached): keras.applications.MobileNetV2(alpha 0.35, 32×32×3, 10 classes) on Fashion-MNIST
   replicated to 3 channels.
2. `merge_files` of that model with the bundled words model at `accu` twice, calibrated the same number of
   steps on the same data: (a) per-segment codebooks everywhere (`one_tap_shared` None), (b) one
   layer-shared codebook [1, C, r] for the groups of 1x1 convs whose per-segment codebooks would cost more
   than 1/8 of their float weights and at least 4 KiB (`one_tap_shared` = SHARED_RC, merge.shared_rc).
3. Each merged file's size, compression against the float originals, size against the two int8 .tflite
   files (TFLite full-integer conversion, float I/O), and test accuracy per task against the originals.

    python -m examples.mobilenetv2_share.measure --data examples/build --out examples/build/mobilenetv2_share

--data holds fashion_{train,test}.npz, words_{train,test}.npz and net3_words.keras (the bundled example's
build folder). Writes measure.json (measure_PRESET.json with --preset) and prints a markdown table.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

SHARED_RC = (4, 256)       # the (r, C) of a layer-shared codebook in variant (b)


def int8_tflite(tf, keras_path: Path, x_train: np.ndarray, dst: Path) -> None:
    import keras

    from examples._common import export_int8_tflite
    if dst.is_file():
        return
    export_int8_tflite(tf, keras.models.load_model(keras_path, compile=False), x_train, dst)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="examples/build")
    parser.add_argument("--out", default="examples/build/mobilenetv2_share")
    parser.add_argument("--steps", type=int, default=300, help="calibration steps of both variants")
    parser.add_argument("--preset", default="accu", help="the preset both variants start from")
    args = parser.parse_args(argv)
    data, out = Path(args.data), Path(args.out)

    from examples.mobilenetv2_share import train
    train.main(["--data", str(data), "--out", str(out)])

    from examples._common import configure_tensorflow, load_split, tflite_predict
    tf = configure_tensorflow()
    from edgemerge.measure.evaluate import evaluate
    from edgemerge.merging import merge
    from edgemerge.workflows.pipeline import merge_files

    models = {"fashion": out / "mobilenetv2_fashion.keras", "words": data / "net3_words.keras"}
    train_files = {"fashion": out / "fashion3_train.npz", "words": data / "words_train.npz"}
    test_files = {"fashion": out / "fashion3_test.npz", "words": data / "words_test.npz"}
    base = merge.PRESETS[args.preset]
    variants = {"per-segment": dataclasses.replace(base, one_tap_shared=None),
                "shared": dataclasses.replace(base, one_tap_shared=SHARED_RC)}
    record = {"preset": args.preset, "steps": args.steps, "shared_rc": list(SHARED_RC), "variants": {}, "int8_tflite": {}}
    for name, preset in variants.items():
        preset_name = f"measure-{args.preset}-{name}"
        merge.PRESETS[preset_name] = preset          # this process only: the two settings compared
        path = out / (f"merged_{name}.emm" if args.preset == "accu" else f"merged_{args.preset}_{name}.emm")
        summary = merge_files({t: str(p) for t, p in models.items()}, path, preset=preset_name,
                              calib={t: str(p) for t, p in train_files.items()}, steps=args.steps,
                              log=lambda m: print(f"  {name}: {m}", flush=True))
        scores = evaluate(path, {t: str(p) for t, p in test_files.items()}, {t: str(p) for t, p in models.items()})
        record["variants"][name] = {
            "file_bytes": summary["file_bytes"], "original_bytes": summary["original_bytes"],
            "compression": summary["compression"],
            "shared_groups": [g["name"] for g in summary.get("groups", []) if g.get("shared_codebook")],
            "tasks": scores["tasks"]}
    for task, keras_path in models.items():
        x_train, _ = (load_split(out, "fashion3", "train") if task == "fashion"
                      else load_split(data, "words", "train"))
        x_test, y_test = load_split(out, "fashion3", "test") if task == "fashion" else load_split(data, "words", "test")
        dst = out / f"{task}.int8.tflite"
        int8_tflite(tf, keras_path, x_train, dst)
        record["int8_tflite"][task] = {"bytes": dst.stat().st_size,
                                       "accuracy": float(np.mean(tflite_predict(dst, x_test).argmax(1) == y_test))}
    int8_bytes = sum(v["bytes"] for v in record["int8_tflite"].values())
    record["int8_tflite_bytes"] = int8_bytes
    (out / ("measure.json" if args.preset == "accu" else f"measure_{args.preset}.json")).write_text(
        json.dumps(record, indent=2) + "\n")

    print(f"\n| codebooks | file bytes | vs float originals | vs int8 .tflite ({int8_bytes:,} B) | "
          "fashion acc (orig) | words acc (orig) |")
    print("|---|---|---|---|---|---|")
    for name, v in record["variants"].items():
        cells = [f"{100 * v['tasks'][t]['accuracy']:.2f} % ({100 * v['tasks'][t]['reference_accuracy']:.2f} %)"
                 for t in ("fashion", "words")]
        print(f"| {name} | {v['file_bytes']:,} | {v['compression']:.2f}x | {int8_bytes / v['file_bytes']:.2f}x | "
              + " | ".join(cells) + " |")
    print("| int8 .tflite | " + f"{int8_bytes:,} | | 1.00x | "
          + " | ".join(f"{100 * record['int8_tflite'][t]['accuracy']:.2f} %" for t in ("fashion", "words")) + " |")


if __name__ == "__main__":
    main()
