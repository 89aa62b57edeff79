"""`edgemerge bench MODEL --on ssh://[USER@]HOST[:PORT][/DIR] --board NAME`: the benchmark on the device.

1. The device is probed (`uname -m` against the board profile) before anything is built or sent.
2. flash.flash installs the board's em_run (built into --runtime-dir / build/BOARD when not there; kept when
   the device has the same bytes) and the model, each checked by SHA-256 on the device. DIR defaults to
   `edgemerge-bench` in the login user's home folder.
3. `em_run MODEL --info` lists the kernel chosen for every node and the CPU features the runtime found;
   `em_run MODEL --task all --runs N --warmup W --threads T --json` times em_run_all (every task, a fixed
   deterministic input) and then every task alone. em_run reports load_ms (em_model_load_ex: parse and plan,
   the file already read), first_ms (the first run, before the warm-up) and min / median / p95 / mean / std.
4. The peers (--vs, one or more sets of originals as in `bench`): where `python3 -c "import ai_edge_litert,
   numpy"` works on the device, their files and device_peer.py (standard library + numpy + ai-edge-litert,
   nothing of edgemerge) are copied there and run by that Python (--device-python, default `python3` as the
   login shell finds it) with the same runs / warm-up / threads; otherwise each peer
   is reported as skipped with the reason. The sides are NOT interleaved on the device: em_run runs first (its
   own process, all its runs), then each peer's process. The peers are checked on the host first (every task
   given, input shapes and class counts match the merged model).

Merged peak memory is counted as on the host: the model's bytes (used in place) + em_run's context bytes. A
peer's is the peak RSS growth of its process after the imports (library code included; see device_peer.py).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from edgemerge.deploy.flash import EM_RUN_NAME, FlashError, SshTarget, flash, parse_target
from edgemerge.text import printable

DEFAULT_DIR = "/~/edgemerge-bench"
PEER_SCRIPT = "em_bench_peer.py"

_EM_RUN = r"""
dir=$1; model=$2; shift 2
[ -x "$dir/em_run" ] || { echo "no em_run at $dir/em_run" >&2; exit 32; }
exec "$dir/em_run" "$dir/$model" "$@"
"""

_PYTHON_PROBE = r"""
py=$1
command -v "$py" >/dev/null 2>&1 || { echo "no $py on the device"; exit 0; }
"$py" -c "import ai_edge_litert.interpreter, numpy" 2>&1 | tail -n 1
exit 0
"""

_PEER = r"""
dir=$1; py=$2; shift 2
cd -- "$dir" || exit 40
exec "$py" ./em_bench_peer.py "$@"
"""

_NODE_LINE = re.compile(r"^\s+(\d+)\s+(\S+)\s+(\S+)\s+\(\d+, \d+, \d+\)\s+\S+\s+(\S+)")


def bench_target(url: str, **kwargs) -> SshTarget:
    """`ssh://[user@]host[:port][/dir]` -> an SshTarget (the folder defaults to DEFAULT_DIR)."""
    if not url.startswith("ssh://"):
        raise FlashError(f"--on {printable(url)}: expected ssh://[USER@]HOST[:PORT][/DIR]")
    if urlsplit(url).path in ("", "/"):
        url = url.rstrip("/") + DEFAULT_DIR
    target = parse_target(url, **kwargs)
    assert isinstance(target, SshTarget)
    return target


def parse_info(text: str) -> dict:
    """em_run --info -> {"nodes": [{index, name, op, kernel}], "cpu_features": str}."""
    nodes, features = [], None
    in_nodes = False
    for line in text.splitlines():
        if line.startswith("nodes:"):
            in_nodes = True
            continue
        if line.startswith("cpu features:"):
            features = line.split(":", 1)[1].strip()
            in_nodes = False
            continue
        m = _NODE_LINE.match(line) if in_nodes else None
        if m:
            nodes.append({"index": int(m.group(1)), "name": m.group(2), "op": m.group(3), "kernel": m.group(4)})
    return {"nodes": nodes, "cpu_features": features}


def _timing(t: dict) -> dict:
    """em_run's timing object -> bench's form (ms dict with std, and the first run)."""
    return {"ms": {"min": t["min_ms"], "median": t["median_ms"], "p95": t["p95_ms"], "mean": t["mean_ms"],
                   "std": t["std_ms"]}, "first_run_ms": t["first_ms"], "runs": t["runs"]}


def _em_run(target: SshTarget, model_name: str, args: list[str], what: str, timeout: float) -> str:
    r = target.run_script(_EM_RUN, [target.directory, model_name, *args], what, timeout=timeout)
    if r.returncode != 0:
        err = r.stderr.decode(errors="replace").strip().splitlines()
        raise FlashError(f"{target.describe()}: {what} failed (exit {r.returncode}): "
                         f"{err[-1] if err else 'no message'}")
    return r.stdout.decode(errors="replace")


def _python_on_device(target: SshTarget, python: str) -> str | None:
    """None when the device's `python` imports ai_edge_litert and numpy, else the reason it does not."""
    r = target.run_script(_PYTHON_PROBE, [python], "the python probe", timeout=120)
    out = r.stdout.decode(errors="replace").strip()
    if r.returncode != 0 or out:
        return out.splitlines()[-1] if out else f"the python3 probe failed (exit {r.returncode})"
    return None


