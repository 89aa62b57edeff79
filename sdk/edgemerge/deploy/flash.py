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

import errno
import hashlib
import os
import re
import shlex
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import unquote, urlsplit

import numpy as np

from edgemerge.emm.files import create_temporary, describe_os_error, file_kind, fsync_folder
from edgemerge.errors import EdgemergeError
from edgemerge.text import printable

EM_RUN_NAME = "em_run"
TMP_MARK = ".edgemerge-tmp."
"""Temporary files are `.<name>.edgemerge-tmp.XXXXXX` in the target folder."""
VERIFY_TOLERANCE = 1e-4
VERIFY_SEED = 0
CHUNK_BYTES = 16 * 1024


class FlashError(EdgemergeError):
    """A flash could not be done; the target's previous files are unchanged (the message says otherwise)."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tmp_prefix(name: str) -> str:
    return f".{name}{TMP_MARK}"


_TMP_RANDOM = re.compile(r"[0-9a-f]{12}")
"""The random part of a temporary name this module creates (emm.files.create_temporary: 12 hex digits)."""


def _is_our_temporary(entry: str, name: str) -> bool:
    """True only for a name this module creates for `name`: the literal prefix `.<name>.edgemerge-tmp.` then
    12 hex digits. Compared as text, never as a glob: `--name '*'` must not match another model's temporary."""
    prefix = _tmp_prefix(name)
    return entry.startswith(prefix) and bool(_TMP_RANDOM.fullmatch(entry[len(prefix):]))


def _check_file_name(name: str) -> str:
    if not name or "/" in name or name in (".", "..") or "\0" in name or "\n" in name:
        raise FlashError(f"{name!r} is not a plain file name")
    return name


def _throttled_chunks(data: bytes, limit_kib: float | None):
    """`data` in CHUNK_BYTES pieces, paced to `limit_kib` KiB/s when given."""
    started = time.monotonic()
    for start in range(0, len(data), CHUNK_BYTES):
        if limit_kib:
            due = started + start / (limit_kib * 1024.0)
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        yield data[start:start + CHUNK_BYTES]


