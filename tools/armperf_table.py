#!/usr/bin/env python3
"""Modelled ARM cost of the example models: runs ../shared/armperf on merged files and their original
TFLite models, and writes one table into README.md between the markers

    <!-- armperf-table:begin -->  ...  <!-- armperf-table:end -->

The figures are *modelled* (exact instruction counts under qemu-user, llvm-mca cycle estimates; see
armperf's README), never timings, and the table says so. One row per merged file and core: em_run's
instructions and resource / timeline cycles per inference for both tasks together, and TFLite / em_run
for the float32 and the int8 originals (above 1: the merged model is cheaper).

    python tools/armperf_table.py --models DIR [--presets light,accu,light4] [--cores a72,a76]
                                  [--readme README.md] [--json-dir DIR] [--dry-run]

DIR holds PRESET.emm, lenet_fashion.tflite, lenet_fashion.int8.tflite, net3_words.tflite,
net3_words.int8.tflite, fashion_test.npz and words_test.npz (the example pair; --pair overrides the
names). armperf is run from the project root, so it measures this checkout's runtime.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- armperf-table:begin -->"
END = "<!-- armperf-table:end -->"
# task -> (original model stem, test data file)
PAIR = {"fashion": ("lenet_fashion", "fashion_test.npz"), "words": ("net3_words", "words_test.npz")}


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def run_armperf(armperf: Path, models: Path, preset: str, cores: str, out_json: Path) -> dict:
    emm = models / f"{preset}.emm"
    cmd = [str(armperf), "run", str(emm), "--project", str(ROOT), "--cores", cores, "--json", str(out_json)]
    for task, (stem, data) in PAIR.items():
        cmd += ["--input", f"{task}={models / data}"]
        for suffix in (".tflite", ".int8.tflite"):
            cmd += ["--vs", f"{task}={models / (stem + suffix)}"]
    print(f"armperf_table: {preset} on {cores}", file=sys.stderr)
    done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        fail(f"armperf failed on {emm.name}: {done.stderr.strip().splitlines()[-1] if done.stderr else done.returncode}")
    return json.loads(out_json.read_text())


def rows(preset: str, result: dict) -> list[str]:
    out = []
    for core, data in result["cores"].items():
        em = data["totals"]["em"]
        peers = data["totals"]["peers"]

        def ratio(kind: str, key: str) -> str:
            speedup = peers.get(kind, {}).get("speedup", {}).get(key)
            return "–" if speedup is None else f"{speedup:.2f}×"

        out.append(f"| {preset} | {data['core']['title']} | {em['insns'] / 1e6:.2f} | {em['cycles_resource'] / 1e6:.2f} "
                   f"| {em['cycles_timeline'] / 1e6:.2f} | {ratio('f32', 'insns')} / {ratio('f32', 'cycles_resource')} "
                   f"| {ratio('int8', 'insns')} / {ratio('int8', 'cycles_resource')} / {ratio('int8', 'cycles_timeline')} |")
    return out


def peer_rows(result: dict) -> list[str]:
    out = []
    for core, data in result["cores"].items():
        for kind, p in sorted(data["totals"]["peers"].items()):
            out.append(f"| TFLite {kind} | {data['core']['title']} | {p['insns'] / 1e6:.2f} | "
                       f"{p['cycles_resource'] / 1e6:.2f} | {p['cycles_timeline'] / 1e6:.2f} | | |")
    return out


def table(results: dict[str, dict]) -> str:
    first = next(iter(results.values()))
    lines = [
        "**Modelled, not measured** (`tools/armperf_table.py`, `../shared/armperf`): per inference of both tasks, "
        "1 thread, exact instruction counts of em_run and of LiteRT/XNNPACK under qemu-user, cycles from "
        "llvm-mca (LLVM's Cortex-A57 model for both cores: trust the A76 ratios more than its absolute figures). "
        f"Project {first['project'].get('commit', 'without git')}{' (uncommitted changes)' if first['project'].get('dirty') else ''}, "
        f"{first['date'][:10]}. Speed-up = TFLite / em_run (above 1: the merged model is cheaper).",
        "",
        "| file | core | M instr | M cycles resource | M cycles timeline | vs TFLite f32 (instr / resource) "
        "| vs TFLite int8 (instr / resource / timeline) |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for preset, result in results.items():
        lines += rows(preset, result)
    lines += peer_rows(first)
    return "\n".join(lines)


def write_readme(readme: Path, text: str) -> None:
    old = readme.read_text()
    if BEGIN not in old or END not in old or old.index(BEGIN) > old.index(END):
        fail(f"{readme} has no '{BEGIN}' ... '{END}' section")
    new = old[:old.index(BEGIN) + len(BEGIN)] + "\n" + text + "\n" + old[old.index(END):]
    tmp = readme.with_name(readme.name + ".tmp")
    tmp.write_text(new)
    tmp.replace(readme)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, required=True, help="folder with the merged files and originals")
    ap.add_argument("--presets", default="light,accu,light4", help="merged files PRESET.emm to measure")
    ap.add_argument("--cores", default="a72,a76", help="armperf cores (a72, a76, a53, a53-32)")
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    # ../shared/armperf from the project root (a worktree one level deeper: ../../shared)
    default_armperf = next((p for p in (ROOT.parent / "shared" / "armperf" / "armperf",
                                        ROOT.parent.parent / "shared" / "armperf" / "armperf") if p.is_file()),
                           ROOT.parent / "shared" / "armperf" / "armperf")
    ap.add_argument("--armperf", type=Path, default=default_armperf)
    ap.add_argument("--json-dir", type=Path, help="keep armperf's JSON per preset here")
    ap.add_argument("--from-json", action="store_true", help="reuse PRESET.json from --json-dir (no armperf run)")
    ap.add_argument("--dry-run", action="store_true", help="print the table, leave the README alone")
    args = ap.parse_args(argv)

    presets = [p for p in args.presets.split(",") if p]
    if not args.from_json:
        if not args.armperf.is_file():
            fail(f"armperf not found at {args.armperf} (--armperf PATH)")
        needed = [f"{p}.emm" for p in presets] + [f for stem, data in PAIR.values()
                                                   for f in (f"{stem}.tflite", f"{stem}.int8.tflite", data)]
        missing = [n for n in needed if not (args.models / n).is_file()]
        if missing:
            fail(f"missing in {args.models}: {', '.join(missing)}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        where = args.json_dir or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        for preset in presets:
            path = where / f"{preset}.json"
            if args.from_json:
                if not path.is_file():
                    fail(f"no {path} to reuse")
                results[preset] = json.loads(path.read_text())
            else:
                results[preset] = run_armperf(args.armperf, args.models, preset, args.cores, path)
    text = table(results)
    if args.dry_run:
        print(text)
    else:
        write_readme(args.readme, text)
        print(f"armperf_table: wrote the table into {args.readme}", file=sys.stderr)


if __name__ == "__main__":
    main()
