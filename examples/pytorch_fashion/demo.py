"""A PyTorch model end to end with the `edgemerge` command line (README "PyTorch users"): a residual CNN trained in
PyTorch and exported to ONNX is converted and checked against ONNX Runtime on the host and on rpi4-aarch64 under
qemu, then merged with the Keras words model of the bundled example (another architecture), calibrated,
evaluated against both originals, compared in size with int8 files of both, and benchmarked against ONNX Runtime
+ LiteRT. Every figure goes to `pytorch_demo_summary.json` in `--out`; the claims are checked at the end (exit 1
when one is missed).

    python -m examples.pytorch_fashion.demo --out examples/build/pytorch      # or: make pytorch-demo

Steps (each cached where its output exists: data by its manifest, the models by their files):
1. data: `python -m examples.fashion_words.data` (Fashion-MNIST from Debian's dataset-fashion-mnist, spoken words
   from espeak-ng), then `vision_{train,test}.npz` in NCHW, the layout PyTorch users have (train_resnet_pt.py);
2. models: resnet_pt.onnx (train_resnet_pt.py, seeded) and net3_words.keras/.tflite (examples/fashion_words/train.py's
   net3_words alone, seed 0);
3. int8 files to compare sizes with: resnet_pt.int8.onnx (onnxruntime.quantization.quantize_static, QDQ, int8
   per-channel weights, uint8 activations, 256 calibration samples) and net3_words.int8.tflite (TFLite full-integer
   quantization, 256 representative samples), each with its test accuracy;
4. `edgemerge convert resnet_pt.onnx -o resnet.emm`: logits of the C runtime on the host (every test sample) and of
   em_run cross-built for rpi4-aarch64 under qemu-aarch64 (the first --qemu-samples) against ONNX Runtime;
5. `edgemerge merge vision=resnet_pt.onnx words=net3_words.keras --preset accu --calib vision=vision_train.npz
   (NCHW) --calib words=words_train.npz --steps S [--layer-rc ...]`, `eval --reference`, `bench --vs`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from examples._common import edgemerge_command, run

REL_TOL = 1e-4                 # C runtime vs ONNX Runtime, relative to the sample's largest |logit|
MAX_DROP = 0.01                # accuracy drop per task allowed at accu (1 point)
INT8_SAMPLES = 256             # calibration samples of the int8 reference files


def max_relative_difference(got: np.ndarray, want: np.ndarray) -> float:
    """max over samples of max |got - want| / max |want| (the sample's largest logit magnitude)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = np.maximum(np.abs(want).max(axis=1), 1e-12)
    return float((np.abs(got - want).max(axis=1) / scale).max())


def onnx_logits(path: Path, x_nchw: np.ndarray) -> np.ndarray:
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x_nchw[i:i + 500]})[0] for i in range(0, len(x_nchw), 500)])


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as npz:
        return npz["x"].astype(np.float32), npz["y"].astype(np.int64)


# ---- 2. the Keras words model (only that one of the bundled example's two) --------------------------------
def words_model(out: Path) -> None:
    if (out / "net3_words.keras").is_file() and (out / "net3_words.tflite").is_file():
        print(f"words model: {out / 'net3_words.keras'} present")
        return
    from examples._common import configure_tensorflow
    from examples.fashion_words.train import MODELS, train_one
    entry = train_one(configure_tensorflow(), "net3_words", MODELS["net3_words"], out, out, seed=0)
    (out / "net3_words.json").write_text(json.dumps(entry, indent=2) + "\n")


