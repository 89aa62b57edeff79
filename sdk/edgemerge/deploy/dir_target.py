"""`dir:DIR` flash targets: a mounted SD card or any folder. Every file is written to a temporary name beside its
final one, synced, read back and checked, then renamed over the old file (see deploy/flash.py)."""
from __future__ import annotations

import errno
import hashlib
import os
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgemerge.deploy.transfer import (EM_RUN_NAME, FlashError, is_our_temporary, sha256_hex, throttled_chunks,
                                       tmp_prefix)
from edgemerge.emm.files import create_temporary, describe_os_error, file_kind, fsync_folder
from edgemerge.text import printable


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

    def existingsha256_hex(self, name: str) -> str | None:
        self.check_name_free(name)  # never read a folder, or a FIFO that would block
        try:
            return sha256_hex((self.directory / name).read_bytes())
        except FileNotFoundError:
            return None
        except OSError as e:
            raise FlashError(f"{self.describe()}: cannot read the installed {printable(name)} "
                             f"({describe_os_error(e)}); nothing was changed") from None

    def remove_leftovers(self, name: str) -> int:
        """Removes the temporaries an interrupted flash of `name` left: exactly the names `install` creates for
        `name` (see is_our_temporary), and only regular files."""
        removed = 0
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return 0
        for entry in entries:
            if not is_our_temporary(entry.name, name) or not entry.is_file(follow_symlinks=False):
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
        want = sha256_hex(data)
        final = self.directory / name
        try:
            self.directory.mkdir(exist_ok=True)
        except OSError as e:
            raise FlashError(f"{self.describe()}: cannot create the folder ({describe_os_error(e)})") from None
        self.check_name_free(name)
        try:
            fd, tmp = create_temporary(self.directory, tmp_prefix(name), "", mode)
        except OSError as e:
            raise FlashError(f"{self.describe()}: cannot create a file there ({describe_os_error(e)}); "
                             "nothing was changed") from None
        try:
            try:
                with os.fdopen(fd, "wb") as f:
                    for chunk in throttled_chunks(data, limit_kib):
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
