"""Robustness of the Python side (runtime_c/fuzz/README.md has the whole picture):

- every fuzzing seed and every crash the fuzzers ever found (runtime_c/fuzz/corpus, runtime_c/fuzz/regressions)
  gives the Python reader, the C loader and `edgemerge inspect` only clean answers;
- the Python reader and the C loader agree on the section layout rules and on the documented limits
  (MAX_FILE_BYTES included);
- one Runtime shared by 8 threads gives the serial results, and runs release the GIL;
- a `merge` killed by SIGINT, SIGTERM or SIGKILL (during k-means, or with the output half-way to disk) leaves the
  previous file at the output path intact and loadable, and no temporary file (except after SIGKILL in the
  write window, where the temporary file cannot be removed by a process that no longer runs).
"""
from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from corrupt import reseal, section_span
from graphs import lut_conv_graph, two_task_graph

from edgemerge import emm
from edgemerge.cli import main as cli_main
from edgemerge.emm import constants as F
from edgemerge.emm.constants import Act, Op
from edgemerge.emm.graph import MergedGraph, Node, Task
from edgemerge.errors import EmmFormatError
from edgemerge.runtime import Runtime

ROOT = Path(__file__).resolve().parents[2]
FUZZ = ROOT / "runtime_c" / "fuzz"
REPLAY_FILES = sorted(p for d in ("corpus", "regressions") for p in (FUZZ / d).iterdir()
                      if p.is_file() and not p.name.startswith("."))


# ------------------------------------------------------------------------------------------------
# replay of the fuzzers' seeds and findings
# ------------------------------------------------------------------------------------------------
def test_the_corpus_has_valid_seeds_and_corrupt_cases():
    names = [p.name for p in REPLAY_FILES]
    assert sum(n.startswith("valid-") for n in names) >= 6
    assert sum(n.startswith("corrupt-") for n in names) >= 7
    assert all(p.stat().st_size <= 64 * 1024 for p in REPLAY_FILES), "corpus files should stay small"


@pytest.mark.parametrize("path", REPLAY_FILES, ids=lambda p: p.name)
def test_replayed_file_gets_only_clean_answers(path, tmp_path):
    data = path.read_bytes()
    for variant, buf in (("as is", data), ("re-sealed", reseal(data))):
        python_ok = c_ok = True
        try:
            emm.read_emm(buf)
        except EmmFormatError:
            python_ok = False
        try:
            Runtime(buf)
        except EmmFormatError:
            c_ok = False
        if path.name.startswith("valid-"):
            assert python_ok and c_ok, variant
        target = tmp_path / "model.emm"
        target.write_bytes(buf)
        for args in (["inspect", str(target)], ["inspect", str(target), "--json"]):
            result = CliRunner().invoke(cli_main, args)
            assert result.exception is None or isinstance(result.exception, SystemExit), (variant, result.exception)
            assert result.exit_code == (0 if c_ok and python_ok else 1), (variant, args, result.output)