# ------------------------------------------------------------------------------------------------
# dir: targets
# ------------------------------------------------------------------------------------------------
@dataclass
class DirTarget:
    directory: Path

    kind = "dir"

    def describe(self) -> str:
        return f"dir:{printable(self.directory)}"

    def probe(self) -> dict:
        """Checks without changing anything; the folder itself is created by install() (its parent must
        exist: a missing mount point is an error, not a new folder on the root file system)."""
        d = self.directory
        at = d
        if not d.is_dir():
            if d.exists() or not d.parent.is_dir():
                raise FlashError(f"{self.describe()}: no such folder (is the card mounted?)")
            at = d.parent
        st = os.statvfs(at)
        if st.f_flag & getattr(os, "ST_RDONLY", 1):
            raise FlashError(f"{self.describe()}: {at} is on a read-only file system; nothing was changed")
        if not os.access(at, os.W_OK | os.X_OK):
            raise FlashError(f"{self.describe()}: {at} is not writable (permission denied); nothing was changed")
        return {"machine": None, "free_bytes": st.f_bavail * st.f_frsize}

    def check_name_free(self, name: str) -> None:
        """Refuses a final name that is there but is not a regular file (a folder, device, FIFO, socket)."""
        try:
            st = os.stat(self.directory / name)
        except OSError:
            return
        if not stat.S_ISREG(st.st_mode):
            raise FlashError(f"{self.describe()}: {printable(name)} there is {file_kind(st.st_mode)}, not a regular "
                             "file; refusing to replace it (choose another --name); nothing was changed")

    def existing_sha256(self, name: str) -> str | None:
        self.check_name_free(name)  # never read a folder, or a FIFO that would block
        try:
            return _sha256((self.directory / name).read_bytes())
        except FileNotFoundError:
            return None
        except OSError as e:
            raise FlashError(f"{self.describe()}: cannot read the installed {printable(name)} "
                             f"({describe_os_error(e)}); nothing was changed") from None

    def remove_leftovers(self, name: str) -> int:
        """Removes the temporaries an interrupted flash of `name` left: exactly the names `install` creates for
        `name` (see _is_our_temporary), and only regular files."""
        removed = 0
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return 0
        for entry in entries:
            if not _is_our_temporary(entry.name, name) or not entry.is_file(follow_symlinks=False):
                continue
            try:
                os.unlink(self.directory / entry.name)
                removed += 1
            except OSError:
                pass
        return removed

    def _read_back(self, path: Path) -> str:
        """SHA-256 of a file as the target stores it (a separate function so tests can see a bad medium)."""
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    def _write(self, f, chunk: bytes) -> None:
        f.write(chunk)

    def install(self, data: bytes, name: str, mode: int, limit_kib: float | None = None) -> str:
        """Writes `data` as DIR/name atomically; returns the SHA-256 read back from the final file."""
        want = _sha256(data)
        final = self.directory / name
        try:
            self.directory.mkdir(exist_ok=True)
        except OSError as e:
            raise FlashError(f"{self.describe()}: cannot create the folder ({describe_os_error(e)})") from None
        self.check_name_free(name)
        try:
            fd, tmp = create_temporary(self.directory, _tmp_prefix(name), "", mode)
        except OSError as e:
            raise FlashError(f"{self.describe()}: cannot create a file there ({describe_os_error(e)}); "
                             "nothing was changed") from None
        try:
            try:
                with os.fdopen(fd, "wb") as f:
                    for chunk in _throttled_chunks(data, limit_kib):
                        self._write(f, chunk)
                    f.flush()
                    os.fchmod(f.fileno(), mode)
                    os.fsync(f.fileno())
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise FlashError(f"{self.describe()}: no space left writing {printable(name)} ({len(data)} "
                                     "bytes); the previous file is unchanged") from None
                raise FlashError(f"{self.describe()}: writing {printable(name)} failed ({describe_os_error(e)}); "
                                 "the previous file is unchanged") from None
            got = self._read_back(tmp)
            if got != want:
                raise FlashError(f"{self.describe()}: checksum mismatch for {name}: the target read back "
                                 f"sha256 {got}, the host sent {want}; the previous file is unchanged")
            self.check_name_free(name)
            try:
                os.replace(tmp, final)
            except OSError as e:
                raise FlashError(f"{self.describe()}: renaming onto {printable(name)} failed "
                                 f"({describe_os_error(e)}); the previous file is unchanged") from None
        except BaseException:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
            raise
        fsync_folder(self.directory)
        got = self._read_back(final)
        if got != want:
            raise FlashError(f"{self.describe()}: {name} reads back sha256 {got} after the rename, the host "
                             f"sent {want}: the target's storage is failing")
        return got

    def run_em_run(self, board, task: str, x: bytes, model_name: str) -> bytes:
        """Runs the installed em_run on the installed model here, under the board's emulator."""
        em_run = self.directory / EM_RUN_NAME
        if not em_run.is_file():
            raise FlashError(f"{self.describe()}: --verify needs {EM_RUN_NAME} there: add --with-runtime")
        with tempfile.TemporaryDirectory(prefix="edgemerge-verify-") as work:
            xin, yout = Path(work) / "x.f32", Path(work) / "y.f32"
            xin.write_bytes(x)
            emulator = board.emulator() if board is not None else []
            env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
            cmd = [*emulator, str(em_run), str(self.directory / model_name), "--task", task,
                   "--input", str(xin), "--output", str(yout)]
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
            except OSError as e:
                raise FlashError(f"cannot run {cmd[0]} ({e.strerror})") from None
            if r.returncode != 0:
                raise FlashError(f"em_run on {self.describe()} failed for task {task!r} (exit {r.returncode}): "
                                 f"{r.stderr.strip()}")
            return yout.read_bytes()


# ------------------------------------------------------------------------------------------------
# ssh:// targets
# ------------------------------------------------------------------------------------------------
# Remote scripts run by `sh -c SCRIPT sh ARGS...` (whatever the login shell is); every value reaches
# them as a positional argument quoted with shlex.quote, never pasted into the script.
_PROBE = r"""
dir=$1; shift
echo "machine=$(uname -m)"
at=$dir
if [ ! -d "$dir" ]; then
    at=$(dirname -- "$dir")
    [ -d "$at" ] || { echo "nodir=yes"; exit 0; }
    echo "create=yes"
fi
if [ -w "$at" ] && [ -x "$at" ]; then echo "writable=yes"; else echo "writable=no"; fi
echo "free_kib=$(df -Pk -- "$at" | awk 'NR==2 {print $4}')"
if command -v sha256sum >/dev/null 2>&1; then echo "sha256sum=yes"; else echo "sha256sum=no"; fi
for name in "$@"; do
    if [ -f "$dir/$name" ]; then echo "old $name $(sha256sum -- "$dir/$name" | cut -d' ' -f1)"; fi
done
"""

