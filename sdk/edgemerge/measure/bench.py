"""`edgemerge bench`: the merged model in the C runtime against the original models in TFLite, measured together.

What one run is, on each side:

- merged: one `em_run_all` on one sample of every graph input: every task once, a shared trunk once. It is
  timed in C around `em_run_all` alone (`Model.bench_all`, CLOCK_MONOTONIC, GIL released), so neither the
  Python call nor the context set-up is in the figure.
- reference: every original `.tflite` model invoked once on the same sample, in ai-edge-litert's interpreter
  (XNNPACK delegate, `num_threads` = threads). Inputs are set before the clock starts; `invoke()` alone is
  timed (perf_counter_ns around the invokes of all models).

Runs are interleaved (merged, reference, reference, merged, ...: the order alternates every round) after
`warmup` interleaved rounds, so machine noise and cache pollution hit both sides alike; the garbage collector
is off while timing. Reported per side: min / median / p95 / mean / std in milliseconds, and
`speedup = peer median / merged median`.

Peers: every `--vs TASK=FILE` names one original model of one task; giving a task a second file starts a
second peer (the first file of every task is peer 1, the second of every task peer 2, ...), so float and int8
originals are measured in the same run: `--vs a=a.tflite --vs b=b.tflite --vs a=a.int8.tflite --vs
b=b.int8.tflite`. A peer's kind comes from its file's suffix (PEER_KINDS); every peer is interleaved with the
merged model (the order of the sides rotates every round). `peers` in the result lists every figure of every
peer; the older keys `reference_ms`, `speedup`, `reference_peak_bytes` and `tasks[...].reference*` are the
first peer's.

Load and first run (per side, once, before the warm-up): `load_ms` is the wall time to open the side's
model(s) in this process (merged: `Runtime(path)`, reading the file, parsing and planning; a peer: creating
and allocating every interpreter), `first_run_ms` the first timed run right after (cold caches, lazy
set-up such as XNNPACK's weight packing).

Inputs: a pool of SAMPLE_POOL seeded uniform [0, 1) samples per graph input (or the first samples of
`--data TASK=NPZ`); round k uses sample k % pool on both sides.

Peak memory (bytes):

- merged_peak_bytes = model bytes (the .emm image the runtime reads in place) + packed bytes (what the loader
  allocates for kernel data derived from the file: decoded weights of LUT layers run decoded, unpacked
  indices; em_model_packed_bytes) + the context bytes of one run (activations, scratch, bookkeeping: all a
  run touches). The runtime allocates nothing else during a run; the parsed node/tensor records made at load
  are not counted (a few hundred bytes per node). Until 2026-12-05 the packed bytes were left out, which
  understated files whose layers run decoded (the MobileNetV2 pair: 0.46 MB counted, 1.10 MB as RSS).
- reference_peak_bytes = peak RSS growth of a fresh process while it creates the interpreters from the
  .tflite files and runs them, less the library code that became resident meanwhile (TFLite's kernels are
  file pages of its shared library; code is not data and the merged side's count has none): what remains is
  the heap (XNNPACK's packed weights, tensor arenas, interpreter state) and the mapped model file pages. The
  baseline is taken after importing numpy and ai-edge-litert and creating the inputs, and the kernel's peak
  counter is reset there (/proc/self/clear_refs); code pages are found per mapping in /proc/self/smaps.
  The total with code and the heap / model file / code split are extras under "memory".
- merged_rss_peak_bytes (extra) is the same RSS measurement applied to the C runtime (model loaded from a
  memory-mapped file through the Python binding, which keeps its own 64-byte-aligned copy), a like-for-like
  check of the accounting above.

Profile (`profile=True`): `Model.profile_all` runs em_run_all with the C profiling API on (after the same
warm-up) and returns per node its runs and total / table-build / accumulation nanoseconds; the table shows
their means per run (means, unlike the medians above, include any preemption; the clock reads add a little).
`profile_by_op` totals them per op type; `profile_csv_bytes` is the per-node table as CSV (node, op, kernel,
ms, share).

OPENBLAS_NUM_THREADS is set to `threads` before the C runtime is loaded (and in the measuring processes).
The C runtime runs on a pool of `threads` workers (`Runtime(..., threads=N)`): large nodes split over the
workers, or the task lanes in parallel where its cost model favours them; `merged_threads` and
`merged_task_lanes` say so. With threads > 1 the same model also runs on one thread as one more interleaved
side, and `merged_threads_speedup` is its median over the threaded median: the threads' gain from one run.

Blocks (threads > 1): the sides take turns in blocks of THREADED_BLOCK consecutive rounds (`interleave_block`
in the result; the order of the sides still rotates every block), not round by round. A pool's workers spin
about 100 µs after a job and then sleep (em_threads.c; a peer's thread pool may do the same), so round by
round every threaded run would find its workers asleep behind the other sides' rounds and pay their wake-up
(on the 2-core x86-64 VM tens of µs, half a merged run of the README pair: 2 threads gave 1.09-1.14x round by
round, 1.56-1.60x in blocks, same session). A user who runs a model runs it again and again with nothing else
on the cores between, which is what a block measures; every side, the peers included, gets the same blocks.
Each block's first round (the wake-up) stays in the figures: the medians shrug it off, mean and p95 show it.
With 1 thread no side has workers to wake, and rounds alternate one by one as before.
"""
from __future__ import annotations

