"""The bundled example end to end: build the data sets, train the two source models (cached), then merge
them with the `edgemerge` command line, inspect the result and evaluate it against the originals.

    python -m examples.fashion_words.demo --out examples/build
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path


def edgemerge_command() -> list[str]:
    exe = shutil.which("edgemerge")
    return [exe] if exe else [sys.executable, "-m", "edgemerge.cli"]


def run(cmd: list[str], capture: bool = False) -> str:
    print("$ " + " ".join(str(c) for c in cmd), flush=True)
    result = subprocess.run([str(c) for c in cmd], check=True, text=True,
                            stdout=subprocess.PIPE if capture else None)
    return result.stdout if capture else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="examples/build", help="folder for data, models and merged files")
    parser.add_argument("--presets", default="accu,light", help="comma-separated merge presets to run")
    parser.add_argument("--steps", type=int, default=1000,
                        help="calibration steps after merging (0: merge only, no calibration)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    run([sys.executable, "-m", "examples.fashion_words.data", "--out", out])
    run([sys.executable, "-m", "examples.fashion_words.train", "--data", out, "--out", out])

    em = edgemerge_command()
    models = [f"fashion={out / 'lenet_fashion.keras'}", f"words={out / 'net3_words.keras'}"]
    data = ["--data", f"fashion={out / 'fashion_test.npz'}", "--data", f"words={out / 'words_test.npz'}"]
    refs = ["--reference", f"fashion={out / 'lenet_fashion.keras'}",
            "--reference", f"words={out / 'net3_words.keras'}"]
    summary = {}
    for preset in args.presets.split(","):
        merged = out / f"merged_{preset}.emm"
        calib = (["--calib", f"fashion={out / 'fashion_train.npz'}", "--calib", f"words={out / 'words_train.npz'}",
                  "--steps", str(args.steps)] if args.steps else [])
        run(em + ["merge", *models, "-o", merged, "--preset", preset, *calib])
        run(em + ["inspect", merged])
        info = json.loads(run(em + ["inspect", merged, "--json"], capture=True))
        run(em + ["eval", merged, *data, *refs])
        result = json.loads(run(em + ["eval", merged, *data, *refs, "--json"], capture=True))
        summary[preset] = {"calibration_steps": args.steps, "file_bytes": info["file_bytes"], "original_bytes": info["original_bytes"],
                           "compression": info["compression"], "context_bytes": info["context_bytes"],
                           "tasks": result["tasks"]}
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    print("\nsummary")
    for preset, s in summary.items():
        tasks = ", ".join(f"{t}: {100 * r['accuracy']:.2f}% (drop {100 * r['drop']:+.2f}%)"
                          for t, r in s["tasks"].items())
        print(f"  {preset:<6} {s['compression']:.1f}x smaller ({s['file_bytes']} bytes) — {tasks}")
    print(f"written: {out / 'demo_summary.json'}")


if __name__ == "__main__":
    main()
