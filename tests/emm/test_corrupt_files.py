"""Hand-made corrupt files give a clear error and a non-zero exit from `inspect` and `eval` — never a
crash — and the C loader rejects every truncation of a valid file."""
import subprocess
import sys

import numpy as np
import pytest
from corrupt import CORRUPTIONS
from graphs import two_task_graph

from edgemerge import emm
from edgemerge.errors import EmmFormatError
from edgemerge.runtime import Runtime


@pytest.fixture(scope="module")
def valid_bytes():
    return emm.to_bytes(two_task_graph())


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "edgemerge.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_c_loader_rejects_with_a_message_naming_the_problem(valid_bytes, name):
    mutate, keyword = CORRUPTIONS[name]
    bad = mutate(valid_bytes)
    assert bad != valid_bytes
    with pytest.raises(EmmFormatError) as info:
        Runtime(bad)
    assert keyword in str(info.value).lower(), str(info.value)
    assert info.value.status is not None and info.value.status != 0


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_python_reader_rejects_too(valid_bytes, name):
    mutate, _ = CORRUPTIONS[name]
    with pytest.raises(EmmFormatError):
        emm.read_emm(mutate(valid_bytes))


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_inspect_and_eval_exit_non_zero_with_a_clear_error(tmp_path, valid_bytes, name):
    mutate, keyword = CORRUPTIONS[name]
    path = tmp_path / f"{name}.emm"
    path.write_bytes(mutate(valid_bytes))
    data = tmp_path / "a.npz"
    np.savez(data, x=np.zeros((2, 8, 8, 3), np.float32), y=np.zeros(2, np.int64))
    for args in (["inspect", path, "--json"], ["eval", path, "--data", f"a={data}", "--json"]):
        result = run_cli(*args)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert result.stderr.startswith("error: "), result.stderr
        assert keyword in result.stderr.lower(), result.stderr
        assert "Traceback" not in result.stderr


def test_every_truncation_is_rejected_cleanly(valid_bytes):
    # every prefix length, so each header field and section boundary is cut at least once
    for n in range(len(valid_bytes)):
        with pytest.raises(EmmFormatError):
            Runtime(valid_bytes[:n])


def test_random_byte_flips_never_crash(valid_bytes):
    rng = np.random.default_rng(7)
    for _ in range(300):
        buf = bytearray(valid_bytes)
        buf[int(rng.integers(len(buf)))] ^= 1 << int(rng.integers(8))
        try:
            rt = Runtime(bytes(buf))
        except EmmFormatError:
            continue
        # a flip the CRCs cannot see does not exist: every byte is covered by a CRC or the header check
        pytest.fail(f"a flipped byte was accepted ({rt.task_names})")