import csv
import gc
import io
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgemerge.errors import EdgemergeError
from edgemerge.measure.latency import merged_timer, node_profile, profile_by_op
from edgemerge.measure.peak_memory import measure_memory
from edgemerge.measure.peers import (  # noqa: F401 - PEER_KINDS, parse_peer_sets: bench's public names too
    PEER_KINDS,
    open_peer_models,
    parse_peer_sets,
    peer_kind,
    peer_label,
    peer_runtime,
)

DEFAULT_RUNS = 200
DEFAULT_WARMUP = 20
SAMPLE_POOL = 16          # distinct samples per input, cycled through (both sides see the same ones)
MEMORY_RUNS = 5           # runs done by the memory-measuring processes (the peak is reached on the first)
THREADED_BLOCK = 20       # threads > 1: consecutive rounds per side before the next side's turn (docstring)


def set_thread_environment(threads: int) -> str | None:
    """Sets OPENBLAS_NUM_THREADS for the C runtime's BLAS. It must happen before the runtime module loads;
    returns a warning when the module is already loaded with another setting."""
    previous = os.environ.get("OPENBLAS_NUM_THREADS")
    os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
    if "edgemerge._runtime" in sys.modules and previous != str(threads):
        return (f"the C runtime was loaded before OPENBLAS_NUM_THREADS was set to {threads} "
                f"(it was {previous or 'unset'}); its BLAS may use another thread count")
    return None


# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stats:
    min: float
    median: float
    p95: float
    mean: float = 0.0
    std: float = 0.0       # sample standard deviation (n - 1); 0 for one run

    @classmethod
    def of_ns(cls, ns: np.ndarray) -> "Stats":
        ms = np.asarray(ns, np.float64) / 1e6
        return cls(float(ms.min()), float(np.median(ms)), float(np.percentile(ms, 95)), float(ms.mean()),
                   float(ms.std(ddof=1)) if ms.size > 1 else 0.0)

    def as_dict(self) -> dict[str, float]:
        return {"min": self.min, "median": self.median, "p95": self.p95, "mean": self.mean, "std": self.std}

    def summary(self) -> dict[str, float]:
        """min / median / p95 only: the form of the older top-level keys merged_ms and reference_ms."""
        return {"min": self.min, "median": self.median, "p95": self.p95}


def _load_samples(path: str | os.PathLike, shape: tuple[int, int, int], task: str, onnx: bool = False) -> np.ndarray:
    """SAMPLE_POOL samples of `x` from a data file (.npz; `y` is not needed), the first ones, cycled. For a task
    with an ONNX original (`onnx`), NCHW samples are accepted too (importers/onnx_import.onnx_task_samples)."""
    from edgemerge.datasets import load_samples  # the input guards: dtype, uint8, NaN/Inf, empty, .npy

    path = Path(path)
    if not path.is_file():
        raise EdgemergeError(f"--data {task}={path}: no such file")
    x = load_samples(path, f"--data {task}:")
    if onnx:
        from edgemerge.importers.onnx_import import onnx_task_samples
        x = onnx_task_samples(x, shape, f"--data {task}={path}")
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(shape) or len(x) == 0:
        raise EdgemergeError(f"--data {task}={path}: x has shape {tuple(x.shape)}, task {task!r} needs "
                             f"(N >= 1, {', '.join(map(str, shape))})")
    # cycle through the samples given (however many) so that every input has SAMPLE_POOL of them
    return np.ascontiguousarray(x[np.arange(SAMPLE_POOL) % min(len(x), SAMPLE_POOL)], dtype=np.float32)


