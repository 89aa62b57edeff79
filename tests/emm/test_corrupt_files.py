"""Hand-made corrupt files give a clear error and a non-zero exit from `inspect` and `eval` — never a
crash — and the C loader rejects every truncation of a valid file."""
import numpy as np
import pytest
from corrupt import CORRUPTIONS, c_loader_refuses, cli_refuses
from graphs import two_task_graph

from edgemerge import emm
from edgemerge.errors import EmmFormatError
from edgemerge.runtime import Runtime


@pytest.fixture(scope="module")
def valid_bytes():
    return emm.to_bytes(two_task_graph())


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_c_loader_rejects_with_a_message_naming_the_problem(valid_bytes, name):
    _, error = c_loader_refuses(valid_bytes, *CORRUPTIONS[name])
    assert error.status is not None and error.status != 0


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_python_reader_rejects_too(valid_bytes, name):
    mutate, _ = CORRUPTIONS[name]
    with pytest.raises(EmmFormatError):
        emm.read_emm(mutate(valid_bytes))


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_inspect_and_eval_exit_non_zero_with_a_clear_error(tmp_path, valid_bytes, name):
    mutate, keyword = CORRUPTIONS[name]
    cli_refuses(tmp_path, name, mutate(valid_bytes), keyword, (8, 8, 3), task="a")


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
