"""What every command shares: the `main` click group, the one-line error guard (`error: ...`, exit 1, never a
traceback), input-file checks made before heavy imports, quiet TensorFlow loading and output helpers.

Heavy modules (TensorFlow, scikit-learn, the C runtime) are imported inside the commands that need them,
so `edgemerge --help` and `edgemerge inspect` start quickly.
"""
from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click

from edgemerge import __version__
from edgemerge.errors import EdgemergeError


def _error_exit(message: str) -> None:
    """One `error:` line on stderr, then exit status 1. Messages name things with text.printable already; as a
    last guard every control character left (C0, DEL, C1: a raw CR/LF or ESC from some library's message) is
    written as `\\xNN` here, so a message is always one line and cannot move the cursor. Backslashes and
    printable text are kept (escaping them again would double the escapes printable made)."""
    line = "".join(f"\\x{ord(ch):02X}" if ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 else ch for ch in message)
    click.echo(f"error: {line}", err=True)
    sys.exit(1)


def _fail_cleanly(fn):
    """Every failure of a command is one `error: ...` line on stderr and exit status 1, never a traceback:
    EdgemergeError (the message says what and where), OSError (the file and the reason: disk full, read-only,
    permission denied...), MemoryError. Anything else is a bug in edgemerge: still one line, saying so; set
    EDGEMERGE_DEBUG=1 to see the traceback instead."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EdgemergeError as e:
            _error_exit(str(e))
        except OSError as e:
            from edgemerge.emm.files import describe_os_error
            where = f"{e.filename}: " if getattr(e, "filename", None) else ""
            _error_exit(f"{where}{describe_os_error(e)}")
        except MemoryError:
            _error_exit("out of memory (the input is too large for this machine)")
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # noqa: BLE001 - the last line of defence of "never a traceback"
            if os.environ.get("EDGEMERGE_DEBUG"):
                raise
            _error_exit(f"unexpected {type(e).__name__}: {e} (a bug in edgemerge; EDGEMERGE_DEBUG=1 shows the "
                        "traceback)")
    return wrapper


def _check_input_file(path: str, what: str) -> None:
    """Refuses, before any work or heavy import, an input that is missing or not a regular file (a folder; a FIFO
    or device whose read would block or never end)."""
    from edgemerge.text import printable

    if not os.path.exists(path):
        raise EdgemergeError(f"{what} {printable(path)}: no such file")
    if not os.path.isfile(path):
        raise EdgemergeError(f"{what} {printable(path)}: not a regular file")


def _check_model_files(pairs: dict[str, str], what: str = "model file") -> None:
    for path in pairs.values():
        _check_input_file(path, what)


def _needs_keras(paths) -> bool:
    """Whether any of `paths` is a Keras file (loading one imports TensorFlow; a .tflite does not)."""
    return any(Path(p).suffix.lower() in (".keras", ".h5", ".hdf5") for p in paths)


def _load_tensorflow_quietly() -> None:
    """Imports TensorFlow with the process's stderr silenced: its C++ start-up banners (oneDNN, CUDA probing)
    ignore TF_CPP_MIN_LOG_LEVEL and would bury our own messages. Python exceptions still surface."""
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow as tf
            tf.config.list_physical_devices()  # the CUDA probe happens here, once
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _load_reference_stacks(reference_files: dict[str, str], what: str) -> None:
    """What reading the original models needs: LiteRT for .tflite files (never TensorFlow), TensorFlow (quietly)
    for Keras files; a missing stack is one error line naming the extra to install."""
    from edgemerge.extras import require

    suffixes = {Path(f).suffix.lower() for f in reference_files.values()}
    if ".tflite" in suffixes:
        require("peers", f"{what} with a .tflite model")
    if ".onnx" in suffixes:
        require("onnx", f"{what} with an .onnx model")
    if suffixes - {".tflite", ".onnx"}:
        require("merge", f"{what} with a Keras model")
        _load_tensorflow_quietly()


def _echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _stop_like_ctrl_c_on_termination() -> None:
    """While a command runs, SIGTERM and SIGHUP stop it the way Ctrl-C does (KeyboardInterrupt), so `finally`
    blocks and the atomic writers' clean-up run: a killed `merge` leaves neither a partial output nor a stray
    temporary file (the default action of SIGTERM ends the process without any of that). A signal the caller
    ignores stays ignored: `nohup edgemerge merge ... &` has to outlive the terminal that started it (SIGHUP).
    The previous handlers come back when the command ends, so calling the CLI in-process (tests) changes nothing
    for the caller."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"stopped by signal {signum}")

    previous = {}
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name) and signal.getsignal(getattr(signal, name)) != signal.SIG_IGN:
            previous[name] = signal.signal(getattr(signal, name), interrupt)
    click.get_current_context().call_on_close(
        lambda: [signal.signal(getattr(signal, n), h) for n, h in previous.items()])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgemerge")
def main() -> None:
    """Merge trained CNNs into one compact multi-task model (.emm) and run it on CPU edge boards."""
    _stop_like_ctrl_c_on_termination()
    # Two cores on typical hosts and boards: keep the numeric libraries from oversubscribing them.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


