"""`edgemerge zipper run`: two trained models of the same architecture fused block by block (Wu, Chan & Chen,
"On Merging MobileNets for Efficient Multitask Inference", EMC² 2019), round by round, end to end.

The pieces are in zipper/: `layout` (the pair's blocks), `fuse` (averaging, BatchNorm, Hungarian alignment),
`rounds` (the graph of round k, read-back after calibration), `report` (rows, report.json, table, plot, pick).
This module imports the files, checks the data, times the originals, runs the rounds with calibration and
writes one `.emm` per round (kNN.emm, k00 = the unmerged pair in one file), `report.json` and `tradeoff.png`
into a folder, all atomically.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from edgemerge import emm
from edgemerge.errors import EdgemergeError
from edgemerge.importers import SourceModel
from edgemerge.measure.latency import c_latency_method, tflite_latency_ms
from edgemerge.zipper.fuse import (
    ALIGN_MODES,
    BN_MODES,
    DEFAULT_ALIGN,
    DEFAULT_BN,
    ZipState,
    load_batch_norms,
)
from edgemerge.zipper.layout import DEFAULT_SHARE, SHARE_MODES, PairLayout, check_pair
from edgemerge.zipper.report import (
    PLOT_NAME,
    REPORT_FORMAT,
    REPORT_NAME,
    REPORT_VERSION,
    round_row,
    row_line,
    tradeoff_png,
)
from edgemerge.zipper.rounds import (
    DEFAULT_L1_SCOPE,
    L1_SCOPES,
    RoundGraph,
    build_round,
    read_back,
    share_round,
)

LATENCY_SAMPLES = 200        # samples timed per model (one em_run_all / one TFLite invoke each)

try:
    from edgemerge import __version__ as TOOL_VERSION
except ImportError:          # pragma: no cover - package without a version
    TOOL_VERSION = "0.1.0"


@dataclass
class ZipperResult:
    report: dict
    output: Path


@dataclass
class _Run:
    """What every round of one zipper run reads."""
    sources: Mapping[str, str | os.PathLike]
    models: dict[str, SourceModel]
    layout: PairLayout
    val_data: dict[str, tuple[np.ndarray, np.ndarray]]
    original_acc: dict[str, float]
    original_bytes: int
    latency_x: np.ndarray | None
    tflite_ms: dict | None
    out_dir: Path

    @property
    def tasks(self) -> list[str]:
        return list(self.models)

    @property
    def tflite_pair(self) -> float | None:
        return self.tflite_ms.get("pair") if isinstance(self.tflite_ms, dict) else None

    def write_round(self, k: int, graph, pair_ms: float | None, shared_names: list[str], trunk_nodes: int) -> dict:
        data = emm.to_bytes(graph)
        path = self.out_dir / f"k{k:02d}.emm"
        emm.atomic_write_bytes(path, data)
        return round_row(k, path, data, graph, self.val_data, self.original_acc, self.original_bytes,
                         self.latency_x, pair_ms, self.tflite_pair, shared_names, trunk_nodes)


def _check_options(share: str, bn: str, align: str, l1_scope: str, steps_per_round: int | None,
                   sources: Mapping, calib: Mapping, val: Mapping, output: str | os.PathLike) -> Path:
    if share not in SHARE_MODES:
        raise EdgemergeError(f"unknown share mode {share!r} (expected {' or '.join(SHARE_MODES)})")
    if bn not in BN_MODES:
        raise EdgemergeError(f"unknown BatchNorm handling {bn!r} (expected {' or '.join(BN_MODES)})")
    if align not in ALIGN_MODES:
        raise EdgemergeError(f"unknown alignment {align!r} (expected {' or '.join(ALIGN_MODES)})")
    if l1_scope not in L1_SCOPES:
        raise EdgemergeError(f"unknown L1 scope {l1_scope!r} (expected {' or '.join(L1_SCOPES)})")
    if steps_per_round is not None and steps_per_round < 0:
        raise EdgemergeError(f"steps per round must be >= 0, got {steps_per_round}")
    tasks = list(sources)
    for what, given in (("--calib", calib), ("--val", val)):
        missing = [t for t in tasks if t not in given]
        extra = [t for t in given if t not in sources]
        if missing:
            raise EdgemergeError(f"{what}: no data for task(s) {', '.join(missing)}")
        if extra:
            raise EdgemergeError(f"{what}: task(s) {', '.join(extra)} are not among the models "
                                 f"({', '.join(tasks)})")
    out_dir = Path(output)
    if out_dir.exists() and not out_dir.is_dir():
        raise EdgemergeError(f"output {out_dir}: exists and is not a folder")
    return out_dir


def _prepare(sources, calib, val, out_dir: Path, latency: bool, tflite: bool, latency_samples: int,
             say: Callable[[str], None], imported: Mapping[str, SourceModel] | None = None,
             top: bool = False) -> _Run:
    """Imports the models (unless `imported` gives them), finds their blocks, loads and checks the data,
    measures the originals."""
    from edgemerge.datasets import load_labelled
    from edgemerge.importers import load_source_model
    from edgemerge.measure.evaluate import reference_predictions

    tasks = list(sources)
    models = {}
    for task, path in sources.items():
        models[task] = imported[task] if imported is not None else load_source_model(path)
        say(f"zipper: imported {task}: {path} ({len(models[task].layers)} layers)")
    layout = check_pair(models, top)
    say(f"zipper: {layout.depth} blocks: " + "; ".join(
        f"{b.index}: " + ",".join(models[tasks[0]].layers[p].name for p in b.positions) for b in layout.blocks))
    shape = tuple(models[tasks[0]].input_shape)
    val_data = {}
    for task in tasks:
        d = load_labelled(val[task], shape)
        classes = int(np.prod(models[task].output_shape))
        if d.y.size and (d.y.min() < 0 or d.y.max() >= classes):
            raise EdgemergeError(f"--val {val[task]}: labels outside 0..{classes - 1} for task {task!r}")
        val_data[task] = (d.x, d.y)
    for task in tasks:              # fail before any work on a bad calibration file
        load_labelled(calib[task], shape)

    original_acc = {t: float(np.mean(reference_predictions(sources[t], val_data[t][0]) == val_data[t][1]))
                    for t in tasks}
    original_bytes = int(sum(m.param_bytes for m in models.values()))
    say("zipper: originals on --val: " + ", ".join(f"{t} {100 * a:.2f}%" for t, a in original_acc.items()))
    latency_x = val_data[tasks[0]][0][:latency_samples] if latency else None
    tflite_ms = None
    if latency and tflite:
        try:
            tflite_ms = {t: tflite_latency_ms(sources[t], latency_x) for t in tasks}
            tflite_ms["pair"] = float(sum(tflite_ms[t] for t in tasks))
        except Exception as e:  # noqa: BLE001 - TFLite is an optional yardstick; the report says why it is absent
            say(f"zipper: TFLite latency skipped ({type(e).__name__}: {e})")
            tflite_ms = {"error": f"{type(e).__name__}: {e}"}
    return _Run(sources, models, layout, val_data, original_acc, original_bytes, latency_x, tflite_ms, out_dir)


def _calibration_summary(rep: dict, tasks: list[str]) -> dict:
    return {
        "steps": rep["steps"], "best_step": rep["best_step"], "seconds": rep["seconds"],
        "held_out": {t: {"before": rep["tasks"][t]["accuracy_before"], "after": rep["tasks"][t]["accuracy_after"],
                         "original": rep["tasks"][t]["reference_accuracy"]} for t in tasks},
        "l1_layers": {t: rep["tasks"][t]["l1_layers"] for t in tasks},
    }


def zipper_files(sources: Mapping[str, str | os.PathLike], calib: Mapping[str, str | os.PathLike],
                 val: Mapping[str, str | os.PathLike], output: str | os.PathLike, *, share: str = DEFAULT_SHARE,
                 steps_per_round: int | None = None, rounds: int | None = None, top: bool = False,
                 bn: str = DEFAULT_BN, align: str = DEFAULT_ALIGN,
                 encode: str | None = None, seed: int = 0, l1_scope: str = DEFAULT_L1_SCOPE,
                 latency: bool = True, tflite: bool = True,
                 latency_samples: int = LATENCY_SAMPLES, plot: bool = True, calibrate_options: dict | None = None,
                 log: Callable[[str], None] | None = None,
                 imported: Mapping[str, SourceModel] | None = None) -> ZipperResult:
    """Zippers the TASK=model files round by round (see zipper/) and writes into `output`:
    k00.emm (the unmerged models in one file: the baseline), k01.emm .. kLL.emm, report.json and
    tradeoff.png. `rounds`: run rounds 1..rounds only (default: every block; a deep model's later rounds
    take as long as the first ones and a budget may already be missed before them). `top`: one more round
    sharing the convs between the last block and the pooling (zipper/layout.py). `calib`: TASK -> .npz for calibration (10 % of it held out to pick checkpoints);
    `val`: TASK -> .npz on which every file is evaluated in the C runtime. `imported`: TASK -> the
    SourceModel of each file when the caller already has it (the file is then only read by Keras/TFLite:
    reference accuracy, calibration targets, latency), e.g. a graph the file importer cannot read yet.
    Returns the report."""
    from edgemerge.training.calibrate import calibrate

    say = log or (lambda message: None)
    started = time.perf_counter()
    out_dir = _check_options(share, bn, align, l1_scope, steps_per_round, sources, calib, val, output)
    if rounds is not None and rounds < 1:
        raise EdgemergeError(f"rounds must be >= 1, got {rounds}")
    max_rounds = rounds             # `rounds` below: the rows of the rounds run
    if imported is not None and set(imported) != set(sources):
        raise EdgemergeError(f"imported models for {', '.join(imported)}, files for {', '.join(sources)}")
    run = _prepare(sources, calib, val, out_dir, latency, tflite, latency_samples, say, imported, top)
    models, layout, tasks = run.models, run.layout, run.tasks

    state = ZipState.from_models(models)
    if bn == "stats":
        state.batch_norms = load_batch_norms(models)
    out_dir.mkdir(parents=True, exist_ok=True)
    # An earlier run's report must not describe this run's files while it is under way (pick also checks
    # every file's hash against the report).
    (out_dir / REPORT_NAME).unlink(missing_ok=True)

    rounds = []
    base = build_round(models, layout, state, 0, share, bn=bn, align=align, encode=encode)
    row = run.write_round(0, base.graph, None, [], 0)
    pair_ms = row.get("latency_ms")
    row["speedup"] = 1.0 if latency else None
    row["calibration"] = None
    rounds.append(row)
    say(row_line(row, tasks))

    calibrate_kwargs = {"seed": seed, **(calibrate_options or {})}
    last = layout.depth if max_rounds is None else min(max_rounds, layout.depth)
    for k in range(1, last + 1):
        round_started = time.perf_counter()
        initial, info = share_round(models, layout, state, k, share, bn=bn, align=align, encode=encode, seed=seed,
                                    l1_scope=l1_scope)
        say(f"zipper: round {k}/{layout.depth}: sharing {', '.join(info['new_shared'])}; calibrating")
        result = calibrate(initial.graph, sources, calib, steps=steps_per_round, l1_targets=initial.l1_targets,
                           progress=log, **calibrate_kwargs)
        calibrated = RoundGraph(result.graph, k, initial.weight_ids, initial.bias_ids, initial.node_of,
                                initial.shared_positions, initial.trunk_nodes, initial.l1_targets)
        read_back(calibrated, state)
        shared_names = [models[tasks[0]].layers[p].name for p in initial.shared_positions]
        row = run.write_round(k, result.graph, pair_ms, shared_names, len(initial.trunk_nodes))
        row["calibration"] = _calibration_summary(result.report, tasks)
        row.update({k_: v for k_, v in info.items() if k_ != "new_shared"})
        row["seconds"] = round(time.perf_counter() - round_started, 1)
        rounds.append(row)
        say(row_line(row, tasks))
        if k < last:
            # the rounds so far, marked unfinished: a run stopped here (a deep model's rounds take long) leaves a
            # report that describes exactly the files written, which `pick` can choose from
            partial = _report(run, val, calib, rounds, pair_ms, calibrate_kwargs, started, share=share, bn=bn,
                              align=align, encode=encode, seed=seed, steps_per_round=steps_per_round,
                              l1_scope=l1_scope, last_round=k, complete=False, top=top)
            emm.atomic_write_bytes(out_dir / REPORT_NAME, (json.dumps(partial, indent=2) + "\n").encode())

    report = _report(run, val, calib, rounds, pair_ms, calibrate_kwargs, started, share=share, bn=bn, align=align,
                     encode=encode, seed=seed, steps_per_round=steps_per_round, l1_scope=l1_scope, last_round=last,
                     complete=True, top=top)
    _write_outputs(out_dir, report, rounds, plot, say)
    return ZipperResult(report, out_dir)


def _report(run: _Run, val, calib, rounds: list[dict], pair_ms: float | None, calibrate_kwargs: dict,
            started: float, *, share, bn, align, encode, seed, steps_per_round, l1_scope, last_round,
            complete, top) -> dict:
    from edgemerge.runtime import Runtime
    from edgemerge.training.calibrate import DEFAULT_L1_WEIGHT, DEFAULT_LEARNING_RATE

    tasks, models, sources = run.tasks, run.models, run.sources
    return {
        "format": REPORT_FORMAT, "version": REPORT_VERSION, "tool_version": str(TOOL_VERSION),
        "tasks": tasks, "blocks": run.layout.depth, "last_round": last_round,
        "complete": complete,
        "block_layers": [[models[tasks[0]].layers[p].name for p in b.positions] for b in run.layout.blocks],
        "share": share, "top": top, "bn": bn, "align": align, "encode": encode, "seed": seed,
        "steps_per_round": steps_per_round,
        "calibration": {"l1_scope": l1_scope, "l1_weight": float(calibrate_kwargs.get("l1_weight", DEFAULT_L1_WEIGHT)),
                        "learning_rate": float(calibrate_kwargs.get("learning_rate", DEFAULT_LEARNING_RATE))},
        "originals": {t: {"file": str(sources[t]), "param_bytes": int(models[t].param_bytes),
                          "accuracy": run.original_acc[t], "val": str(val[t]), "n_val": int(len(run.val_data[t][1])),
                          "calib": str(calib[t])} for t in tasks},
        "original_bytes": run.original_bytes,
        "latency": None if run.latency_x is None else {
            "samples": int(len(run.latency_x)), "c_runtime": c_latency_method(Runtime(run.out_dir / "k00.emm")),
            "pair_c_ms": pair_ms, "tflite_ms": run.tflite_ms,
        },
        "rounds": rounds,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _write_outputs(out_dir: Path, report: dict, rounds: list[dict], plot: bool, say: Callable[[str], None]) -> None:
    # Files of an earlier, deeper run in the same folder would look like part of this one.
    keep = {r["file"] for r in rounds}
    for stale in out_dir.glob("k[0-9][0-9].emm"):
        if stale.name not in keep:
            stale.unlink()
    emm.atomic_write_bytes(out_dir / REPORT_NAME, (json.dumps(report, indent=2) + "\n").encode())
    if plot:
        emm.atomic_write_bytes(out_dir / PLOT_NAME, tradeoff_png(report))
    say(f"zipper: wrote {len(rounds)} models, {REPORT_NAME}" + (f" and {PLOT_NAME}" if plot else "") +
        f" to {out_dir} in {report['seconds']} s")