def _input_pools(runtime, data: dict[str, str], seed: int, onnx_tasks: set[str] = frozenset()) -> list[np.ndarray]:
    """One [P, H, W, C] float32 pool per graph input of the merged model (`onnx_tasks`: tasks with an .onnx peer,
    whose data may be NCHW)."""
    n_inputs = runtime.input_count
    shapes: dict[int, tuple[int, int, int]] = {t.input_index: t.input_shape for t in runtime.tasks}
    rng = np.random.default_rng(seed)
    pools: list[np.ndarray | None] = [None] * n_inputs
    given_by: dict[int, str] = {}
    for task, path in data.items():
        info = runtime.task(task)
        if info.input_index in given_by:
            raise EdgemergeError(f"--data: tasks {given_by[info.input_index]!r} and {task!r} read the same model "
                                 "input; give data for one of them")
        given_by[info.input_index] = task
        pools[info.input_index] = _load_samples(path, info.input_shape, task, task in onnx_tasks)
    for i in range(n_inputs):
        if pools[i] is None:
            pools[i] = rng.random((SAMPLE_POOL, *shapes[i]), dtype=np.float32)
    return pools   # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------
def _reference_timer(runtime, models: dict[str, Any], pools: list[np.ndarray]
                     ) -> Callable[[int], tuple[int, list[int]]]:
    prepared = {task: [m.prepare_input(pools[runtime.task(task).input_index][k]) for k in range(SAMPLE_POOL)]
                for task, m in models.items()}
    order = list(models.items())

    def run(k: int) -> tuple[int, list[int]]:
        for task, m in order:
            m.set_input(prepared[task][k % SAMPLE_POOL])
        marks = [time.perf_counter_ns()]
        for _, m in order:
            m.invoke()
            marks.append(time.perf_counter_ns())
        return marks[-1] - marks[0], [b - a for a, b in zip(marks, marks[1:])]
    return run


def _agreement(runtime, models: dict[str, Any], pools: list[np.ndarray]) -> dict[str, float]:
    """Top-1 agreement of merged and original outputs on the pool samples (a sanity check of --vs)."""
    logits, _ = runtime.run_all({t.name: pools[t.input_index] for t in runtime.tasks})
    out = {}
    for task, m in models.items():
        ref = np.stack([m.run_one(x) for x in pools[runtime.task(task).input_index]])
        out[task] = float(np.mean(np.argmax(ref, -1) == np.argmax(logits[task], -1)))
    return out


# ------------------------------------------------------------------------------------------------
def bench(model_path: str | os.PathLike, references: dict[str, str] | list[dict[str, str]], *, threads: int = 1,
          runs: int = DEFAULT_RUNS, warmup: int = DEFAULT_WARMUP, data: dict[str, str] | None = None,
          seed: int = 0, profile: bool = False, memory: bool = True,
          log: Callable[[str], None] | None = None) -> dict:
    """Benchmarks `model_path` (.emm) against `references`: one peer (task -> original file) or a list of
    peers (parse_peer_sets); see the module docstring for what is measured. Returns the JSON-ready result."""
    if threads < 1 or runs < 1 or warmup < 0:
        raise EdgemergeError(f"bench: threads and runs must be >= 1 and warmup >= 0 "
                             f"(got threads={threads}, runs={runs}, warmup={warmup})")
    peer_sets = [references] if isinstance(references, dict) else list(references)
    if not peer_sets:
        raise EdgemergeError("bench: no peer (--vs TASK=ORIGINAL for every task)")
    log = log or (lambda message: None)
    warnings = [w for w in [set_thread_environment(threads)] if w]
    onnx_tasks = {t for files in peer_sets for t, f in files.items() if peer_kind(f) == "onnxruntime"}
    merged_side = _open_merged(model_path, threads, data or {}, seed, onnx_tasks)
    runtime, pools = merged_side["runtime"], merged_side["pools"]
    peers = _open_peers(runtime, peer_sets, threads, pools)
    merged_ns, serial_ns, block = _time_interleaved(merged_side["run"], peers, warmup, runs, threads, log,
                                                    merged_side["serial_run"])
    merged = Stats.of_ns(merged_ns)
    merged_side["serial"] = Stats.of_ns(serial_ns) if serial_ns is not None else None
    mem_runs = max(1, min(MEMORY_RUNS, runs))
    peer_results = [_peer_result(runtime, peer, merged, pools, threads, mem_runs if memory else 0, log)
                    for peer in peers]
    result = _result(merged_side, merged, peer_results, threads=threads, runs=runs, warmup=warmup,
                     inputs="data" if data else f"seeded uniform [0, 1), seed {seed}")
    result["interleave_block"] = block
    if memory:
        result.update(_merged_memory(runtime, pools, threads, mem_runs, peer_results[0], log))
    if profile:
        result["profile"] = node_profile(runtime, pools, warmup, runs)
        result["profile_by_op"] = profile_by_op(result["profile"])
    warnings.append(_threads_note(threads, result["merged_threads_speedup"]))
    result["notes"] = warnings
    return result