_INSTALL = r"""
dir=$1; name=$2; want=$3; mode=$4
[ -d "$dir" ] || mkdir -- "$dir" || exit 20
cd -- "$dir" || exit 20
removed=0
for old in ".$name.edgemerge-tmp."*; do
    [ -e "$old" ] || continue
    rm -f -- "$old" && removed=$((removed + 1))
done
echo "leftovers=$removed"
tmp=$(mktemp ".$name.edgemerge-tmp.XXXXXX") || exit 21
trap 'rm -f -- "$tmp"' EXIT
trap 'exit 1' HUP INT TERM PIPE
cat > "$tmp" || exit 21
sync "$tmp" 2>/dev/null || sync
got=$(sha256sum -- "$tmp" | cut -d' ' -f1)
if [ "$got" != "$want" ]; then echo "mismatch=$got"; exit 22; fi
chmod "$mode" "$tmp" || exit 21
mv -f -- "$tmp" "$name" || exit 23
sync
echo "final=$(sha256sum -- "$name" | cut -d' ' -f1)"
"""

_RUN = r"""
dir=$1; model=$2; task=$3
work=$(mktemp -d) || exit 31
trap 'rm -rf -- "$work"' EXIT
trap 'exit 1' HUP INT TERM PIPE
cat > "$work/x.f32" || exit 31
[ -x "$dir/em_run" ] || { echo "no em_run at $dir/em_run" >&2; exit 32; }
"$dir/em_run" "$dir/$model" --task "$task" --input "$work/x.f32" --output "$work/y.f32" >&2 || exit 30
cat -- "$work/y.f32"
"""

_UNREACHABLE = ("Connection refused", "No route to host", "Could not resolve hostname", "Connection timed out",
                "Network is unreachable", "Name or service not known", "Operation timed out",
                "Connection closed by", "Connection reset")


