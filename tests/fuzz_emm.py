"""Coverage-guided fuzzer (atheris) for the Python reader and `edgemerge inspect`.

The contract: for any bytes, `edgemerge.emm.read_emm` either returns a graph or raises EmmFormatError, and
`edgemerge inspect FILE` (and `--json`) exits 0 or prints `error: ...` and exits 1 (the CLI's answer to an
EmmFormatError). Any other exception, exit status or a traceback is a bug: atheris reports it as a crash and
writes the input to the artifact folder; add it to runtime_c/fuzz/regressions/ (tests/cli/test_robustness.py and
the C replay test replay that folder).

Like the C fuzzer, a mutation that only broke a checksum is also tried with every CRC re-sealed, so the
fuzzer reaches the record checks behind the CRCs. The reader and the C loader are compared as well: the C
loader is the authority, so a file that it refuses and the Python reader accepts is counted and printed
(`--strict-agreement` makes it a failure).

    python tests/fuzz_emm.py [atheris/libFuzzer flags] [NEW_CORPUS_DIR] runtime_c/fuzz/corpus
    python tests/fuzz_emm.py -max_total_time=30 build/pyfuzz runtime_c/fuzz/corpus   # what CI runs

(the first corpus folder receives new inputs, keep the committed one read-only).
"""
from __future__ import annotations

import atexit
import os
import sys
import tempfile

import atheris

STRICT = "--strict-agreement" in sys.argv
if STRICT:
    sys.argv.remove("--strict-agreement")

with atheris.instrument_imports(include=["edgemerge"]):
    from edgemerge import emm
    from edgemerge.cli import main as cli_main
    from edgemerge.errors import EmmFormatError
    from edgemerge.measure.inspect_model import describe
    from edgemerge.runtime import Runtime

from click.testing import CliRunner  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corrupt import reseal  # noqa: E402  (after the instrumented imports: it imports edgemerge too)

_TMP = tempfile.mkdtemp(prefix="edgemerge-pyfuzz-")
_PATH = os.path.join(_TMP, "input.emm")
_RUNNER = CliRunner()
_COUNTS = {"inputs": 0, "python_ok": 0, "c_ok": 0, "python_only": 0, "c_only": 0, "resealed": 0}


def check_reader(data: bytes) -> bool:
    """read_emm: a graph or EmmFormatError, nothing else. Returns whether it accepted the bytes."""
    try:
        emm.read_emm(data)
    except EmmFormatError:
        return False
    return True


def check_c_loader(data: bytes) -> bool:
    try:
        Runtime(data)
    except EmmFormatError:
        return False
    return True


def check_inspect(data: bytes) -> None:
    with open(_PATH, "wb") as f:
        f.write(data)
    try:
        describe(_PATH)
    except EmmFormatError:
        pass
    for args in (["inspect", _PATH], ["inspect", _PATH, "--json"]):
        result = _RUNNER.invoke(cli_main, args, catch_exceptions=True)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception  # the real traceback, for the crash report
        if result.exit_code not in (0, 1):
            raise AssertionError(f"edgemerge {' '.join(args)} exited {result.exit_code}: {result.output!r}")
        if result.exit_code == 1 and not result.output.startswith("error: "):
            raise AssertionError(f"edgemerge {' '.join(args)} failed without 'error: ': {result.output!r}")


def one(data: bytes) -> None:
    _COUNTS["inputs"] += 1
    if _COUNTS["inputs"] & (_COUNTS["inputs"] - 1) == 0:  # at every power of two: libFuzzer may exit without atexit
        _report()
    candidates = [data]
    if len(data) >= 64:
        sealed = reseal(data)
        if sealed != data:
            candidates.append(sealed)
    for i, buf in enumerate(candidates):
        py_ok = check_reader(buf)
        c_ok = check_c_loader(buf)
        _COUNTS["python_ok"] += py_ok
        _COUNTS["c_ok"] += c_ok
        _COUNTS["resealed"] += i
        if py_ok and not c_ok:
            _COUNTS["python_only"] += 1
            if STRICT:
                raise AssertionError("the Python reader accepts a file the C loader refuses")
        if c_ok and not py_ok:
            _COUNTS["c_only"] += 1
            if STRICT:
                raise AssertionError("the C loader accepts a file the Python reader refuses")
        if py_ok or c_ok or i == 0:
            check_inspect(buf)


def test_one_input(data: bytes) -> None:
    one(bytes(data))


@atexit.register
def _report() -> None:
    """Counters so far: inputs, acceptances by each reader (after re-sealing too), disagreements."""
    print("fuzz_emm: " + ", ".join(f"{k} {v}" for k, v in _COUNTS.items()), file=sys.stderr)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