def _open_merged(model_path: str | os.PathLike, threads: int, data: dict[str, str], seed: int,
                 onnx_tasks: set[str]) -> dict[str, Any]:
    """The merged side: the Runtime (load timed), its input pools (`--data` or seeded samples), its timer
    and its first run (timed)."""
    from edgemerge import runtime as runtime_module

    started = time.perf_counter_ns()
    runtime = runtime_module.Runtime(model_path, threads=threads)
    load_ns = time.perf_counter_ns() - started
    pools = _input_pools(runtime, data, seed, onnx_tasks)
    run, method = merged_timer(runtime, pools)
    # the 1-thread side of merged_threads_speedup (None with threads = 1)
    serial_run = merged_timer(runtime_module.Runtime(model_path, threads=1), pools)[0] if threads > 1 else None
    return {"runtime": runtime, "pools": pools, "run": run, "method": method, "load_ns": load_ns,
            "first_ns": run(0), "serial_run": serial_run}


def _open_peers(runtime, peer_sets: list[dict[str, str]], threads: int, pools: list[np.ndarray]) -> list[dict]:
    """Every peer opened (load timed) with its timer and its first run (timed)."""
    peers: list[dict[str, Any]] = []
    labels: set[str] = set()
    for files in peer_sets:
        started = time.perf_counter_ns()
        models = open_peer_models(runtime, files, threads)
        load_ns = time.perf_counter_ns() - started
        run = _reference_timer(runtime, models, pools)
        peers.append({"models": models, "label": peer_label(models, labels), "run": run,
                      "load_ns": load_ns, "first_ns": run(0)[0]})
    return peers


def interleave_order(sides: int, rounds: int, block: int) -> list[tuple[int, int]]:
    """The (side, round) calls of an interleaved timing, in order: round k of every side, with the sides
    taking turns in blocks of `block` consecutive rounds (1: round by round), the side that starts rotating
    with every block, so every side takes every place in the order equally often."""
    order = []
    for b, first in enumerate(range(0, rounds, block)):
        last = min(first + block, rounds)
        for j in range(sides):
            side = (j + b) % sides
            order.extend((side, k) for k in range(first, last))
    return order


def _time_interleaved(merged_run, peers: list[dict], warmup: int, runs: int, threads: int,
                      log: Callable[[str], None], serial_run=None) -> tuple[np.ndarray, np.ndarray | None, int]:
    """`warmup` + `runs` interleaved rounds with the garbage collector off (in blocks of THREADED_BLOCK rounds
    per side when threads > 1: the module docstring); returns the merged side's nanoseconds per timed round,
    those of its 1-thread twin (`serial_run`, threads > 1; else None) and the block, and fills every peer's
    "ns" and "per_model_ns"."""
    sides = 1 + len(peers) + (serial_run is not None)
    block = THREADED_BLOCK if threads > 1 else 1
    serial_ns = np.empty(runs, np.int64) if serial_run is not None else None
    log(f"bench: {warmup} warm-up and {runs} timed rounds, interleaved ({sides} sides"
        f"{f', blocks of {block} rounds' if block > 1 else ''}), {threads} thread(s)")
    merged_ns = np.empty(runs, np.int64)
    for peer in peers:
        peer["ns"] = np.empty(runs, np.int64)
        peer["per_model_ns"] = np.empty((runs, len(peer["models"])), np.int64)
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for side, k in interleave_order(sides, warmup + runs, block):
            if side == 0:
                m_ns = merged_run(k)
                if k >= warmup:
                    merged_ns[k - warmup] = m_ns
                continue
            if side == len(peers) + 1:      # the 1-thread merged side (threads > 1 only)
                s_ns = serial_run(k)
                if k >= warmup:
                    serial_ns[k - warmup] = s_ns
                continue
            peer = peers[side - 1]
            r_ns, per_model = peer["run"](k)
            if k >= warmup:
                peer["ns"][k - warmup] = r_ns
                peer["per_model_ns"][k - warmup] = per_model
    finally:
        if gc_was_enabled:
            gc.enable()
    return merged_ns, serial_ns, block