def bench_on_device(model: str | Path, url: str, board, references: list[dict[str, str]] | None = None, *,
                    threads: int = 1, runs: int = 200, warmup: int = 20, runtime_dir=None,
                    identity: str | None = None, port: int | None = None, ssh_options: list[str] | None = None,
                    connect_timeout: int = 10, python: str = "python3", log: Callable[[str], None] | None = None) -> dict:
    """Installs em_run and `model` on the device at `url` and benchmarks there; see the module docstring."""
    from edgemerge.measure.peers import open_peer_models, peer_kind, peer_label
    from edgemerge.runtime import Runtime

    log = log or (lambda message: None)
    if board is None:
        raise FlashError("--on needs --board (which em_run to install on the device)")
    target = bench_target(url, port=port, identity=identity, ssh_options=ssh_options,
                          connect_timeout=connect_timeout)
    model = Path(model)
    host = Runtime(model)                       # a model the runtime refuses is never sent
    peer_sets = list(references or [])
    labels: set[str] = set()
    peers_here = []
    for files in peer_sets:                     # checked on the host before anything is built or sent
        models = open_peer_models(host, files, threads)
        peers_here.append((peer_label(models, labels), models))

    log(f"probing {target.describe()}")
    info = target.probe([])
    if info["machine"] is not None and info["machine"] != board.uname_m:
        raise FlashError(f"{target.describe()}: wrong board: the device's `uname -m` is {info['machine']}, but "
                         f"board {board.name} is {board.uname_m} ({board.description}); nothing was changed")
    installed = flash(model, target, board=board, with_runtime=True, runtime_dir=runtime_dir, log=log)
    name = installed["name"]
    budget = 120 + 5 * (runs + warmup)          # seconds: generous for a slow board, bounded for a hung one

    log("em_run --info on the device")
    node_info = parse_info(_em_run(target, name, ["--info"], "em_run --info", timeout=120))
    log(f"em_run --task all: {warmup} warm-up and {runs} timed runs, {threads} thread(s)")
    raw = _em_run(target, name, ["--task", "all", "--runs", str(runs), "--warmup", str(warmup),
                                 "--threads", str(threads), "--json"], "em_run --task all", timeout=budget)
    try:
        timings = json.loads(raw.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise FlashError(f"{target.describe()}: em_run --json printed no JSON: {raw.strip()[:200]!r}") from None

    file_bytes = model.stat().st_size
    merged = {"runtime": f"em_run ({board.name} build), em_run_all timed in C around the call",
              "kernels": timings["kernels"], "cpu_features": timings["cpu_features"],
              "node_kernels": node_info["nodes"],
              "kernels_used": sorted({n["kernel"] for n in node_info["nodes"]}),
              "threads": timings["threads"], "task_lanes": timings["task_lanes"],
              "load_ms": timings["load_ms"], "file_bytes": file_bytes, "context_bytes": timings["context_bytes"],
              "packed_bytes": int(timings["packed_bytes"]),
              "peak_bytes": file_bytes + int(timings["packed_bytes"]) + int(timings["context_bytes"]),
              **_timing(timings["all"])}
    tasks = {task: {"merged_alone": _timing(t), "peers": {}} for task, t in timings["tasks"].items()}

    peers: list[dict[str, Any]] = []
    reason = _python_on_device(target, python) if peers_here else None
    for n, (label, models) in enumerate(peers_here, start=1):
        kinds = sorted({peer_kind(m.path) for m in models.values()})
        entry: dict[str, Any] = {"label": label, "kind": "+".join(kinds),
                                 "files": {t: str(m.path) for t, m in models.items()}}
        if kinds != ["tflite"]:
            entry.update(status="skipped", reason=f"only .tflite peers run on the device (this one is {entry['kind']})")
        elif reason is not None:
            entry.update(status="skipped", reason=f"{python} with ai-edge-litert is not usable on the device: {reason}")
        else:
            log(f"running peer {label} on the device")
            remote = {}
            for task, m in models.items():
                remote_name = f"peer{n}_{task}{m.path.suffix.lower()}"
                target.install(m.path.read_bytes(), remote_name, 0o644)
                remote[task] = remote_name
            target.install((Path(__file__).parent / "device_peer.py").read_bytes(), PEER_SCRIPT, 0o644)
            spec = {"models": remote, "runs": runs, "warmup": warmup, "threads": threads, "seed": 0}
            r = target.run_script(_PEER, [target.directory, python, json.dumps(spec)], f"peer {label}", timeout=budget)
            out = r.stdout.decode(errors="replace").strip().splitlines()
            if r.returncode != 0 or not out:
                err = r.stderr.decode(errors="replace").strip().splitlines()
                entry.update(status="skipped", reason=f"the peer script failed on the device (exit {r.returncode}): "
                                                      f"{err[-1] if err else 'no message'}")
            else:
                got = json.loads(out[-1])
                entry.update(status="ran", runtime=got["runtime"], load_ms=got["load_ms"],
                             first_run_ms=got["first_run_ms"], ms=got["ms"],
                             speedup=got["ms"]["median"] / merged["ms"]["median"] if merged["ms"]["median"] > 0
                             else float("inf"),
                             peak_bytes=got["peak_bytes"], peak_method=got["peak_method"])
                for task, t in got["tasks"].items():
                    tasks[task]["peers"][label] = {"ms": t["ms"], "input": t["input"]}
        peers.append(entry)

    return {"on": target.describe(), "board": board.name, "board_description": board.description,
            "machine": info["machine"], "runs": runs, "warmup": warmup, "threads": threads,
            "interleaved": False,
            "order": "em_run first (all its runs in one process), then each peer's process; not interleaved",
            "inputs": "em_run: a fixed deterministic pattern in [-1, 1) per input; peers: seeded uniform [0, 1)",
            "installed": [{k: f[k] for k in ("name", "bytes", "sha256", "unchanged")} for f in installed["files"]],
            "merged": merged, "peers": peers, "tasks": tasks,
            "notes": [f"{EM_RUN_NAME} and the peer run one after the other on the device, not interleaved"]}


__all__ = ["bench_on_device", "bench_target", "parse_info", "DEFAULT_DIR"]
