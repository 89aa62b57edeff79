"""A zipper run's results: a round's row (accuracy, bytes, memory and latency in the C runtime), report.json,
the text table, the trade-off plot, and `pick` (the deepest round within an accuracy budget).

The report's "format" string and version are a file format: `pick` and `load_report` read them back.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from edgemerge import emm
from edgemerge.emm.graph import MergedGraph
from edgemerge.errors import EdgemergeError
from edgemerge.measure.latency import c_latency_ms

REPORT_NAME = "report.json"
PLOT_NAME = "tradeoff.png"
REPORT_FORMAT = "edgemerge.zipper.report"
REPORT_VERSION = 1


def c_accuracy(runtime, val: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Top-1 accuracy of each task in the C runtime (one em_run_all per sample when the tasks' data share
    their images, else each task on its own)."""
    tasks = list(val)
    xs = [val[t][0] for t in tasks]
    same = all(x.shape == xs[0].shape and np.array_equal(x, xs[0]) for x in xs[1:])
    if same:
        logits, _ = runtime.run_all({tasks[0]: xs[0]})
    else:
        logits = {t: runtime.run(t, val[t][0]) for t in tasks}
    return {t: float(np.mean(np.argmax(logits[t], axis=1) == val[t][1])) for t in tasks}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def round_row(k: int, path: Path, data: bytes, graph: MergedGraph, val, original_acc: dict, original_bytes: int,
               latency_x: np.ndarray | None, pair_ms: float | None, tflite_pair_ms: float | None,
               shared_names: list[str], trunk_nodes: int) -> dict:
    from edgemerge.runtime import Runtime

    runtime = Runtime(data)
    accuracy = c_accuracy(runtime, val)
    row = {
        "k": k, "file": path.name, "sha256": _sha256(data), "file_bytes": len(data),
        "compression": original_bytes / len(data),
        "params": int(sum(t.array.size for t in graph.tensors if t.dtype.name == "F32")),
        "context_bytes": int(runtime.context_bytes),
        "nodes": len(graph.nodes), "trunk_nodes": trunk_nodes, "shared_layers": shared_names,
        "accuracy": accuracy, "drop": {t: original_acc[t] - accuracy[t] for t in accuracy},
    }
    if latency_x is not None:
        ms = c_latency_ms(runtime, latency_x)
        row["latency_ms"] = ms
        row["speedup"] = (pair_ms / ms) if pair_ms else 1.0
        row["speedup_vs_tflite"] = (tflite_pair_ms / ms) if tflite_pair_ms else None
    return row


def row_line(row: dict, tasks: Sequence[str]) -> str:
    acc = ", ".join(f"{t} {100 * row['accuracy'][t]:.2f}% ({100 * -row['drop'][t]:+.2f})" for t in tasks)
    speed = f", {row['latency_ms']:.3f} ms ({row['speedup']:.2f}x)" if row.get("latency_ms") else ""
    return f"zipper: k={row['k']}: {acc}, {row['file_bytes']} bytes ({row['compression']:.2f}x){speed}"


def format_table(report: dict) -> str:
    """The report as a text table: one line per k."""
    tasks = report["tasks"]
    head = f"{'k':>2} " + " ".join(f"{'acc ' + t:>9} {'drop':>6}" for t in tasks)
    head += f" {'bytes':>9} {'compr':>6} {'memory':>9}"
    has_latency = report.get("latency") is not None
    lat = report.get("latency")
    tflite_pair = lat["tflite_ms"].get("pair") if lat and isinstance(lat.get("tflite_ms"), dict) else None
    if has_latency:
        head += f" {'C ms':>7}"
        if tflite_pair:
            head += f" {'TFLite ms':>9}"     # both originals, the same for every k
        head += f" {'speedup':>7}"
        if any(r.get("speedup_vs_tflite") for r in report["rounds"]):
            head += f" {'vs TFLite':>9}"
    lines = [head]
    for r in report["rounds"]:
        line = f"{r['k']:>2} " + " ".join(f"{100 * r['accuracy'][t]:>8.2f}% {100 * r['drop'][t]:>+5.2f}"
                                          for t in tasks)
        line += f" {r['file_bytes']:>9} {r['compression']:>5.2f}x {r['context_bytes']:>9}"
        if has_latency:
            line += f" {r['latency_ms']:>7.3f}"
            if tflite_pair:
                line += f" {tflite_pair:>9.3f}"
            line += f" {r['speedup']:>6.2f}x"
            if r.get("speedup_vs_tflite"):
                line += f" {r['speedup_vs_tflite']:>8.2f}x"
        lines.append(line)
    originals = ", ".join(f"{t} {100 * report['originals'][t]['accuracy']:.2f}%" for t in tasks)
    lines.append(f"originals: {originals}; {report['original_bytes']} bytes of float32 parameters")
    if tflite_pair:
        lines.append(f"both originals in TFLite (XNNPACK, 1 thread): {lat['tflite_ms']['pair']:.3f} ms; "
                     f"in the C runtime (k=0): {lat['pair_c_ms']:.3f} ms")
    lines.append("drop = original - zippered accuracy (points); memory = run-time context bytes; TFLite ms = both "
                 "originals; speedup = against k=0 in the C runtime, vs TFLite = against TFLite ms")
    return "\n".join(lines)


