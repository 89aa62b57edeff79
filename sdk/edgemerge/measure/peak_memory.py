"""Peak memory of one side of `bench`, measured in a fresh process (`python -m edgemerge.measure.peak_memory
--memory-child merged|reference SPEC_JSON`): the growth of resident memory while the side's model files are
loaded and run, with newly resident library code reported apart (it is not the model's data). Linux /proc."""
from __future__ import annotations

import gc
import json
import mmap
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from edgemerge.errors import EdgemergeError
from edgemerge.measure.peers import open_peer_model, peer_kind, preload_peer_libraries

CHILD_TIMEOUT_S = 600


def _proc_status() -> dict[str, int]:
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                    out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def _file_rss() -> dict[str, int]:
    """Resident bytes of every file mapped into this process, by path (/proc/self/smaps)."""
    out: dict[str, int] = {}
    path = None
    try:
        with open("/proc/self/smaps") as f:
            for line in f:
                head = line.split(None, 5)
                if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                    path = head[5].strip() if len(head) == 6 and head[5].startswith("/") else None
                elif path and line.startswith("Rss:"):
                    out[path] = out.get(path, 0) + int(line.split()[1]) * 1024
    except OSError:
        pass
    return out


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")          # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def memory_child(side: str, spec: dict) -> dict:
    """Runs in a fresh process: peak RSS growth while loading one side's model(s) and running them."""
    threads, runs = int(spec["threads"]), int(spec["runs"])
    rng = np.random.default_rng(0)
    if side == "merged":
        from edgemerge import _runtime
        pools = [rng.random((1, *shape), dtype=np.float32) for shape in spec["input_shapes"]]
    else:
        preload_peer_libraries(peer_kind(p) for p in spec["references"].values())
        samples = {task: rng.random(tuple(shape), dtype=np.float32) for task, shape in spec["task_shapes"].items()}
    model_files = {str(Path(p).resolve()) for p in ([spec["model"]] if side == "merged"
                                                     else spec["references"].values())}
    gc.collect()
    gc.disable()
    base, base_files = _proc_status(), _file_rss()
    reset = _reset_peak()
    if side == "merged":
        with open(spec["model"], "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as image:
            model = _runtime.Model(image, "auto", True, threads)
        model.bench_all(pools, 0, runs)
    else:
        models = {task: open_peer_model(path, threads) for task, path in spec["references"].items()}
        prepared = {task: models[task].prepare_input(samples[task]) for task in models}
        for _ in range(runs):
            for task, m in models.items():
                m.set_input(prepared[task])
                m.invoke()
    after, after_files = _proc_status(), _file_rss()
    if "VmRSS" not in base or "VmHWM" not in after:
        return {"peak_bytes": None, "method": "unavailable (no /proc/self/status)"}
    # Code pages of libraries touched for the first time (TFLite's kernels, ...) are resident file pages too;
    # they are reported apart and left out of peak_bytes, which counts data: heap and mapped model files.
    code = sum(max(0, rss - base_files.get(p, 0)) for p, rss in after_files.items() if p not in model_files)
    held = {"heap": max(0, after.get("RssAnon", 0) - base.get("RssAnon", 0)),
            "model_files": sum(rss for p, rss in after_files.items() if p in model_files),
            "library_code": code}
    if reset:
        total, method = max(0, after["VmHWM"] - base["VmRSS"]), "peak RSS growth"
    else:
        total, method = max(0, after["VmRSS"] - base["VmRSS"]), "RSS growth after the runs (peak reset unavailable)"
    return {"peak_bytes": max(0, total - code), "total_bytes": total, "method": method, "held": held}


def measure_memory(side: str, spec: dict) -> dict:
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(spec["threads"]), TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-m", "edgemerge.measure.peak_memory", "--memory-child", side, json.dumps(spec)],
                            capture_output=True, text=True, env=env, timeout=CHILD_TIMEOUT_S)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise EdgemergeError(f"measuring the {side} side's memory failed: {tail}")
    return json.loads(lines[-1])


def _child_main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "--memory-child" or argv[1] not in ("merged", "reference"):
        print("usage: python -m edgemerge.measure.peak_memory --memory-child merged|reference SPEC_JSON", file=sys.stderr)
        return 2
    print(json.dumps(memory_child(argv[1], json.loads(argv[2]))))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