def _peer_result(runtime, peer: dict, merged: Stats, pools: list[np.ndarray], threads: int, mem_runs: int,
                 log: Callable[[str], None]) -> dict[str, Any]:
    """One entry of `peers`: its figures, per-task figures and top-1 agreement, and (mem_runs > 0) its peak
    memory measured in a fresh process."""
    models = peer["models"]
    stats = Stats.of_ns(peer["ns"])
    agreement = _agreement(runtime, models, pools)
    kinds = sorted({peer_kind(m.path) for m in models.values()})
    entry = {"label": peer["label"], "kind": "+".join(kinds),
             "runtime": "; ".join(peer_runtime(k, threads) for k in kinds),
             "timing": "invoke() of every model, perf_counter_ns",
             "load_ms": peer["load_ns"] / 1e6, "first_run_ms": peer["first_ns"] / 1e6,
             "ms": stats.as_dict(),
             "speedup": stats.median / merged.median if merged.median > 0 else float("inf"),
             "peak_bytes": None,
             "tasks": {task: {"file": str(m.path), "bytes": m.path.stat().st_size, "input": str(m.input_dtype),
                              "kind": peer_kind(m.path), "peer": peer_runtime(peer_kind(m.path), threads),
                              "ms": Stats.of_ns(peer["per_model_ns"][:, j]).as_dict(),
                              "top1_agreement": agreement[task]}
                       for j, (task, m) in enumerate(models.items())}}
    if mem_runs:
        log(f"bench: measuring the peak memory of {peer['label']} in a fresh process")
        mem = measure_memory("reference", {
            "threads": threads, "runs": mem_runs,
            "references": {t: str(m.path) for t, m in models.items()},
            "task_shapes": {t: list(runtime.task(t).input_shape) for t in models}})
        entry["peak_bytes"] = mem["peak_bytes"]
        entry["memory"] = mem
    return entry


def _result(merged_side: dict, merged: Stats, peer_results: list[dict], *, threads: int, runs: int, warmup: int,
            inputs: str) -> dict[str, Any]:
    """The JSON result: the merged side, every peer, and the first peer's figures under the older keys."""
    runtime, pools, serial = merged_side["runtime"], merged_side["pools"], merged_side["serial"]
    file_bytes, packed_bytes, context_bytes = runtime.file_bytes, runtime.packed_bytes, runtime.context_bytes
    peak_bytes = int(file_bytes + packed_bytes + context_bytes)
    first = peer_results[0]
    return {
        "merged_ms": merged.summary(),
        "reference_ms": {k: first["ms"][k] for k in ("min", "median", "p95")},
        "speedup": first["speedup"],
        "merged_peak_bytes": peak_bytes,
        "reference_peak_bytes": first["peak_bytes"],
        "threads": threads,
        "merged_threads": threads,
        "merged_task_lanes": runtime.task_lanes,
        "merged_1thread_ms": serial.as_dict() if serial is not None else None,
        "merged_threads_speedup": serial.median / merged.median if serial is not None and merged.median > 0 else None,
        "runs": runs,
        "warmup": warmup,
        "interleaved": True,
        "inputs": inputs,
        "merged": {"model": str(runtime.path), "file_bytes": int(file_bytes), "packed_bytes": int(packed_bytes),
                   "context_bytes": int(context_bytes),
                   "timing": merged_side["method"], "runtime": _cpu_features(),
                   "kernels": sorted({n["kernel"] for n in runtime.nodes()}),
                   "load_ms": merged_side["load_ns"] / 1e6, "first_run_ms": merged_side["first_ns"] / 1e6,
                   "ms": merged.as_dict(), "peak_bytes": peak_bytes},
        "reference": {"interpreter": first["runtime"], "timing": first["timing"]},
        "peers": peer_results,
        "tasks": {task: {"reference": t["file"], "reference_bytes": t["bytes"], "reference_input": t["input"],
                         "reference_kind": t["kind"], "reference_peer": t["peer"],
                         "input_shape": list(runtime.task(task).input_shape),
                         "reference_ms": t["ms"],
                         "merged_alone_ms": _task_alone_ms(runtime, task, pools, warmup, runs),
                         "top1_agreement": t["top1_agreement"]}
                  for task, t in first["tasks"].items()},
    }


