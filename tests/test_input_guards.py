"""Input guards where data enters (issue 18 part 3, issue 19 part 2): data files (datasets.py) and the Python API
(Runtime.run / run_all) refuse uint8, strings, complex, NaN/Inf, one-hot labels, empty sets and a .npy named .npz,
each with one message that names the file or array and the fix."""
from __future__ import annotations

import numpy as np
import pytest
from graphs import lut_conv_graph

from edgemerge import emm
from edgemerge.datasets import DataError, load_labelled, load_samples
from edgemerge.runtime import Runtime

SHAPE = (9, 7, 5)


def _x(n=4):
    return np.random.default_rng(0).normal(size=(n, *SHAPE)).astype(np.float32)


@pytest.mark.parametrize("x, y, words", [
    ((_x() * 40 + 128).clip(0, 255).astype(np.uint8), np.arange(4), r"uint8 \(\d+\.\.\d+\); scale it .* x/255"),
    (np.full((4, *SHAPE), "a"), np.arange(4), "dtype <U1"),
    (_x().astype(np.complex64), np.arange(4), "complex"),
    (np.where(np.arange(_x().size).reshape(_x().shape) % 100 == 0, np.nan, _x()), np.arange(4),
     r"\d+ non-finite value\(s\) \(\d+ NaN, 0 \+-Inf\)"),
    (_x() * np.inf, np.arange(4), "non-finite"),
    (_x(), np.eye(10)[np.arange(4)], r"looks one-hot \(4, 10\): give integer labels, e.g. y.argmax\(1\)"),
    (np.zeros((0, *SHAPE), np.float32), np.zeros(0, np.int64), "empty"),
    (_x(), np.arange(4).astype(np.float32), "integer class labels"),
])
def test_bad_data_files_are_refused_naming_file_and_fix(tmp_path, x, y, words):
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y)
    with pytest.raises(DataError, match=words) as info:
        load_labelled(path, SHAPE)
    assert str(path) in str(info.value)


def test_a_npy_named_npz_is_refused_clearly(tmp_path):
    path = tmp_path / "d.npz"
    with open(path, "wb") as f:
        np.save(f, _x())
    for load in (load_labelled, load_samples):
        with pytest.raises(DataError, match=r"a \.npy file .* np.savez"):
            load(path)


def test_good_data_still_loads(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=_x().astype(np.float64), y=np.arange(4, dtype=np.int32))
    data = load_labelled(path, SHAPE)
    assert data.x.dtype == np.float32 and data.y.dtype == np.int64 and data.x.shape == (4, *SHAPE)


def test_the_runtime_refuses_bad_arrays_from_the_python_api():
    rt = Runtime(emm.to_bytes(lut_conv_graph()))
    task = rt.task_names[0]
    x = _x(2)
    assert rt.run(task, x).shape[0] == 2
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    bad[1, 0, 0, 1] = np.inf
    with pytest.raises(DataError, match=r"2 non-finite value\(s\) \(1 NaN, 1 \+-Inf\)"):
        rt.run(task, bad)
    with pytest.raises(DataError, match="uint8"):
        rt.run(task, np.zeros((1, *SHAPE), np.uint8))
    with pytest.raises(DataError, match="complex"):
        rt.run(task, x.astype(np.complex64))
    with pytest.raises(DataError, match="non-finite"):
        rt.run_all({task: bad})


def test_eval_on_a_model_whose_reference_context_is_too_large_is_one_error_line(tmp_path, monkeypatch):
    """The C loader refuses a context past EM_MAX_CONTEXT_BYTES (LIMIT) with the reference kernels; eval shows
    that as one error line, not a MemoryError traceback (the file of runtime_c/tests/test_context_limit.c)."""
    from click.testing import CliRunner

    from edgemerge.cli import main
    g = lut_conv_graph(h=256, w=256, cin=1, cout=4, k=(1, 1), pads=(0, 0, 0, 0), r=1, c=12288)
    model = tmp_path / "big-context.emm"
    emm.write_emm(g, model)
    data = tmp_path / "d.npz"
    np.savez(data, x=np.zeros((1, 256, 256, 1), np.float32), y=np.zeros(1, np.int64))
    monkeypatch.setenv("EM_KERNELS", "ref")
    r = CliRunner().invoke(main, ["eval", str(model), "--data", f"t={data}"])
    assert r.exit_code == 1 and (r.exception is None or isinstance(r.exception, SystemExit)), r.exception
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "EM_MAX_CONTEXT_BYTES" in r.stderr and str(model) in r.stderr
