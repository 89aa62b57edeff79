"""The peer side of `edgemerge bench --on`: copied to the device and run there by its own `python3`, so it
imports nothing from edgemerge (only the standard library, numpy and ai-edge-litert).

    python3 device_peer.py SPEC_JSON

SPEC_JSON: {"models": {task: file in the current folder}, "runs": N, "warmup": W, "threads": T, "seed": S}.
Prints one JSON object: load_ms (creating and allocating every interpreter), first_run_ms (the first round),
then `runs` timed rounds after `warmup` untimed ones; a round sets every model's input (seeded uniform [0, 1),
quantised for int8/uint8 inputs) outside the clock and times the invokes of all models (perf_counter_ns),
each model's invoke also alone. peak_bytes: peak RSS growth of this process from after the imports to the
end of the runs (/proc/self/status VmHWM after resetting it through /proc/self/clear_refs; library code
that became resident meanwhile is included).
"""
import json
import sys
import time


def _status(key):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _stats(ns):
    import numpy as np
    ms = np.asarray(ns, np.float64) / 1e6
    return {"min": float(ms.min()), "median": float(np.median(ms)), "p95": float(np.percentile(ms, 95)),
            "mean": float(ms.mean()), "std": float(ms.std(ddof=1)) if ms.size > 1 else 0.0}


def main(argv):
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    spec = json.loads(argv[0])
    runs, warmup, threads = int(spec["runs"]), int(spec["warmup"]), int(spec["threads"])
    rng = np.random.default_rng(int(spec.get("seed", 0)))
    base = _status("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")          # resets VmHWM to the current RSS (Linux >= 4.0)
        reset = True
    except OSError:
        reset = False
    started = time.perf_counter_ns()
    models = {}
    for task, path in spec["models"].items():
        it = Interpreter(model_path=path, num_threads=threads)
        it.allocate_tensors()
        models[task] = it
    load_ns = time.perf_counter_ns() - started
    inputs = {}
    for task, it in models.items():
        d = it.get_input_details()[0]
        x = rng.random(tuple(d["shape"]), dtype=np.float32)
        if d["dtype"] != np.float32:
            scale, zero = d["quantization"]
            info = np.iinfo(d["dtype"])
            x = np.clip(np.round(x / scale) + zero, info.min, info.max)
        inputs[task] = (d["index"], x.astype(d["dtype"]), str(np.dtype(d["dtype"])))
    order = list(models.items())
    total = np.empty(runs, np.int64)
    each = np.empty((runs, len(order)), np.int64)
    first_ns = 0
    for k in range(warmup + runs + 1):         # round 0: the first run, then the warm-up, then the timed runs
        for task, it in order:
            it.set_tensor(inputs[task][0], inputs[task][1])
        marks = [time.perf_counter_ns()]
        for _, it in order:
            it.invoke()
            marks.append(time.perf_counter_ns())
        if k == 0:
            first_ns = marks[-1] - marks[0]
        elif k > warmup:
            total[k - warmup - 1] = marks[-1] - marks[0]
            each[k - warmup - 1] = [b - a for a, b in zip(marks, marks[1:])]
    hwm, rss = _status("VmHWM"), _status("VmRSS")
    peak = None if base is None or hwm is None else max(0, (hwm if reset else rss) - base)
    peak_method = ("peak RSS growth (VmHWM), library code included" if reset else
                   "RSS growth after the runs (peak reset unavailable), library code included")
    try:
        from importlib.metadata import version
        runtime = f"ai-edge-litert {version('ai-edge-litert')}"
    except Exception:
        runtime = "ai-edge-litert"
    print(json.dumps({"runtime": f"{runtime}, XNNPACK delegate, num_threads={threads}", "python": sys.version.split()[0],
                      "load_ms": load_ns / 1e6, "first_run_ms": first_ns / 1e6, "ms": _stats(total),
                      "peak_bytes": peak, "peak_method": peak_method,
                      "tasks": {task: {"ms": _stats(each[:, j]), "input": inputs[task][2]}
                                for j, (task, _) in enumerate(order)}}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
