"""Runs the whole zipper sequence on the example pair and writes what examples/mobilenets/README.md shows.

1. `make_pair` (cached): two MobileNet-style models on Fashion-MNIST (a: 10 classes, b: 4 super-classes).
2. `edgemerge zipper` k = 1..5 for each configuration asked for (default: --share block and --share
   pointwise, BatchNorm statistics averaged), each into its own folder under --out with k00..k05.emm, report.json
   and tradeoff.png.
3. `edgemerge zipper pick` with --max-drop 0.02 on each.
4. summary.json and summary.md in --out: every configuration's table, for the README.

    python -m examples.mobilenets.run_zipper                       # block + pointwise, ~12 min on 2 cores
    python -m examples.mobilenets.run_zipper --configs block-fold,pointwise-fold,block-fold-hungarian  # ablations
    python -m examples.mobilenets.run_zipper --retime --out examples/build/zipper-retimed   # timings only

--retime trains nothing: it copies each configuration's k*.emm (checked against its report.json) from
--from (default examples/build/zipper) to --out and measures again only what depends on the runtime:
C latency and context memory of every k, and both originals in TFLite, in interleaved passes (every
model once per pass, best pass kept), so a shared machine's load hits all columns alike. Accuracy columns
stay those of the calibration run (the C runtime's outputs do not change beyond float rounding).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = {
    # name: extra `edgemerge zipper` options (the defaults: --bn stats --align none)
    "block": ["--share", "block"],
    "pointwise": ["--share", "pointwise"],
    "block-fold": ["--share", "block", "--bn", "fold"],
    "pointwise-fold": ["--share", "pointwise", "--bn", "fold"],
    "block-fold-hungarian": ["--share", "block", "--bn", "fold", "--align", "hungarian"],
    "pointwise-hungarian": ["--share", "pointwise", "--align", "hungarian"],
    "pointwise-encode": ["--share", "pointwise", "--encode", "accu"],
}
DEFAULT_CONFIGS = ("block", "pointwise")
STEPS_PER_ROUND = 300
MAX_DROP = 0.02


def run_config(name: str, pair_dir: Path, out_dir: Path, steps: int, max_drop: float) -> dict:
    folder = out_dir / name
    command = [sys.executable, "-m", "edgemerge.cli", "zipper",
               f"a={pair_dir / 'mobilenet_a.keras'}", f"b={pair_dir / 'mobilenet_b.keras'}",
               "--calib", f"a={pair_dir / 'a_train.npz'}", "--calib", f"b={pair_dir / 'b_train.npz'}",
               "--val", f"a={pair_dir / 'a_test.npz'}", "--val", f"b={pair_dir / 'b_test.npz'}",
               "-o", str(folder), "--steps-per-round", str(steps), *CONFIGS[name]]
    print(f"run_zipper: {name}: {' '.join(command[2:])}", flush=True)
    started = time.perf_counter()
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise SystemExit(f"run_zipper: {name}: edgemerge zipper failed (exit {result.returncode})")
    print(result.stdout, flush=True)
    picked = folder / "picked.emm"
    pick = subprocess.run([sys.executable, "-m", "edgemerge.cli", "zipper", "pick", str(folder),
                           "--max-drop", str(max_drop), "-o", str(picked)], capture_output=True, text=True)
    print((pick.stdout or pick.stderr).strip(), flush=True)
    report = json.loads((folder / "report.json").read_text())
    return {"name": name, "options": CONFIGS[name], "table": result.stdout.strip(),
            "picked": pick.stdout.strip() if pick.returncode == 0 else None,
            "pick_error": pick.stderr.strip() if pick.returncode != 0 else None,
            "seconds": round(time.perf_counter() - started, 1), "report": report}


def summarize_existing(name: str, out_dir: Path, max_drop: float) -> dict:
    """The summary entry of a configuration already run (its folder's report.json), picking again."""
    from edgemerge.errors import EdgemergeError
    from edgemerge.zipper.report import format_table, load_report, pick

    folder = out_dir / name
    report = load_report(folder)
    entry = {"name": name, "options": CONFIGS[name], "table": format_table(report), "picked": None,
             "pick_error": None, "seconds": report["seconds"], "report": report}
    try:
        row = pick(folder, max_drop, folder / "picked.emm")
        entry["picked"] = (f"k={row['k']} ({row['file']}, {row['file_bytes']} bytes, {row['compression']:.2f}x; drop "
                           + ", ".join(f"{t} {100 * d:+.2f}" for t, d in row["drop"].items()) + " points)")
    except EdgemergeError as e:
        entry["pick_error"] = str(e)
    return entry


def retime(names: list[str], pair_dir: Path, source_dir: Path, out_dir: Path, passes: int, samples: int) -> None:
    """Re-measures the timing columns of existing runs (see the module docstring) into out_dir/<name>."""
    import hashlib
    import shutil

    import numpy as np
    from edgemerge import emm
    from edgemerge.measure.latency import (
        c_latency_method,
        c_latency_ms,
        tflite_interpreter,
        tflite_pass_ms,
    )
    from edgemerge.runtime import Runtime
    from edgemerge.zipper.report import REPORT_NAME, load_report, tradeoff_png

    x = np.load(pair_dir / "a_test.npz")["x"][:samples]
    reports, runtimes, ungrouped = {}, {}, {}
    for name in names:
        report = load_report(source_dir / name)
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        for r in report["rounds"]:
            data = (source_dir / name / r["file"]).read_bytes()
            if hashlib.sha256(data).hexdigest() != r["sha256"]:
                raise SystemExit(f"run_zipper: {source_dir / name / r['file']} differs from its report")
            shutil.copyfile(source_dir / name / r["file"], folder / r["file"])
            runtimes[name, r["k"]] = Runtime(data)
            if report["share"] == "pointwise" and r["k"] > 0:   # the same file with run groups off, to compare
                ungrouped[name, r["k"]] = Runtime(data, run_groups=False)
            r["context_bytes"] = int(runtimes[name, r["k"]].context_bytes)
        reports[name] = report
    tasks = reports[names[0]]["tasks"]
    originals = {t: reports[names[0]]["originals"][t]["file"] for t in tasks}
    interpreters = {t: tflite_interpreter(originals[t]) for t in tasks}
    for t in tasks:
        tflite_pass_ms(interpreters[t], x)       # warm-up
    best_c = {key: float("inf") for key in runtimes}
    best_ungrouped = {key: float("inf") for key in ungrouped}
    best_tfl = {t: float("inf") for t in tasks}
    for p in range(passes):                       # interleaved: every model once per pass
        for t in tasks:
            best_tfl[t] = min(best_tfl[t], tflite_pass_ms(interpreters[t], x))
        for key, runtime in runtimes.items():
            best_c[key] = min(best_c[key], c_latency_ms(runtime, x, repeats=1))
            if key in ungrouped:
                best_ungrouped[key] = min(best_ungrouped[key], c_latency_ms(ungrouped[key], x, repeats=1))
        print(f"run_zipper: retime pass {p + 1}/{passes}: TFLite pair {sum(best_tfl.values()):.4f} ms, "
              + ", ".join(f"{n} k0 {best_c[n, 0]:.4f} ms" for n in names), flush=True)
    tflite_ms = {**best_tfl, "pair": float(sum(best_tfl.values()))}
    for name, report in reports.items():
        pair_ms = best_c[name, 0]
        for r in report["rounds"]:
            r["latency_ms"] = best_c[name, r["k"]]
            r["speedup"] = pair_ms / r["latency_ms"]
            r["speedup_vs_tflite"] = tflite_ms["pair"] / r["latency_ms"]
            if (name, r["k"]) in best_ungrouped:     # em_run_all with every node alone (EM_LOAD_NO_RUN_GROUPS)
                r["latency_ms_no_run_groups"] = best_ungrouped[name, r["k"]]
        report["latency"] = {
            "samples": int(len(x)), "c_runtime": c_latency_method(runtimes[name, 0]), "pair_c_ms": pair_ms,
            "tflite_ms": tflite_ms,
            "retimed": {"at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "passes": passes,
                        "from": str(source_dir / name), "kernels": runtimes[name, 0].kernels,
                        "how": "interleaved passes, best pass per model; accuracy columns from the calibration run"},
        }
        folder = out_dir / name
        emm.atomic_write_bytes(folder / REPORT_NAME, (json.dumps(report, indent=2) + "\n").encode())
        emm.atomic_write_bytes(folder / "tradeoff.png", tradeoff_png(report))


def markdown(summary: list[dict]) -> str:
    lines = []
    for entry in summary:
        report = entry["report"]
        lines.append(f"### {entry['name']} (`{' '.join(entry['options'])}`)\n")
        tfl = (report.get("latency") or {}).get("tflite_ms") or {}
        tfl_pair = f"{tfl['pair']:.3f}" if isinstance(tfl, dict) and "pair" in tfl else "—"
        lines.append("| k | shared | acc a | drop a | acc b | drop b | bytes | compression | memory | C ms |"
                     " TFLite ms (both originals) | speedup vs k = 0 | vs TFLite |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in report["rounds"]:
            shared = ", ".join(r["shared_layers"]) if report["share"] == "pointwise" else \
                (f"blocks 1–{r['k']}" if r["k"] else "—")
            vs = f"{r['speedup_vs_tflite']:.2f}×" if r.get("speedup_vs_tflite") else "—"
            lines.append(
                f"| {r['k']} | {shared or '—'} | {100 * r['accuracy']['a']:.2f} % | {100 * r['drop']['a']:+.2f} | "
                f"{100 * r['accuracy']['b']:.2f} % | {100 * r['drop']['b']:+.2f} | {r['file_bytes']:,} | "
                f"{r['compression']:.2f}× | {r['context_bytes']:,} | {r['latency_ms']:.3f} | {tfl_pair} | "
                f"{r['speedup']:.2f}× | {vs} |")
        lines.append("")
        off = [r for r in report["rounds"] if r.get("latency_ms_no_run_groups")]
        if off:
            lines.append("the same files with run groups off (every node alone, `EM_LOAD_NO_RUN_GROUPS`): C ms " +
                         ", ".join(f"k={r['k']} {r['latency_ms_no_run_groups']:.4f} (grouped {r['latency_ms']:.4f})"
                                   for r in off) + "\n")
        lines.append(f"picked with --max-drop {MAX_DROP}: {entry['picked'] or entry['pick_error']}\n")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the zipper k = 1..L sequence on the example pair.")
    parser.add_argument("--data", default="examples/build", help="folder with fashion_train/test.npz")
    parser.add_argument("--pair", default="examples/build/mobilenets", help="folder of the pair (make_pair --out)")
    parser.add_argument("--out", default="examples/build/zipper", help="output folder")
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                        help=f"comma-separated configurations ({', '.join(CONFIGS)})")
    parser.add_argument("--steps-per-round", type=int, default=STEPS_PER_ROUND)
    parser.add_argument("--retime", action="store_true",
                        help="train nothing: copy --from's k*.emm to --out and measure the timing columns again")
    parser.add_argument("--from", dest="source", default="examples/build/zipper",
                        help="with --retime: the folder of the calibration run")
    parser.add_argument("--passes", type=int, default=7, help="with --retime: interleaved timing passes")
    parser.add_argument("--samples", type=int, default=200, help="with --retime: test images per pass")
    parser.add_argument("--summary-only", action="store_true",
                        help="run nothing: rebuild summary.json/.md from the configurations' existing folders")
    args = parser.parse_args(argv)
    from .make_pair import make_pair

    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise SystemExit(f"run_zipper: unknown configuration(s) {', '.join(unknown)} (known: {', '.join(CONFIGS)})")
    pair_dir, out_dir = Path(args.pair), Path(args.out)
    if args.retime:
        if out_dir.resolve() == Path(args.source).resolve():
            raise SystemExit("run_zipper: --retime writes to a new folder: give --out other than --from")
        retime(names, pair_dir, Path(args.source), out_dir, args.passes, args.samples)
    if args.summary_only or args.retime:
        summary = [summarize_existing(n, out_dir, MAX_DROP) for n in names]
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        (out_dir / "summary.md").write_text(markdown(summary) + "\n")
        print(markdown(summary))
        return
    make_pair(args.data, pair_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary_path = out_dir / "summary.json"
    try:
        summary = {e["name"]: e for e in json.loads(summary_path.read_text())}
    except (OSError, ValueError):
        summary = {}
    for name in names:
        summary[name] = run_config(name, pair_dir, out_dir, args.steps_per_round, MAX_DROP)
        tmp = summary_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(list(summary.values()), indent=2) + "\n")
        tmp.replace(summary_path)
    (out_dir / "summary.md").write_text(markdown(list(summary.values())) + "\n")
    print(f"run_zipper: wrote {summary_path} and {out_dir / 'summary.md'}")


if __name__ == "__main__":
    main()