# ---- 3. int8 files of both originals -----------------------------------------------------------------------
def int8_resnet(out: Path, x_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> dict:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    dst = out / "resnet_pt.int8.onnx"
    if not dst.is_file():
        samples = x_train[:INT8_SAMPLES]

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.items = iter([{"x": samples[i:i + 1]} for i in range(len(samples))])

            def get_next(self):
                return next(self.items, None)

        pre = out / "resnet_pt.pre.onnx"
        quant_pre_process(str(out / "resnet_pt.onnx"), str(pre))
        quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        pre.unlink()
    accuracy = float(np.mean(onnx_logits(dst, x_test).argmax(1) == y_test))
    return {"file": dst.name, "bytes": dst.stat().st_size, "test_accuracy": accuracy,
            "how": "onnxruntime.quantization.quantize_static, QDQ, per-channel int8 weights, uint8 activations"}


def int8_words(out: Path) -> dict:
    from examples._common import configure_tensorflow, export_int8_tflite, load_split, tflite_predict

    dst = out / "net3_words.int8.tflite"
    x_train, _ = load_split(out, "words", "train")
    x_test, y_test = load_split(out, "words", "test")
    if not dst.is_file():
        tf = configure_tensorflow()
        import keras
        export_int8_tflite(tf, keras.models.load_model(out / "net3_words.keras", compile=False), x_train, dst,
                           INT8_SAMPLES)
    accuracy = float(np.mean(tflite_predict(dst, x_test).argmax(1) == y_test))
    return {"file": dst.name, "bytes": dst.stat().st_size, "test_accuracy": accuracy,
            "how": "TFLite full-integer quantization (int8 weights and activations, float input/output)"}


# ---- 4. convert, C runtime vs ONNX Runtime on the host and on rpi4-aarch64 under qemu -----------------------
def convert_check(out: Path, em: list[str], x_test: np.ndarray, qemu_samples: int) -> dict:
    from edgemerge.deploy.boards import get_board
    from edgemerge.importers.onnx_import import nchw_to_nhwc
    from edgemerge.runtime import Runtime

    converted = out / "resnet.emm"
    run(em + ["convert", out / "resnet_pt.onnx", "-o", converted, "--task", "vision"])
    want = onnx_logits(out / "resnet_pt.onnx", x_test)
    host = Runtime(converted).run("vision", nchw_to_nhwc(x_test))
    result = {"file": converted.name, "bytes": converted.stat().st_size,
              "host": {"samples": len(x_test), "max_rel_diff": max_relative_difference(host, want),
                       "top1_agreement": float(np.mean(host.argmax(1) == want.argmax(1)))}}
    board = get_board("rpi4-aarch64")
    build = out / "rpi4-aarch64"
    if not (build / "em_run").is_file():
        run(em + ["build", "--board", board.name, "-o", build])
    n = min(qemu_samples, len(x_test))
    np.save(out / "qemu_x.npy", nchw_to_nhwc(x_test[:n]))
    started = time.perf_counter()
    run([*board.emulator(), build / "em_run", converted, "--task", "vision", "--input", out / "qemu_x.npy",
         "--output", out / "qemu_y.f32"], env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    on_board = np.fromfile(out / "qemu_y.f32", dtype=np.float32).reshape(n, -1)
    result["rpi4_qemu"] = {"samples": n, "max_rel_diff": max_relative_difference(on_board, want[:n]),
                           "top1_agreement": float(np.mean(on_board.argmax(1) == want[:n].argmax(1))),
                           "emulator": " ".join(board.emulator()), "seconds": round(time.perf_counter() - started, 1)}
    return result


# ---- 5. merge, eval, bench ---------------------------------------------------------------------------------
def merge_eval_bench(out: Path, em: list[str], steps: int, layer_rc: list[str], bench_runs: int) -> dict:
    merged = out / "merged.emm"
    extra = [a for item in layer_rc for a in ("--layer-rc", item)]
    summary = json.loads(run(em + ["merge", f"vision={out / 'resnet_pt.onnx'}", f"words={out / 'net3_words.keras'}",
                                   "-o", merged, "--preset", "accu", "--calib", f"vision={out / 'vision_train.npz'}",
                                   "--calib", f"words={out / 'words_train.npz'}", "--steps", str(steps), *extra,
                                   "--json"], capture=True))
    data = ["--data", f"vision={out / 'vision_test.npz'}", "--data", f"words={out / 'words_test.npz'}"]
    refs = ["--reference", f"vision={out / 'resnet_pt.onnx'}", "--reference", f"words={out / 'net3_words.keras'}"]
    run(em + ["eval", merged, *data, *refs])
    evaluated = json.loads(run(em + ["eval", merged, *data, *refs, "--json"], capture=True))
    bench = json.loads(run(em + ["bench", merged, "--vs", f"vision={out / 'resnet_pt.onnx'}",
                                 "--vs", f"words={out / 'net3_words.tflite'}", *data, "--runs", str(bench_runs),
                                 "--json"], capture=True))
    calibration = summary.get("calibration", {})
    return {"file": merged.name, "bytes": summary["file_bytes"], "original_bytes": summary["original_bytes"],
            "preset": "accu", "layer_rc": layer_rc, "steps": steps,
            "calibration_seconds": calibration.get("seconds"), "best_step": calibration.get("best_step"),
            "tasks": evaluated["tasks"],
            "bench": {"merged_ms": bench["merged_ms"], "reference_ms": bench["reference_ms"],
                      "speedup": bench.get("speedup"), "threads": bench.get("threads"),
                      "peers": {t: {"kind": v.get("reference_kind"), "peer": v.get("reference_peer"),
                                    "top1_agreement": v.get("top1_agreement")} for t, v in bench["tasks"].items()},
                      "merged_peak_bytes": bench.get("merged_peak_bytes"),
                      "reference_peak_bytes": bench.get("reference_peak_bytes")}}


def claims(summary: dict) -> dict[str, bool]:
    conv, merged = summary["convert"], summary["merged"]
    int8_total = summary["int8"]["vision"]["bytes"] + summary["int8"]["words"]["bytes"]
    return {
        "convert: C runtime vs ONNX Runtime within 1e-4 relative on the host": conv["host"]["max_rel_diff"] <= REL_TOL,
        "convert: em_run (rpi4-aarch64, qemu) vs ONNX Runtime within 1e-4 relative":
            conv["rpi4_qemu"]["max_rel_diff"] <= REL_TOL,
        "merged accu: <= 1 point drop per task": all(t["drop"] <= MAX_DROP for t in merged["tasks"].values()),
        "merged file smaller than the two int8 files together": merged["bytes"] < int8_total,
        "bench ran ONNX Runtime and LiteRT as peers":
            {p["kind"] for p in merged["bench"]["peers"].values()} == {"onnxruntime", "tflite"},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="examples/build/pytorch", help="folder for data, models and results")
    ap.add_argument("--steps", type=int, default=1000, help="calibration steps of the merge")
    ap.add_argument("--layer-rc", action="append", default=None, metavar="NAME=r/C",
                    help="r/C overrides of the merge (default: none, plain accu)")
    ap.add_argument("--qemu-samples", type=int, default=500, help="test samples run by em_run under qemu")
    ap.add_argument("--bench-runs", type=int, default=200)
    args = ap.parse_args(argv)
    layer_rc = [v for v in args.layer_rc or [] if v]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    em = edgemerge_command()
    started = time.perf_counter()

    run([sys.executable, "-m", "examples.fashion_words.data", "--out", out])
    from examples.pytorch_fashion.train_resnet_pt import train
    resnet = train(out, out)
    words_model(out)
    x_train, _ = load(out / "vision_train.npz")
    x_test, y_test = load(out / "vision_test.npz")
    summary: dict = {"resnet_pt": resnet,
                     "float_bytes": {"resnet_pt.onnx": (out / "resnet_pt.onnx").stat().st_size,
                                     "net3_words.keras": (out / "net3_words.keras").stat().st_size,
                                     "net3_words.tflite": (out / "net3_words.tflite").stat().st_size},
                     "int8": {"vision": int8_resnet(out, x_train, x_test, y_test), "words": int8_words(out)}}
    del x_train
    summary["convert"] = convert_check(out, em, x_test, args.qemu_samples)
    summary["merged"] = merge_eval_bench(out, em, args.steps, layer_rc, args.bench_runs)
    summary["claims"] = claims(summary)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    (out / "pytorch_demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    for claim, ok in summary["claims"].items():
        print(f"{'ok    ' if ok else 'MISSED'} {claim}")
    return 0 if all(summary["claims"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
