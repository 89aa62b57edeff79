"""Writing output files safely: every file the Python tools write (merge -o, export-c -o, zipper outputs, bench
outputs) goes through `atomic_write_bytes`, and flash's `dir:` target through `create_temporary` and
`check_output_target`.

The rules (issue 19, the same as runtime_c/tools/em_file_out.c):
- the target must be a regular file or absent: a directory, device, FIFO or socket is refused with a clear
  message (renaming over /dev/null would replace the device node when run as root);
- the temporary is created in the target's folder with O_CREAT|O_EXCL|O_NOFOLLOW under a random name, so a
  planted symlink or a file of another process is never opened; it gets the old file's mode;
- data is fsync'ed, then renamed over the target (atomic within a folder), then the folder is fsync'ed;
- on any failure the temporary is removed by the exact name this process created, nothing else;
- disk-full, read-only and permission errors are reported as such (`OutputFileError`, an `EdgemergeError`
  that the CLI prints as one `error:` line).
"""
from __future__ import annotations

import errno
import os
import secrets
import stat
import time
from pathlib import Path

from edgemerge.errors import EdgemergeError

PAUSE_ENV = "EDGEMERGE_TEST_PAUSE_AT"
PAUSE_MARKER_ENV = "EDGEMERGE_TEST_PAUSE_MARKER"


class OutputFileError(EdgemergeError, OSError):
    """An output file could not be written; the previous file (if any) is unchanged. Also an OSError, so
    callers that handled the OSError of a failed write keep working."""

    def __init__(self, message: str, errno_: int | None = None):
        EdgemergeError.__init__(self, message)
        self.errno = errno_

    def __str__(self) -> str:
        return str(self.args[0])


def test_pause_point(phase: str) -> None:
    """Test-only hook, so kill tests wait for an event instead of racing a timer: when the environment variable
    EDGEMERGE_TEST_PAUSE_AT equals `phase`, the process creates the file named by EDGEMERGE_TEST_PAUSE_MARKER and
    then blocks here until a signal stops it (SIGINT/SIGTERM raise KeyboardInterrupt through the CLI's handlers,
    so clean-up runs as it would for a real interruption at this point). Phases: "merge" (models imported, before
    merging), "rename" (the temporary is written and synced, before the rename). Does nothing when the variable is
    unset or names another phase."""
    if os.environ.get(PAUSE_ENV) != phase:
        return
    marker = os.environ.get(PAUSE_MARKER_ENV)
    if marker:
        with open(marker, "w") as f:
            f.write(f"{os.getpid()} {phase}\n")
    # Only a signal ends this. Short sleeps, not one long one: CPython runs a signal's Python handler in the
    # main thread at its next bytecode, but the OS may deliver a process-directed signal to any thread that does
    # not block it (TensorFlow starts many); then the main thread's sleep is not interrupted, and a 3600 s sleep
    # made a SIGINT'ed test process hang for an hour under load (seen in a loaded `make test`).
    while True:
        time.sleep(0.05)


test_pause_point.__test__ = False  # not a pytest test, whatever its name


def _file_mode(path: Path) -> int:
    """The permissions a written file gets: those of the file it replaces, else 0666 less the umask (what
    open() would give), never mkstemp's private 0600."""
    try:
        st = path.stat()
        if stat.S_ISREG(st.st_mode):
            return st.st_mode & 0o7777
    except OSError:
        pass
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return 0o666 & ~mask


def fsync_folder(folder: Path) -> None:
    """Makes the rename durable (POSIX); a no-op where folders cannot be opened."""
    flags = getattr(os, "O_DIRECTORY", None)
    if flags is None:
        return
    try:
        fd = os.open(folder, os.O_RDONLY | flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))


def file_kind(mode: int) -> str | None:
    """What a non-regular file is ("a directory", "a FIFO", ...), or None for a regular file."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return None if stat.S_ISREG(mode) else "not a regular file"


def describe_os_error(e: OSError) -> str:
    """An OSError in words a user acts on: disk full, read-only, permission denied, else the system's text."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on the device (disk full)"
    if e.errno == errno.EROFS:
        return "read-only file system"
    if e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return e.strerror or str(e)


def check_output_target(path: str | os.PathLike, what: str = "output") -> Path:
    """Refuses, before any work is done, an output path that can never be written: one that is a directory,
    device, FIFO or socket (a symlink is judged by what it points to), or whose folder is missing."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise OutputFileError(f"{what} {path}: {describe_os_error(e)}", e.errno) from None
    if st is not None:
        kind = file_kind(st.st_mode)
        if kind:
            raise OutputFileError(f"{what} {path}: is {kind}, not a regular file; refusing to replace it")
    folder = path.parent
    if not folder.is_dir() and folder.exists():
        raise OutputFileError(f"{what} {path}: {folder} is not a folder")
    return path


def create_temporary(folder: Path, prefix: str, suffix: str, mode: int) -> tuple[int, Path]:
    """A new file `<prefix><random><suffix>` in `folder`, opened for writing with O_CREAT|O_EXCL|O_NOFOLLOW:
    never an existing file, never through a symlink. Returns (fd, path); the caller removes exactly `path`."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = folder / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            fd = os.open(tmp, flags, 0o600)
        except FileExistsError:
            continue
        try:
            os.fchmod(fd, mode)  # not the umask's choice: the old file's mode (set explicitly)
        except OSError:
            pass
        return fd, tmp
    raise OutputFileError(f"{folder}: cannot find a free temporary name", errno.EEXIST)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` through a temporary file in the same folder and a rename, so a reader (or
    an interrupted write) never sees a half-written file. Raises OutputFileError with the reason in words."""
    path = check_output_target(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputFileError(f"cannot create the folder {path.parent}: {describe_os_error(e)}", e.errno) from None
    mode = _file_mode(path)
    try:
        fd, tmp = create_temporary(path.parent, f".{path.name}.", ".tmp", mode)
    except OSError as e:
        if isinstance(e, OutputFileError):
            raise
        raise OutputFileError(f"cannot write {path}: {describe_os_error(e)} (creating a file in "
                              f"{path.parent})", e.errno) from None
    try:
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            test_pause_point("rename")
            # re-checked just before the rename: something may have appeared at the target meanwhile
            check_output_target(path)
            os.replace(tmp, path)
        except OutputFileError:
            raise
        except OSError as e:
            raise OutputFileError(f"cannot write {path}: {describe_os_error(e)}; the previous file is unchanged",
                                  e.errno) from None
        fsync_folder(path.parent)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
