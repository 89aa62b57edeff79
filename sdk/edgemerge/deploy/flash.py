"""`edgemerge flash`: copy a merged model (and optionally the board's em_run) onto a device, atomically,
check it there, and optionally run it there against the host runtime.

Targets
    ssh://[USER@]HOST[:PORT]/DIR    through the system OpenSSH client (`ssh`): it honours ~/.ssh/config,
                                     agents, ProxyJump and known_hosts as the user set them up, and the
                                     device needs nothing but sshd and coreutils (sha256sum, mktemp).
    dir:DIR                          a mounted SD card or any folder.

Every file goes to a temporary name beside its final one (`.NAME.edgemerge-tmp.` and a random part), is synced,
its SHA-256 is read back *on the target* and compared with the host's, and only then renamed over the old file
(rename(2) is atomic within a folder); the final file is read back once more. An interrupted flash (network
gone, Ctrl-C, SIGKILL) therefore leaves the previous model in place: at worst a temporary file, which the
next flash of the same name removes (by the exact form of the names flash creates, never a glob). Before
anything is written the target is probed: `uname -m` against the board profile's `uname_m` (ssh), free space
against the file size, sha256sum present; a read-only folder is reported as read-only.

`--verify` runs a fixed seeded input per task through em_run on the device (ssh) or under the board's
emulator (dir) and compares with the host runtime: same top-1, logits within 1e-4 (relative to the
largest logit when that is above 1).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable
from urllib.parse import unquote, urlsplit

import numpy as np

from edgemerge.deploy.dir_target import DirTarget
from edgemerge.deploy.ssh_target import SshTarget
from edgemerge.deploy.transfer import EM_RUN_NAME, TMP_MARK, FlashError, check_file_name, sha256_hex

VERIFY_TOLERANCE = 1e-4
VERIFY_SEED = 0


def parse_target(spec: str, *, port: int | None = None, identity: str | None = None,
                 ssh_options: list[str] | None = None, connect_timeout: int = 10):
    """`ssh://[user@]host[:port]/dir` or `dir:PATH` -> a target. `/~/dir` in an ssh URL is relative to the
    login user's home folder."""
    if spec.startswith("dir:"):
        path = spec[4:]
        if not path:
            raise FlashError("dir: target needs a folder, e.g. dir:/media/sdcard/models")
        if port or identity or ssh_options:
            raise FlashError("--port, --identity and --ssh-option apply to ssh:// targets only")
        return DirTarget(Path(path).expanduser())
    if spec.startswith("ssh://"):
        parts = urlsplit(spec)
        if not parts.hostname:
            raise FlashError(f"{spec}: no host (expected ssh://[user@]host[:port]/folder)")
        try:
            url_port = parts.port
        except ValueError:
            raise FlashError(f"{spec}: the port is not a number in 1..65535") from None
        path = unquote(parts.path)
        if path in ("", "/"):
            raise FlashError(f"{spec}: no folder (expected ssh://[user@]host[:port]/folder)")
        if path.startswith("/~/"):
            path = path[3:].rstrip("/") or "."
        elif path.rstrip("/"):
            path = path.rstrip("/")
        if port and url_port and port != url_port:
            raise FlashError(f"{spec}: --port {port} contradicts the URL's port {url_port}")
        return SshTarget(host=parts.hostname, directory=path,
                         user=unquote(parts.username) if parts.username else None, port=port or url_port,
                         identity=os.path.expanduser(identity) if identity else None,
                         ssh_options=list(ssh_options or []), connect_timeout=connect_timeout)
    raise FlashError(f"{spec}: unknown target (expected ssh://[user@]host[:port]/folder or dir:/folder)")


# ------------------------------------------------------------------------------------------------
# the flash
# ------------------------------------------------------------------------------------------------
def verify_inputs(runtime) -> dict[str, np.ndarray]:
    """The fixed input of every task: float32 N(0, 1), seeded by VERIFY_SEED and the task's index."""
    return {t.name: np.random.default_rng([VERIFY_SEED, t.index]).normal(size=t.input_shape).astype(np.float32)
            for t in runtime.tasks}


def compare_logits(got: np.ndarray, want: np.ndarray) -> dict:
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    diff = float(np.max(np.abs(got.astype(np.float64) - want))) if want.size else 0.0
    return {"top1_device": int(np.argmax(got)), "top1_host": int(np.argmax(want)), "max_abs_diff": diff,
            "tolerance": VERIFY_TOLERANCE * scale,
            "ok": bool(np.argmax(got) == np.argmax(want) and diff <= VERIFY_TOLERANCE * scale)}


def board_em_run(board, runtime_dir: str | os.PathLike | None, log: Callable[[str], None]) -> Path:
    """The board's cross-built em_run: from `runtime_dir` (default build/<board>) when a build of that
    board is there, else built into it now (boards.build_board)."""
    import json

    from edgemerge.deploy.boards import MANIFEST_NAME, build_board

    out = Path(runtime_dir) if runtime_dir is not None else Path("build") / board.name
    manifest = out / MANIFEST_NAME
    if (out / EM_RUN_NAME).is_file() and manifest.is_file():
        try:
            built_for = json.loads(manifest.read_text()).get("board")
        except (OSError, ValueError):
            built_for = None
        if built_for != board.name:
            raise FlashError(f"{out} holds a build for board {built_for!r}, not {board.name!r}: "
                             f"choose another --runtime-dir")
        return out / EM_RUN_NAME
    log(f"building em_run for {board.name} into {out}")
    build_board(board, out, log=log)
    return out / EM_RUN_NAME