@dataclass
class SshTarget:
    host: str
    directory: str
    user: str | None = None
    port: int | None = None
    identity: str | None = None
    ssh_options: list[str] = field(default_factory=list)
    connect_timeout: int = 10
    ssh: str = "ssh"

    kind = "ssh"

    def describe(self) -> str:
        user = f"{self.user}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port else ""
        path = self.directory if self.directory.startswith("/") else f"/~/{self.directory}"
        return f"ssh://{user}{host}{port}{path}"

    def _where(self) -> str:
        return f"{self.host}:{self.port or 22}"

    def command(self, script: str, *args: str) -> list[str]:
        """The ssh command line running `script` with `args` on the device. The user's -o options come first:
        ssh takes the first value it sees for an option, so they override our defaults."""
        cmd = [self.ssh]
        for opt in self.ssh_options:
            cmd += ["-o", opt]
        cmd += ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}",
                "-o", "StrictHostKeyChecking=accept-new", "-o", "ServerAliveInterval=15",
                "-o", "ServerAliveCountMax=4", "-o", "LogLevel=ERROR"]
        if self.port:
            cmd += ["-p", str(self.port)]
        if self.identity:
            cmd += ["-i", self.identity, "-o", "IdentitiesOnly=yes"]
        remote = " ".join(["sh", "-c", shlex.quote(script), "sh", *map(shlex.quote, args)])
        cmd += ["--", f"{self.user}@{self.host}" if self.user else self.host, remote]
        return cmd

    def _ssh_failure(self, stderr: str, what: str) -> FlashError:
        text = stderr.strip()
        last = text.splitlines()[-1] if text else "no message"
        if "Permission denied" in text:
            key = f"the key {self.identity}" if self.identity else "every key offered (agent, ~/.ssh)"
            return FlashError(f"{self.describe()}: the device refused {key} for "
                              f"{self.user or 'the default user'} ({last}); nothing was changed")
        if "Host key verification failed" in text or "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
            return FlashError(f"{self.describe()}: the device's host key does not match known_hosts ({last}); "
                              "nothing was changed")
        if any(s in text for s in _UNREACHABLE) or not text:
            return FlashError(f"{self.describe()}: cannot reach {self._where()} ({last}); nothing was changed"
                              if what == "probe" else
                              f"{self.describe()}: the connection to {self._where()} failed during {what} ({last}); "
                              "the previous files are unchanged")
        return FlashError(f"{self.describe()}: ssh failed during {what}: {last}")

    def _run(self, script: str, args: list[str], what: str, data: bytes = b"",
             limit_kib: float | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
        cmd = self.command(script, *args)
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as e:
            raise FlashError(f"cannot run {self.ssh} ({e.strerror}): install the OpenSSH client "
                             "(Debian: openssh-client)") from None
        try:
            try:
                for chunk in _throttled_chunks(data, limit_kib):
                    proc.stdin.write(chunk)
                    proc.stdin.flush()
            except BrokenPipeError:
                pass  # the remote side stopped reading: its exit status says why
            finally:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
                proc.stdin = None  # communicate() must not touch it again
            out, err = proc.communicate(timeout=timeout)
        except BaseException:
            # Interrupted (Ctrl-C, SIGTERM, timeout): the remote sees its input end early, its checksum
            # cannot match, and it removes the temporary file without touching the old one.
            proc.kill()
            proc.wait()
            raise
        if proc.returncode == 255:
            raise self._ssh_failure(err.decode(errors="replace"), what)
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)

    def probe(self, names: list[str]) -> dict:
        r = self._run(_PROBE, [self.directory, *names], "probe", timeout=self.connect_timeout + 60)
        text = r.stdout.decode(errors="replace")
        if r.returncode != 0:
            raise FlashError(f"{self.describe()}: probing the device failed (exit {r.returncode}): "
                             f"{r.stderr.decode(errors='replace').strip()}")
        info = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("old "))
        if info.get("nodir") == "yes":
            raise FlashError(f"{self.describe()}: {self.directory} does not exist on the device and cannot be "
                             "created (its parent folder must exist)")
        old = {}
        for line in text.splitlines():
            if line.startswith("old "):
                _, name, sha = line.split(" ", 2)
                old[name] = sha
        if info.get("writable") != "yes":
            raise FlashError(f"{self.describe()}: {self.directory} is not writable for "
                             f"{self.user or 'the login user'} on the device")
        if info.get("sha256sum") != "yes":
            raise FlashError(f"{self.describe()}: the device has no sha256sum (install coreutils there)")
        free = info.get("free_kib", "")
        return {"machine": info.get("machine"), "free_bytes": int(free) * 1024 if free.isdigit() else None,
                "old": old}

    def install(self, data: bytes, name: str, mode: int, limit_kib: float | None = None) -> tuple[str, int]:
        want = _sha256(data)
        r = self._run(_INSTALL, [self.directory, name, want, f"{mode:o}"], f"the transfer of {name}", data=data,
                      limit_kib=limit_kib, timeout=max(600, len(data) / (256 * 1024)))
        out = r.stdout.decode(errors="replace")
        err = r.stderr.decode(errors="replace").strip()
        values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        unchanged = "the previous file is unchanged"
        if r.returncode == 20:
            raise FlashError(f"{self.describe()}: cannot enter {self.directory}: {err}")
        if r.returncode == 21:
            if "No space left" in err or "Disk quota exceeded" in err:
                raise FlashError(f"{self.describe()}: the device's disk is full: no space left writing {name} "
                                 f"({len(data)} bytes); {unchanged}")
            raise FlashError(f"{self.describe()}: writing {name} failed on the device: {err}; {unchanged}")
        if r.returncode == 22:
            raise FlashError(f"{self.describe()}: checksum mismatch for {name}: the device read back sha256 "
                             f"{values.get('mismatch')}, the host sent {want}; {unchanged}")
        if r.returncode == 23:
            raise FlashError(f"{self.describe()}: renaming {name} into place failed: {err}; {unchanged}")
        if r.returncode != 0:
            raise FlashError(f"{self.describe()}: the transfer of {name} failed (exit {r.returncode}): {err}; "
                             f"{unchanged}")
        final = values.get("final")
        if final != want:
            raise FlashError(f"{self.describe()}: {name} reads back sha256 {final} after the rename, the host "
                             f"sent {want}: the device's storage is failing")
        return final, int(values.get("leftovers", "0") or 0)

    def run_script(self, script: str, args: list[str], what: str, data: bytes = b"",
                   timeout: float = 600) -> subprocess.CompletedProcess:
        """Runs `sh -c script sh args...` on the device (args quoted, never pasted into the script); ssh's own
        failures (unreachable, refused key, host key) raise FlashError, the script's exit status is returned."""
        return self._run(script, args, what, data=data, timeout=timeout)

    def run_em_run(self, board, task: str, x: bytes, model_name: str) -> bytes:
        r = self._run(_RUN, [self.directory, model_name, task], f"em_run of task {task!r}", data=x)
        if r.returncode != 0:
            err = r.stderr.decode(errors="replace").strip()
            hint = ": add --with-runtime" if r.returncode == 32 else ""
            raise FlashError(f"em_run on {self.describe()} failed for task {task!r} (exit {r.returncode}): "
                             f"{err}{hint}")
        return r.stdout


# ------------------------------------------------------------------------------------------------
# parsing
# ------------------------------------------------------------------------------------------------
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
    name = _check_file_name(name or model.name)
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
        on_target = {n: target.existing_sha256(n) for n, _, _ in files}
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
              "sha256": _sha256(data), "previous_sha256": previous, "machine": machine,
              "board": board.name if board is not None else None, "files": [], "leftovers_removed": 0,
              "verify": None}
    for file_name, payload, mode in files:
        if file_name == EM_RUN_NAME and on_target.get(file_name) == _sha256(payload):
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
