"""Latency, measured one way for every tool: the C runtime through `Runtime.bench_all` / `Runtime.profile_all`
(em_run_all timed in C around the call alone, GIL released), TFLite through its interpreter's `invoke`.

`edgemerge bench` interleaves `merged_timer` with its TFLite references; the zipper times every round with
`c_latency_ms` against `tflite_latency_ms` of the original Keras files. Figures here are only ever compared
with a peer measured in the same run (README: no timed unit tests).
"""
from __future__ import annotations

import contextlib
import io
import os
import time
from typing import Callable

import numpy as np

from edgemerge.quiet import native_stderr_silenced

LATENCY_REPEATS = 3          # passes over the samples; the fastest pass is kept
C_LATENCY_METHOD = "em_run_all timed in C (bench_all), one sample, all tasks: median over the samples, best pass"
MERGED_TIMING = "em_run_all timed in C (Model.bench_all)"


# -- the C runtime -----------------------------------------------------------------------------------
def merged_timer(runtime, pools: list[np.ndarray]) -> tuple[Callable[[int], int], str]:
    """A function timing one em_run_all on sample k % P of the [P, H, W, C] `pools` (one per graph input),
    returning nanoseconds, and how it times."""
    size = min(len(p) for p in pools)
    singles = [[pool[k:k + 1] for pool in pools] for k in range(size)]

    def run(k: int) -> int:
        return int(runtime.bench_all(singles[k % size], 0, 1)[0])
    return run, MERGED_TIMING


def c_latency_method(runtime=None) -> str:
    """How `c_latency_ms` times (the zipper report's latency.c_runtime)."""
    return C_LATENCY_METHOD


def c_latency_ms(runtime, x: np.ndarray, repeats: int = LATENCY_REPEATS) -> float:
    """Milliseconds of one em_run_all (every task, one sample of `x` on every graph input) in the C runtime:
    the median over the samples of `x`, the best of `repeats` passes."""
    x = np.ascontiguousarray(x, np.float32)
    inputs = [x] * runtime.input_count
    return min(float(np.median(runtime.bench_all(inputs, 10, len(x)))) for _ in range(repeats)) / 1e6


def node_profile(runtime, pools: list[np.ndarray], warmup: int, runs: int) -> list[dict]:
    """Per node of `runtime` (every node listed): its kernel, run group and the mean milliseconds per run of
    profiled em_run_all calls (total, table build, accumulation)."""
    rows = runtime.profile_all(pools, warmup, runs)
    out = []
    for i, node in enumerate(runtime.nodes()):
        r = rows[i]
        n = int(r["runs"])
        out.append({"index": i, "name": node["name"], "op": node["op_name"], "kernel": node["kernel"],
                    # a run group (same weights across tasks) is one step; its time is on its first member
                    "run_group": node.get("run_group"), "run_group_fused": bool(node.get("run_group_fused")),
                    "runs": n, "total_ms": r["total_ns"] / 1e6, "table_ms": r["table_ns"] / 1e6,
                    "accumulate_ms": r["accumulate_ns"] / 1e6,
                    "ms_per_run": r["total_ns"] / 1e6 / n if n else 0.0})
    return out


def profile_by_op(rows: list[dict]) -> list[dict]:
    """`node_profile` rows totalled per op type: nodes, mean ms per run (table build and accumulation
    included) and share of the profiled total, the largest first. Empty when the runtime has no profiling
    API (rows without runs)."""
    timed = [r for r in rows if r.get("runs")]
    total = sum(r["total_ms"] for r in timed)
    ops: dict[str, dict] = {}
    for r in timed:
        op = ops.setdefault(r["op"], {"op": r["op"], "nodes": 0, "ms_per_run": 0.0, "table_ms_per_run": 0.0,
                                      "accumulate_ms_per_run": 0.0, "total_ms": 0.0})
        op["nodes"] += 1
        op["ms_per_run"] += r["ms_per_run"]
        op["table_ms_per_run"] += r["table_ms"] / r["runs"]
        op["accumulate_ms_per_run"] += r["accumulate_ms"] / r["runs"]
        op["total_ms"] += r["total_ms"]
    out = sorted(ops.values(), key=lambda o: -o["total_ms"])
    for o in out:
        o["share"] = o["total_ms"] / total if total else 0.0
    return out


# -- TFLite (the peer) ---------------------------------------------------------------------------------
def tflite_interpreter(keras_path: str | os.PathLike):
    """A Keras model converted in memory to float32 TFLite, in an interpreter with one thread (the default
    XNNPACK delegate), tensors allocated."""
    import keras
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    model = keras.models.load_model(keras_path, compile=False, safe_mode=True)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    with contextlib.redirect_stdout(io.StringIO()):
        flatbuffer = converter.convert()
    with native_stderr_silenced():          # XNNPACK's "Created delegate" banner
        interpreter = Interpreter(model_content=flatbuffer, num_threads=1)
    interpreter.allocate_tensors()
    return interpreter


def tflite_pass_ms(interpreter, x: np.ndarray) -> float:
    """One pass over the samples of `x`, one invoke each: the median milliseconds of `invoke` (timed from
    Python around the binding's call; the input is set outside the clock)."""
    inp = interpreter.get_input_details()[0]["index"]
    times = []
    for sample in np.ascontiguousarray(x, np.float32)[:, None]:
        interpreter.set_tensor(inp, sample)
        started = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - started)
    return float(np.median(times)) * 1e3


def tflite_latency_ms(keras_path: str | os.PathLike, x: np.ndarray, repeats: int = LATENCY_REPEATS) -> float:
    """Milliseconds of one TFLite invoke (float32, one sample, one thread, the interpreter's default XNNPACK
    delegate) of a Keras model converted in memory: the median over the samples, best of `repeats` passes."""
    interpreter = tflite_interpreter(keras_path)
    tflite_pass_ms(interpreter, x)                            # warm-up pass
    return min(tflite_pass_ms(interpreter, x) for _ in range(repeats))