def flash(model: str | os.PathLike, target, *, board=None, with_runtime: bool = False, verify: bool = False,
          runtime_dir: str | os.PathLike | None = None, name: str | None = None, limit_kib: float | None = None,
          log: Callable[[str], None] | None = None) -> dict:
    """Installs `model` on `target` (a DirTarget or SshTarget), and with `with_runtime` the board's em_run
    beside it; with `verify` runs every task there and compares with the host runtime. Returns a summary."""
    from edgemerge.runtime import Runtime

    log = log or (lambda message: None)
    started = time.perf_counter()
    model = Path(model)
    try:
        data = model.read_bytes()
    except OSError as e:
        raise FlashError(f"{model}: cannot read ({e.strerror})") from None
    host = Runtime(data)  # a file the runtime refuses is never sent
    name = check_file_name(name or model.name)
    if name == EM_RUN_NAME:
        raise FlashError(f"the model cannot be called {EM_RUN_NAME} (that name is the runtime's)")
    if with_runtime and board is None:
        raise FlashError("--with-runtime needs --board (which em_run to install)")

    files: list[tuple[str, bytes, int]] = []
    if with_runtime:
        em_run = board_em_run(board, runtime_dir, log)
        files.append((EM_RUN_NAME, em_run.read_bytes(), 0o755))
    # the model last: when it lands, a verified em_run is already beside it
    files.append((name, data, 0o644))

    log(f"probing {target.describe()}")
    if isinstance(target, SshTarget):
        info = target.probe([n for n, _, _ in files])
        on_target = info["old"]
    else:
        info = target.probe()
        on_target = {n: target.existingsha256_hex(n) for n, _, _ in files}
    previous = on_target.get(name)
    machine = info["machine"]
    if board is not None and machine is not None and machine != board.uname_m:
        raise FlashError(f"{target.describe()}: wrong board: the device's `uname -m` is {machine}, but board "
                         f"{board.name} is {board.uname_m} ({board.description}); nothing was changed")
    needed = max(len(d) for _, d, _ in files)
    if info["free_bytes"] is not None and needed > info["free_bytes"]:
        raise FlashError(f"{target.describe()}: the device's disk is full: {info['free_bytes']} bytes free, "
                         f"{needed} needed for {max(files, key=lambda f: len(f[1]))[0]}; nothing was changed")

    result = {"target": target.describe(), "model": str(model), "name": name, "bytes": len(data),
              "sha256": sha256_hex(data), "previous_sha256": previous, "machine": machine,
              "board": board.name if board is not None else None, "files": [], "leftovers_removed": 0,
              "verify": None}
    for file_name, payload, mode in files:
        if file_name == EM_RUN_NAME and on_target.get(file_name) == sha256_hex(payload):
            # the same em_run is there already (checked by its SHA-256 on the target): keep it
            result["files"].append({"name": file_name, "bytes": len(payload), "sha256": on_target[file_name],
                                    "seconds": 0.0, "unchanged": True})
            continue
        log(f"installing {file_name} ({len(payload)} bytes)")
        t0 = time.perf_counter()
        if isinstance(target, SshTarget):
            sha, leftovers = target.install(payload, file_name, mode, limit_kib)
        else:
            leftovers = target.remove_leftovers(file_name)
            sha = target.install(payload, file_name, mode, limit_kib)
        result["leftovers_removed"] += leftovers
        result["files"].append({"name": file_name, "bytes": len(payload), "sha256": sha,
                                "seconds": round(time.perf_counter() - t0, 3), "unchanged": False})

    if verify:
        tasks = {}
        for task, x in verify_inputs(host).items():
            log(f"verifying task {task} on the device")
            raw = target.run_em_run(board, task, x.astype("<f4").tobytes(), name)
            want = host.run(task, x[None])[0]
            got = np.frombuffer(raw, dtype="<f4")
            if got.shape != want.shape:
                raise FlashError(f"verify: task {task!r}: the device returned {got.size} logits, the host "
                                 f"runtime {want.size} (the model is installed)")
            tasks[task] = compare_logits(got, want)
        result["verify"] = tasks
        bad = [t for t, r in tasks.items() if not r["ok"]]
        if bad:
            details = "; ".join(f"{t}: top-1 {tasks[t]['top1_device']} vs {tasks[t]['top1_host']}, max |diff| "
                                f"{tasks[t]['max_abs_diff']:.3g} > {tasks[t]['tolerance']:.3g}" for t in bad)
            raise FlashError(f"verify failed on {target.describe()} (the model is installed): {details}")
    result["seconds"] = round(time.perf_counter() - started, 3)
    return result


__all__ = ["FlashError", "DirTarget", "SshTarget", "parse_target", "flash", "verify_inputs", "compare_logits",
           "EM_RUN_NAME", "TMP_MARK"]
