"""`edgemerge quantize` (workflows/quantize_file.py): int8 activations for an existing merged file, the same
flags and scales as `merge --int8` computes on that graph, and bad input answered with one error line."""
import numpy as np
import pytest

from edgemerge import emm
from edgemerge.emm import constants as F
from edgemerge.merging.quantize import INT8_ACT_SAMPLES, quantize_graph
from tests.cli_runner import run_cli
from tests.graphs import two_task_graph


@pytest.fixture()
def merged(tmp_path):
    """A two-task merged file and calibration data per task (more samples than the scales read)."""
    g = two_task_graph()
    path = tmp_path / "merged.emm"
    emm.write_emm(g, path)
    rng = np.random.default_rng(3)
    calib = {}
    for t in g.tasks:
        x = rng.normal(size=(INT8_ACT_SAMPLES + 20, *g.inputs[t.input])).astype(np.float32)
        calib[t.name] = tmp_path / f"{t.name}.npz"
        np.savez(calib[t.name], x=x, y=rng.integers(0, t.classes, len(x)))
    return path, calib


def _calib_args(calib):
    return [a for task, p in calib.items() for a in ("--calib", f"{task}={p}")]


def test_quantize_flags_the_layers_as_merge_does(merged, tmp_path):
    path, calib = merged
    out = tmp_path / "int8.emm"
    r = run_cli("quantize", path, "--int8", "all", *_calib_args(calib), "-o", out)
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and "layers with int8 activations" in r.stdout
    got = emm.read_emm(out)
    want = two_task_graph()                       # what merge --int8 does to the merged graph in memory
    quantize_graph(want, ["all"], {t: str(p) for t, p in calib.items()})
    assert emm.to_bytes(got) == emm.to_bytes(want)
    lut = [n for n in got.nodes if n.op in (F.Op.LUT_CONV2D, F.Op.LUT_DENSE)]
    assert lut and all(n.int8_act and n.input_scale > 0 for n in lut)
    # the runtime loads the flagged file, and the file's float twin is the input file
    from edgemerge.runtime import Runtime
    x = np.load(calib["a"])["x"][:2]
    assert np.isfinite(np.stack([Runtime(str(out)).run("a", s) for s in x])).all()


def test_quantize_one_layer_and_json(merged, tmp_path):
    path, calib = merged
    out = tmp_path / "one.emm"
    r = run_cli("quantize", path, "--int8", "a:conv1", "--calib", f"a={calib['a']}", "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    import json
    summary = json.loads(r.stdout)
    assert summary["layers"] == ["a/conv1"] and summary["int8_layers_after"] == 1
    assert set(summary["input_scales"]) == {"a/conv1"}
    flagged = [n.name for n in emm.read_emm(out).nodes if n.int8_act]
    assert flagged == ["a/conv1"]


@pytest.mark.parametrize("case", ["unknown task", "wrong shape", "no such layer", "missing model", "nan data",
                                  "corrupt model"])
def test_quantize_bad_input_is_one_error_line(merged, tmp_path, case):
    path, calib = merged
    out = tmp_path / "out.emm"
    out.write_bytes(b"previous")
    args = ["quantize", path, "--int8", "all", *_calib_args(calib), "-o", out]
    if case == "unknown task":
        args += ["--calib", f"zz={calib['a']}"]
        needle = "no task of that name"
    elif case == "wrong shape":
        args = ["quantize", path, "--int8", "all", "--calib", f"a={calib['b']}", "-o", out]
        needle = "task 'a' takes (8, 8, 3) (NHWC)"
    elif case == "no such layer":
        args = ["quantize", path, "--int8", "nope", *_calib_args(calib), "-o", out]
        needle = "no merged (LUT) layer"
    elif case == "missing model":
        args[1] = tmp_path / "absent.emm"
        needle = "absent.emm"
    elif case == "nan data":
        x = np.load(calib["a"])["x"]
        x[0, 0, 0, 0] = np.nan
        np.savez(calib["a"], x=x, y=np.zeros(len(x), np.int64))
        needle = "NaN"
    else:
        bad = tmp_path / "bad.emm"
        bad.write_bytes(path.read_bytes()[:100])
        args[1] = bad
        needle = "bad.emm"
    r = run_cli(*args)
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: ") and needle in lines[-1], r.stderr
    assert "Traceback" not in r.stderr
    assert out.read_bytes() == b"previous"        # nothing half-written


def test_quantize_needs_layers_and_calibration(merged, tmp_path):
    path, calib = merged
    r = run_cli("quantize", path, *_calib_args(calib), "-o", tmp_path / "o.emm")
    assert r.returncode == 2 and "--int8" in r.stderr
    r = run_cli("quantize", path, "--int8", "all", "-o", tmp_path / "o.emm")
    assert r.returncode == 2 and "--calib" in r.stderr