def _merged_memory(runtime, pools: list[np.ndarray], threads: int, mem_runs: int, first: dict,
                   log: Callable[[str], None]) -> dict[str, Any]:
    """merged_rss_peak_bytes and the `memory` block: the merged model measured in a fresh process, beside
    the first peer's measurement."""
    log("bench: measuring the merged model's peak memory in a fresh process")
    merged_mem = measure_memory("merged", {
        "threads": threads, "runs": mem_runs, "model": str(Path(runtime.path).resolve()),
        "input_shapes": [list(p.shape[1:]) for p in pools]})
    return {
        "merged_rss_peak_bytes": merged_mem["peak_bytes"],
        "memory": {
            "merged_counted": "model bytes (used in place) + packed bytes (kernel data the loader derives from the "
                              "file: decoded weights, unpacked indices) + context bytes of one run; the parsed "
                              "node/tensor records are not counted",
            "reference_counted": f"{first['memory']['method']} of a fresh process creating the interpreters from "
                                 "the peer's files and running them, less newly resident library code: heap "
                                 "(XNNPACK packed weights, arenas, interpreter state) + mapped model file pages",
            "reference": first["memory"],
            "merged_rss": {**merged_mem, "counted": "the same measurement for the C runtime (model mapped, "
                                                    "copied by the binding to an aligned buffer, then run)"},
        },
    }


def _threads_note(threads: int, speedup: float | None) -> str:
    if threads == 1:
        return "the C runtime ran single-threaded (--threads N splits large nodes over N workers)"
    return (f"the C runtime ran on {threads} threads, {speedup:.2f}x its 1-thread median in the same run "
            f"(load average {_load_average()}); every side ran in blocks of {THREADED_BLOCK} rounds, so its "
            f"threads stay awake as in back-to-back use")


def _load_average() -> str:
    """The 1-minute load average, to read a threaded ratio against (a loaded machine gives the second thread
    no core of its own); "unknown" where the OS has none."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except (AttributeError, OSError):
        return "unknown"


PROFILE_CSV_COLUMNS = ("node", "op", "kernel", "ms", "share")


def profile_csv_bytes(rows: list[dict]) -> bytes:
    """The per-node profile as CSV: node name, op, kernel, mean ms per run, share of the profiled total
    (0..1). Rows without timings (a runtime without the profiling API) have empty ms and share."""
    total = sum(r["total_ms"] for r in rows if r.get("runs"))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(PROFILE_CSV_COLUMNS)
    for r in rows:
        timed = bool(r.get("runs"))
        writer.writerow([r["name"], r["op"], r["kernel"], f"{r['ms_per_run']:.6f}" if timed else "",
                         f"{r['total_ms'] / total:.6f}" if timed and total else ""])
    return out.getvalue().encode()


def write_profile_csv(path: str | os.PathLike, rows: list[dict]) -> None:
    from edgemerge.emm.files import atomic_write_bytes
    atomic_write_bytes(path, profile_csv_bytes(rows))


def _task_alone_ms(runtime, task: str, pools: list[np.ndarray], warmup: int, runs: int) -> dict[str, float]:
    """The merged model's figure for one task: that task alone in the C runtime (Runtime.run, one sample per
    call, after `warmup` calls), the per-task counterpart of the reference's per-model times. Timed after the
    interleaved runs, not interleaved with them."""
    pool = pools[runtime.task(task).input_index]
    for k in range(warmup):
        runtime.run(task, pool[k % len(pool)][None])
    ns = np.empty(runs, dtype=np.int64)
    for k in range(runs):
        sample = pool[k % len(pool)][None]
        start = time.perf_counter_ns()
        runtime.run(task, sample)
        ns[k] = time.perf_counter_ns() - start
    return Stats.of_ns(ns).as_dict()


def _cpu_features() -> str:
    from edgemerge import runtime as runtime_module
    rt = runtime_module._require_runtime()
    fn = getattr(rt, "cpu_features", None)
    return fn() if fn else "unknown"
