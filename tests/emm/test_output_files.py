"""emm/files.py: the one helper every output file of the Python tools goes through (issue 19 part 3)."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest
from graphs import lut_conv_graph

from edgemerge import emm
from edgemerge.emm import constants as F
from edgemerge.emm.constants import Act, Op
from edgemerge.emm.files import OutputFileError, atomic_write_bytes, check_output_target
from edgemerge.emm.graph import MergedGraph, Node, Task, Tensor


def test_targets_that_are_not_regular_files_are_refused_and_left_alone(tmp_path):
    fifo, folder, link = tmp_path / "fifo", tmp_path / "folder", tmp_path / "link"
    os.mkfifo(fifo)
    folder.mkdir()
    link.symlink_to(fifo)
    for target, kind in ((fifo, "a FIFO"), (folder, "a directory"), (link, "a FIFO")):
        with pytest.raises(OutputFileError, match=kind):
            atomic_write_bytes(target, b"data")
    assert not fifo.is_file() and folder.is_dir() and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "folder", "link"], "no temporary left"
    with pytest.raises(OutputFileError, match="character device"):
        check_output_target("/dev/null")   # only checked, never written


def test_a_planted_symlink_at_a_temporary_name_is_never_followed(tmp_path, monkeypatch):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    target = tmp_path / "out.emm"
    planted = []

    real_token = __import__("secrets").token_hex

    def predictable(n):   # an attacker who guesses the first random name plants a symlink there
        name = real_token(n)
        if not planted:
            (tmp_path / f".out.emm.{name}.tmp").symlink_to(victim)
            planted.append(name)
        return name

    monkeypatch.setattr("edgemerge.emm.files.secrets.token_hex", predictable)
    atomic_write_bytes(target, b"new")
    assert victim.read_bytes() == b"precious"
    assert target.read_bytes() == b"new"
    assert (tmp_path / f".out.emm.{planted[0]}.tmp").is_symlink(), "someone else's file is not removed"


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "disk full"), (errno.EROFS, "read-only"),
                                         (errno.EACCES, "permission denied")])
def test_write_errors_are_reported_as_such_and_clean_up_exactly_their_temporary(tmp_path, monkeypatch, code, words):
    target = tmp_path / "out.emm"
    target.write_bytes(b"old")
    other = tmp_path / ".out.emm.someone-elses.tmp"
    other.write_bytes(b"not ours")

    def failing_fsync(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OutputFileError, match=words) as info:
        atomic_write_bytes(target, b"new")
    assert info.value.errno == code and str(target) in str(info.value)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.emm.someone-elses.tmp", "out.emm"]


@pytest.mark.parametrize("code, words", [(errno.EROFS, "read-only"), (errno.EACCES, "permission denied")])
def test_a_folder_where_no_file_can_be_created(tmp_path, monkeypatch, code, words):
    real_open = os.open

    def refusing_open(path, flags, *args):
        if flags & os.O_CREAT:
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refusing_open)
    with pytest.raises(OutputFileError, match=words):
        atomic_write_bytes(tmp_path / "out.emm", b"new")


def test_the_cli_reports_an_output_in_proc_and_on_dev_full_in_one_line(tmp_path):
    from click.testing import CliRunner

    from edgemerge.cli import main
    model = tmp_path / "m.emm"
    emm.write_emm(lut_conv_graph(), model)
    for target in ("/proc/edgemerge-x.h", "/dev/full"):
        r = CliRunner().invoke(main, ["export-c", str(model), "-o", target])
        assert r.exit_code == 1 and r.stderr.count("\n") == 1 and r.stderr.startswith("error: "), r.stderr
        assert target in r.stderr
    assert os.path.exists("/dev/full") and not os.path.isfile("/dev/full")


# ------------------------------------------------------------------------------------------------
# bounded reader (issue 19 part 4)
# ------------------------------------------------------------------------------------------------
def _big_lut_graph(n_indices: int) -> MergedGraph:
    """A valid one-task graph whose dense LUT layer holds `n_indices` 4-bit indices (n_indices / 2 bytes)."""
    c, r = 16, 1
    inputs = 512
    outputs = n_indices // inputs
    g = MergedGraph(inputs=[(1, 1, inputs)], metadata={F.Keys.General.ORIGINAL_BYTES: 4 * inputs * outputs})
    rng = np.random.default_rng(0)
    g.tensors.append(Tensor("codebook", rng.normal(size=(inputs, c, r)).astype(np.float32)))
    g.tensors.append(Tensor.index("index", rng.integers(0, c, size=(inputs, outputs)), c))
    g.tensors.append(Tensor("bias", np.zeros(outputs, np.float32)))
    g.nodes.append(Node(name="fc", op=Op.LUT_DENSE, input=0, activation=Act.NONE, out_shape=(1, 1, outputs),
                        seg_len=r, codewords=c, weight=0, index=1, bias=2))
    g.tasks.append(Task("t", 0, 1, outputs))
    return g


def test_reading_a_multi_mib_file_stays_within_a_small_multiple_of_its_size():
    data = emm.to_bytes(_big_lut_graph(8 * 1024 * 1024))   # 4 MiB of indices
    tracemalloc.start()
    try:
        graph = emm.read_emm(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert graph.tensors[1].array.size == 8 * 1024 * 1024
    # the result is 1 byte per 4-bit index (2x the file) plus fixed-size temporaries; per-bit unpacking peaked at
    # ~16 bytes per index bit (64x the file here)
    assert peak < 3 * len(data), f"peak {peak} bytes for a {len(data)}-byte file"
    np.testing.assert_array_equal(graph.tensors[1].array.reshape(-1)[:1000],
                                  _big_lut_graph(8 * 1024 * 1024).tensors[1].array.reshape(-1)[:1000])


# The kill tests' pause hook must end on a signal whichever thread the OS delivers it to. Here the main thread
# blocks SIGINT, so the kernel hands it to the helper thread; CPython still raises KeyboardInterrupt in the main
# thread, but only at its next bytecode: one long sleep never gets there (a loaded `make test` hung on this).
_PAUSE_CHILD = """
import os, signal, sys, threading
from edgemerge.emm.files import test_pause_point
threading.Thread(target=threading.Event().wait, daemon=True).start()
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
try:
    test_pause_point("phase")
except KeyboardInterrupt:
    sys.exit(42)
"""


def test_pause_point_ends_on_a_signal_delivered_to_another_thread(tmp_path):
    marker = tmp_path / "paused"
    env = {**os.environ, "EDGEMERGE_TEST_PAUSE_AT": "phase", "EDGEMERGE_TEST_PAUSE_MARKER": str(marker),
           "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", _PAUSE_CHILD], env=env)
    try:
        while not marker.exists():          # an event (the marker), not a timer
            assert proc.poll() is None, "the child ended before reaching the pause point"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        # generous: the hook ends within a fraction of a second; the old one slept for an hour
        assert proc.wait(timeout=120) == 42
    finally:
        proc.kill()
        proc.wait()