def test_inspect_lists_a_bounded_number_of_sources():
    """Regression (found by tests/fuzz_emm.py): `source.count` is any u64 in a valid file, and inspect made
    one entry per source up to it, so a 704-byte file with source.count ~ 10^16 ran it out of memory."""
    path = FUZZ / "regressions" / "py-inspect-huge-source-count.emm"
    graph = emm.read_emm(path.read_bytes())
    assert graph.metadata["source.count"] > 10 ** 15
    result = CliRunner().invoke(cli_main, ["inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert '"sources"' in result.output


# ------------------------------------------------------------------------------------------------
# the Python reader agrees with the C loader
# ------------------------------------------------------------------------------------------------
def _tensorless() -> bytes:
    g = MergedGraph(metadata={"edgemerge.tool_version": "t", "edgemerge.original_bytes": 0, "source.count": 0})
    x = g.add_input((2, 2, 3))
    v = g.add_node(Node("pool", Op.GLOBAL_AVG_POOL, x, (1, 1, 3)))
    g.tasks.append(Task("t", x, v, 3))
    return emm.to_bytes(g)


def _with_extension_after_data(gap: int) -> bytes:
    """The tensorless model (empty DATA, last) plus a 1-byte extension section `gap` bytes after DATA's offset."""
    base = bytearray(_tensorless())
    count = struct.unpack_from("<I", base, 24)[0]
    assert F.align(64 + 32 * count) == F.align(64 + 32 * (count + 1))  # the first section does not move
    _, data_off, data_size = section_span(bytes(base), F.Section.DATA)
    assert data_size == 0 and data_off == len(base)
    ext = struct.pack("<IIQQII", 0x1000, 0, data_off + gap, 1, 0, 0)
    buf = base[:64 + 32 * count] + ext + base[64 + 32 * (count + 1):] + b"\0" * gap + b"x"
    struct.pack_into("<I", buf, 24, count + 1)
    struct.pack_into("<Q", buf, 32, len(buf))
    return reseal(buf)


def test_an_empty_section_still_takes_its_own_offset():
    """Found by runtime_c/tests/test_limits.c: an empty DATA followed by a section at the same offset. The C
    loader refused it ("does not increase") and the Python reader accepted it; FORMAT.md now says offsets
    strictly increase, and both refuse it."""
    same = _with_extension_after_data(0)
    with pytest.raises(EmmFormatError, match="does not increase"):
        Runtime(same)
    with pytest.raises(EmmFormatError, match="does not increase"):
        emm.read_emm(same)
    ok = _with_extension_after_data(64)
    Runtime(ok)
    emm.read_emm(ok)


def test_the_first_section_starts_right_after_the_table_for_both_readers():
    data = bytearray(_tensorless())
    count = struct.unpack_from("<I", data, 24)[0]
    # every section 64 bytes later, with 64 zero bytes inserted before the first one
    first = F.align(64 + 32 * count)
    for i in range(count):
        off = struct.unpack_from("<Q", data, 64 + 32 * i + 8)[0]
        struct.pack_into("<Q", data, 64 + 32 * i + 8, off + 64)
    moved = data[:first] + b"\0" * 64 + data[first:]
    struct.pack_into("<Q", moved, 32, len(moved))
    moved = reseal(moved)
    with pytest.raises(EmmFormatError, match="offset"):
        Runtime(moved)
    with pytest.raises(EmmFormatError, match="offset"):
        emm.read_emm(moved)


def test_max_file_bytes_is_enforced_by_both_readers_and_the_writer(monkeypatch):
    data = emm.to_bytes(two_task_graph())
    past = bytearray(data)
    struct.pack_into("<Q", past, 32, F.MAX_FILE_BYTES + 1)
    past = reseal(past)
    with pytest.raises(EmmFormatError, match="MAX_FILE_BYTES") as info:
        Runtime(past)
    assert info.value.status == F.Status.LIMIT
    with pytest.raises(EmmFormatError, match="MAX_FILE_BYTES"):
        emm.read_emm(past)
    at = bytearray(data)
    struct.pack_into("<Q", at, 32, F.MAX_FILE_BYTES)  # at the limit: only "truncated" (the buffer is small)
    with pytest.raises(EmmFormatError, match="truncated") as info:
        Runtime(reseal(at))
    assert info.value.status == F.Status.TRUNCATED
    monkeypatch.setattr(F, "MAX_FILE_BYTES", len(data) - 1)
    with pytest.raises(ValueError, match="MAX_FILE_BYTES"):
        emm.to_bytes(two_task_graph())
    monkeypatch.setattr(F, "MAX_FILE_BYTES", len(data))
    assert emm.to_bytes(two_task_graph()) == data


def _chain_with_tasks(n_tasks: int) -> MergedGraph:
    g = MergedGraph(metadata={"edgemerge.tool_version": "t", "edgemerge.original_bytes": 0, "source.count": 0})
    x = g.add_input((1, 1, 4))
    v = g.add_node(Node("relu", Op.ACTIVATION, x, (1, 1, 4), Act.RELU))
    g.tasks.extend(Task(f"t{i}", x, v, 4) for i in range(n_tasks))
    return g


def test_task_limit_at_and_past_for_writer_and_both_readers():
    at = emm.to_bytes(_chain_with_tasks(F.MAX_TASKS))
    assert len(Runtime(at).tasks) == F.MAX_TASKS and len(emm.read_emm(at).tasks) == F.MAX_TASKS
    with pytest.raises(ValueError, match="tasks"):
        emm.to_bytes(_chain_with_tasks(F.MAX_TASKS + 1))
    _, off, _ = section_span(at, F.Section.TASKS)
    past = bytearray(at)
    struct.pack_into("<I", past, off, F.MAX_TASKS + 1)
    past = reseal(past)
    with pytest.raises(EmmFormatError, match="MAX_TASKS") as info:
        Runtime(past)
    assert info.value.status == F.Status.LIMIT
    with pytest.raises(EmmFormatError, match=str(F.MAX_TASKS)):
        emm.read_emm(past)


# ------------------------------------------------------------------------------------------------
# threads and the GIL
# ------------------------------------------------------------------------------------------------
def test_one_runtime_on_8_threads_matches_the_serial_run():
    rt = Runtime(emm.to_bytes(two_task_graph()))
    rng = np.random.default_rng(0)
    batches = {t.name: [rng.normal(size=(5, *t.input_shape)).astype(np.float32) for _ in range(6)]
               for t in rt.tasks}
    serial = {name: [rt.run(name, x) for x in xs] for name, xs in batches.items()}
    errors: list[str] = []
    barrier = threading.Barrier(8)

    def worker(k: int) -> None:
        barrier.wait()
        for round_ in range(4):
            for name, xs in batches.items():
                for i in range(len(xs)):
                    j = (i + k + round_) % len(xs)
                    if not np.array_equal(rt.run(name, xs[j]), serial[name][j]):
                        errors.append(f"thread {k}: task {name} batch {j} differs")
                    outputs, _ = rt.run_all({t: batches[t][j] for t in batches})
                    if not np.array_equal(outputs[name], serial[name][j]):
                        errors.append(f"thread {k}: run_all {name} batch {j} differs")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:5]


@pytest.fixture(scope="module")
def slow_runtime():
    """A model whose one run of a batch takes a good fraction of a second in C."""
    rt = Runtime(emm.to_bytes(lut_conv_graph(h=48, w=48, cin=32, cout=64, r=4, c=64, seed=1)))
    x = np.random.default_rng(1).normal(size=(1, 48, 48, 32)).astype(np.float32)
    start = time.perf_counter()
    rt.run("t", x)
    per_sample = time.perf_counter() - start
    batch = max(2, int(0.4 / max(per_sample, 1e-4)))
    return rt, np.repeat(x, batch, axis=0)


def test_runs_release_the_gil(slow_runtime):
    """A Python thread keeps counting while the main thread is inside one long C run."""
    rt, x = slow_runtime
    count = 0
    stop = threading.Event()

    def counter() -> None:
        nonlocal count
        while not stop.is_set():
            count += 1

    thread = threading.Thread(target=counter)
    thread.start()
    time.sleep(0.05)
    try:
        before = count
        start = time.perf_counter()
        rt.run("t", x)
        seconds = time.perf_counter() - start
        during = count - before
    finally:
        stop.set()
        thread.join()
    # with the GIL held for the whole run the counter could not move at all (switch interval 5 ms)
    assert seconds > 0.05, seconds
    assert during > 1000, f"only {during} Python steps ran during a {seconds:.2f} s C run: is the GIL held?"


def test_runs_on_two_threads_overlap_in_time(slow_runtime):
    rt, x = slow_runtime
    spans: list[tuple[float, float]] = []
    barrier = threading.Barrier(2)

    def worker() -> None:
        barrier.wait()
        start = time.perf_counter()
        rt.run("t", x)
        spans.append((start, time.perf_counter()))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (a0, a1), (b0, b1) = sorted(spans)
    # if a run held the GIL, the second thread could not even start its call before the first one returned
    assert b0 < a1, f"runs did not overlap: {spans}"


# ------------------------------------------------------------------------------------------------
# atomic outputs
# ------------------------------------------------------------------------------------------------
def test_atomic_write_leaves_nothing_behind_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "out.emm"
    previous = emm.to_bytes(two_task_graph())
    target.write_bytes(previous)
    target.chmod(0o640)

    def failing_replace(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk on fire"):
        emm.write_emm(lut_conv_graph(), target)
    monkeypatch.undo()
    assert target.read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.emm"]
    emm.write_emm(lut_conv_graph(), target)
    assert (target.stat().st_mode & 0o777) == 0o640, "a replaced file keeps its permissions"
    fresh = tmp_path / "fresh.emm"
    emm.write_emm(lut_conv_graph(), fresh)
    assert (fresh.stat().st_mode & 0o777) == 0o666 & ~_umask(), "a new file gets 0666 less the umask, not 0600"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.fixture(scope="module")
def keras_pair(tmp_path_factory):
    """Two LeNet-sized Keras models (untrained: the merge only needs their weights)."""
    code = (
        "import sys, keras; sys.path.insert(0, sys.argv[2]); import model_factory\n"
        "keras.utils.set_random_seed(0); model_factory.lenet_sequential(10).save(sys.argv[1] + '/a.keras')\n"
        "keras.utils.set_random_seed(1); model_factory.lenet_sequential(5).save(sys.argv[1] + '/b.keras')\n")
    folder = tmp_path_factory.mktemp("keras_pair")
    subprocess.run([sys.executable, "-c", code, str(folder), str(ROOT / "tests")], check=True, timeout=600,
                   capture_output=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return folder / "a.keras", folder / "b.keras"


# (signal, phase): "kmeans" = both models imported, the merge (alignment, k-means) about to start; "write" = the
# temporary file is written and synced, not yet renamed. The process stops at the phase through the test-only hook
# (emm.files.test_pause_point: EDGEMERGE_TEST_PAUSE_AT), creates a marker file and waits there for the signal, so
# the signal always arrives during the phase under test: no race against a timer, whatever the machine's load.
KILL_CASES = [(sig, phase) for phase in ("kmeans", "write") for sig in ("SIGINT", "SIGTERM", "SIGKILL")]
PAUSE_PHASE = {"kmeans": "merge", "write": "rename"}


def test_killed_merge_leaves_the_previous_output_intact(keras_pair, tmp_path):
    a, b = keras_pair
    previous = emm.to_bytes(two_task_graph())
    runs = []
    for sig, phase in KILL_CASES:  # all at once: each one spends most of its time importing TensorFlow
        folder = tmp_path / f"{phase}-{sig}"
        folder.mkdir()
        out = folder / "merged.emm"
        out.write_bytes(previous)
        marker = tmp_path / f"{phase}-{sig}.paused"
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "EDGEMERGE_TEST_PAUSE_AT": PAUSE_PHASE[phase],
               "EDGEMERGE_TEST_PAUSE_MARKER": str(marker)}
        proc = subprocess.Popen([sys.executable, "-m", "edgemerge.cli", "merge", f"a={a}", f"b={b}", "-o", str(out),
                                 "--kmeans-inits", "1"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                text=True, env=env, cwd=folder)
        runs.append({"sig": sig, "phase": phase, "proc": proc, "out": out, "folder": folder, "marker": marker,
                     "seen": False, "stderr": []})
    readers = [threading.Thread(target=lambda r=run: r["stderr"].extend(r["proc"].stderr), daemon=True)
               for run in runs]
    for reader in readers:
        reader.start()
    try:
        # wait for each process to reach its phase (an event: the marker file), then signal it; the overall limit
        # only catches a process that never gets there
        deadline = time.monotonic() + 600
        waiting = list(runs)
        while waiting and time.monotonic() < deadline:
            for run in list(waiting):
                if run["marker"].exists():
                    run["seen"] = True
                    run["proc"].send_signal(getattr(signal, run["sig"]))
                    waiting.remove(run)
                elif run["proc"].poll() is not None:
                    waiting.remove(run)
            time.sleep(0.05)
        for run in runs:
            run["code"] = run["proc"].wait(timeout=600)
    finally:
        for run in runs:
            if run["proc"].poll() is None:
                run["proc"].kill()
    for reader in readers:
        reader.join(timeout=10)

    for run in runs:
        label = f"{run['sig']} during {run['phase']}"
        log = "".join(run["stderr"])[-2000:]
        assert run["seen"], f"{label}: the merge never reached its phase: {log}"
        assert run["code"] != 0, f"{label}: the merge finished anyway: {log}"
        assert "Traceback" not in log, f"{label}: {log}"
        # the previous file is untouched and still loads
        assert run["out"].read_bytes() == previous, label
        Runtime(run["out"])
        leftovers = sorted(p.name for p in run["folder"].iterdir() if p.name != "merged.emm")
        if run["sig"] == "SIGKILL" and run["phase"] == "write":
            # nothing runs after SIGKILL: the complete temporary file stays (hidden, next to the output),
            # but the output itself was never touched
            assert all(n.startswith(".merged.emm.") and n.endswith(".tmp") for n in leftovers), (label, leftovers)
            assert len(leftovers) == 1, (label, leftovers)
        else:
            assert leftovers == [], (label, leftovers)


def test_the_pause_hook_does_nothing_when_unset(monkeypatch, tmp_path):
    from edgemerge.emm.files import PAUSE_ENV, test_pause_point
    monkeypatch.delenv(PAUSE_ENV, raising=False)
    test_pause_point("rename")            # returns at once: nothing to wait for
    monkeypatch.setenv(PAUSE_ENV, "merge")
    test_pause_point("rename")            # another phase: returns at once too
    emm.write_emm(two_task_graph(), tmp_path / "m.emm")
    assert (tmp_path / "m.emm").is_file()


def _signal_handlers_during_a_command(ignored: tuple[str, ...]) -> dict[str, object]:
    """SIGTERM's and SIGHUP's handlers while a CLI command runs in-process, with `ignored` set to SIG_IGN by the
    caller (a probe command added to the group for the call)."""
    import click

    seen: dict[str, object] = {}

    @click.command("signal-probe")
    def probe() -> None:
        seen.update({name: signal.getsignal(getattr(signal, name)) for name in ("SIGTERM", "SIGHUP")})

    before = {name: signal.getsignal(getattr(signal, name)) for name in ("SIGTERM", "SIGHUP")}
    cli_main.add_command(probe)
    try:
        for name in ("SIGTERM", "SIGHUP"):  # explicit both ways: the suite itself may run under nohup
            signal.signal(getattr(signal, name), signal.SIG_IGN if name in ignored else signal.SIG_DFL)
        result = CliRunner().invoke(cli_main, ["signal-probe"])
        assert result.exit_code == 0, result.output
        after = {name: signal.getsignal(getattr(signal, name)) for name in ("SIGTERM", "SIGHUP")}
        for name in ignored:  # the command gave the caller's handlers back
            assert after[name] == signal.SIG_IGN, name
    finally:
        del cli_main.commands["signal-probe"]
        for name, handler in before.items():
            signal.signal(getattr(signal, name), handler)
    return seen


def test_an_ignored_hangup_stays_ignored_while_a_command_runs():
    # `nohup edgemerge merge ... &`: the merge must survive the terminal's SIGHUP
    seen = _signal_handlers_during_a_command(ignored=("SIGHUP",))
    assert seen["SIGHUP"] == signal.SIG_IGN
    assert callable(seen["SIGTERM"])              # still stopped the way Ctrl-C stops it, clean-up included
    seen = _signal_handlers_during_a_command(ignored=())
    assert callable(seen["SIGHUP"]) and callable(seen["SIGTERM"])


def test_the_suite_restores_sigint_for_the_kill_tests_children():
    # conftest.py: a suite started in the background inherits SIGINT ignored; its children must not
    assert signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
    child = subprocess.run([sys.executable, "-c", "import signal; print(signal.getsignal(signal.SIGINT))"],
                           capture_output=True, text=True, timeout=120, check=True)
    assert "default_int_handler" in child.stdout, child.stdout