def tradeoff_png(report: dict) -> bytes:
    """The accuracy drop per task and the speedup / compression against k, as PNG bytes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = report["rounds"]
    ks = [r["k"] for r in rounds]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for t in report["tasks"]:
        left.plot(ks, [100 * r["drop"][t] for r in rounds], marker="o", label=f"task {t}")
    left.axhline(0, color="grey", linewidth=0.8)
    left.set_xlabel("k (blocks zippered)")
    left.set_ylabel("accuracy drop (points)")
    left.set_title(f"accuracy drop, share={report['share']}")
    left.legend()
    if rounds and rounds[0].get("latency_ms") is not None:
        right.plot(ks, [r["speedup"] for r in rounds], marker="o", color="C2", label="speedup vs k=0 (C runtime)")
    if rounds and all(r.get("speedup_vs_tflite") for r in rounds):
        right.plot(ks, [r["speedup_vs_tflite"] for r in rounds], marker="^", color="C4",
                   label="speedup vs both originals in TFLite")
    right.plot(ks, [r["compression"] for r in rounds], marker="s", color="C3", label="compression vs originals")
    right.axhline(1, color="grey", linewidth=0.8)
    right.set_xlabel("k (blocks zippered)")
    right.set_ylabel("x")
    right.set_title("speedup and compression")
    right.legend()
    for ax in (left, right):
        ax.set_xticks(ks)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def load_report(folder: str | os.PathLike) -> dict:
    folder = Path(folder)
    path = folder / REPORT_NAME
    if not folder.is_dir():
        raise EdgemergeError(f"{folder}: no such folder (expected the output folder of `edgemerge zipper`)")
    if not path.is_file():
        raise EdgemergeError(f"{folder}: no {REPORT_NAME} (is this the output folder of `edgemerge zipper`?)")
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise EdgemergeError(f"{path}: not a readable report ({e})") from None
    if not isinstance(report, dict) or report.get("format") != REPORT_FORMAT:
        raise EdgemergeError(f"{path}: not a zipper report (format {report.get('format') if isinstance(report, dict) else None!r})")
    if report.get("version") != REPORT_VERSION:
        raise EdgemergeError(f"{path}: report version {report.get('version')}, this edgemerge reads {REPORT_VERSION}")
    return report


def pick(folder: str | os.PathLike, max_drop: float, output: str | os.PathLike) -> dict:
    """Copies the .emm of the deepest round k >= 1 whose every task lost at most `max_drop` (0.02 = 2
    points) to `output`, atomically, after checking the file against the report's hash. Returns the row."""
    if not 0 <= max_drop < 1:
        raise EdgemergeError(f"--max-drop must be in [0, 1) (0.02 = 2 points), got {max_drop}")
    folder = Path(folder)
    report = load_report(folder)
    rounds = [r for r in report.get("rounds", []) if r.get("k", 0) >= 1]
    fitting = [r for r in rounds if max(r["drop"].values()) <= max_drop + 1e-12]
    if not fitting:
        best = min(rounds, key=lambda r: max(r["drop"].values()), default=None)
        hint = (f"; the smallest worst-task drop is {100 * max(best['drop'].values()):.2f} points (k={best['k']})"
                if best else "")
        raise EdgemergeError(f"no zippered model in {folder} keeps every task's accuracy drop within "
                             f"{100 * max_drop:.2f} points{hint}")
    chosen = max(fitting, key=lambda r: r["k"])
    source = folder / chosen["file"]
    try:
        data = source.read_bytes()
    except OSError as e:
        raise EdgemergeError(f"{source}: cannot read ({e.strerror})") from None
    if _sha256(data) != chosen["sha256"]:
        raise EdgemergeError(f"{source}: contents differ from what {REPORT_NAME} recorded (was it changed?)")
    emm.atomic_write_bytes(output, data)
    return chosen
