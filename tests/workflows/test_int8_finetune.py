"""`--int8-finetune` (workflows/quantize_file.finetune_int8): calibration with the int8 activations simulated,
then the input scales measured again on the trained graph; on `merge` and on `quantize`, and bad values
answered with one error line before any work."""
import json

import numpy as np
import pytest

from edgemerge import emm
from edgemerge.emm.constants import Keys
from tests.cli_runner import run_cli

pytest.importorskip("tensorflow")


def _scales_measured_on(graph, calib):
    """What merging/quantize.py measures on `graph` itself (the flags cleared: a fresh measurement)."""
    from edgemerge.merging.quantize import quantize_graph
    fresh = graph.copy()
    for node in fresh.nodes:
        node.flags, node.input_scale = 0, 0.0
    return quantize_graph(fresh, ["all"], {t: str(p) for t, p in calib.items()})["input_scales"]


def test_merge_int8_finetune_writes_the_scales_of_the_trained_graph(tiny, tmp_path):
    from edgemerge.workflows.pipeline import merge_files
    out = tmp_path / "ft.emm"
    summary = merge_files({t: str(p) for t, p in tiny["originals"].items()}, out, preset="light",
                          calib={t: str(p) for t, p in tiny["calib"].items()}, steps=4, int8_act=["all"],
                          int8_finetune=6)
    report = summary["int8_act"]
    assert report["finetune"]["steps"] == 6 and report["finetune"]["calibration"]["steps"] == 6
    graph = emm.read_emm(out)
    flagged = {n.name: n.input_scale for n in graph.nodes if n.int8_act}
    assert set(flagged) == set(report["layers"]) == {"a/conv1", "a/fc1", "b/conv1", "b/fc1"}
    # the file's scales are the trained graph's own ranges, not the ones the simulation ran with
    assert flagged == pytest.approx(_scales_measured_on(graph, tiny["calib"]), rel=0, abs=0)
    assert flagged == report["input_scales"]
    assert set(report["finetune"]["simulated_input_scales"]) == set(flagged)
    # the fine-tune's record does not overwrite the float calibration's
    assert graph.metadata[Keys.Calibrate.STEPS] == 4
    assert graph.metadata[Keys.Calibrate.INT8_FINETUNE_STEPS] == 6
    assert report["finetune"]["calibration"]["fake_quant"].keys() == flagged.keys()


def test_quantize_int8_finetune_on_an_existing_file(tiny, tmp_path):
    from edgemerge.workflows.pipeline import merge_files
    from edgemerge.workflows.quantize_file import quantize_file
    merged = tmp_path / "m.emm"
    merge_files({t: str(p) for t, p in tiny["originals"].items()}, merged, preset="light")
    out = tmp_path / "q.emm"
    summary = quantize_file(merged, out, ["fc1"], {t: str(p) for t, p in tiny["calib"].items()},
                            finetune_steps=5, originals={t: str(p) for t, p in tiny["originals"].items()})
    graph = emm.read_emm(out)
    assert [n.name for n in graph.nodes if n.int8_act] == ["a/fc1", "b/fc1"] == summary["layers"]
    assert summary["int8_finetune"]["steps"] == 5
    before = emm.read_emm(merged)
    trained = [t for t in graph.tensors if t.array is not None and t.dtype == 1]
    assert any(not np.array_equal(a.array, b.array) for a, b in zip(trained, before.tensors)
               if b.dtype == 1 and a.array.shape == b.array.shape)   # the fine-tune trained something


def _merge_args(tiny, out):
    return [f"{t}={p}" for t, p in tiny["originals"].items()] + ["-o", out] + \
        [a for t, p in tiny["calib"].items() for a in ("--calib", f"{t}={p}")]


@pytest.mark.parametrize("extra, message", [
    (["--int8", "all", "--int8-finetune", "0"], "--int8-finetune 0: expected a number of calibration steps >= 1"),
    (["--int8", "all", "--int8-finetune", "-3"], "--int8-finetune -3: expected"),
    (["--int8-finetune", "10"], "--int8-finetune needs --int8 NAMES"),
])
def test_merge_refuses_bad_finetune_values(tiny, tmp_path, extra, message):
    out = tmp_path / "x.emm"
    r = run_cli("merge", *_merge_args(tiny, out), *extra)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert not out.exists()


def test_merge_refuses_a_finetune_value_that_is_no_number(tiny, tmp_path):
    r = run_cli("merge", *_merge_args(tiny, tmp_path / "x.emm"), "--int8", "all", "--int8-finetune", "many")
    assert r.returncode == 2 and "--int8-finetune" in r.stderr and "Traceback" not in r.stderr


def test_quantize_finetune_needs_the_originals_and_originals_need_finetune(tiny, tmp_path):
    from edgemerge.workflows.pipeline import merge_files
    merged = tmp_path / "m.emm"
    merge_files({t: str(p) for t, p in tiny["originals"].items()}, merged, preset="light")
    calib = [a for t, p in tiny["calib"].items() for a in ("--calib", f"{t}={p}")]
    refs = [a for t, p in tiny["originals"].items() for a in ("--reference", f"{t}={p}")]
    for extra, message in ((["--int8-finetune", "5"], "--int8-finetune needs the original models"),
                           (refs, "--reference goes with --int8-finetune"),
                           (["--int8-finetune", "0", *refs], "expected a number of calibration steps >= 1"),
                           (["--int8-finetune", "5", "--reference", f"a={tiny['originals']['a']}"],
                            "no original model for task(s) b")):
        out = tmp_path / "q.emm"
        r = run_cli("quantize", merged, "--int8", "all", *calib, "-o", out, *extra)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 1 and lines and lines[-1].startswith("error: ") and message in lines[-1], r.stderr
        assert not out.exists()


def test_quantize_cli_int8_finetune_end_to_end(tiny, tmp_path):
    """The CLI path of the in-process test above (about 7 s: a TensorFlow start in a child process)."""
    from edgemerge.workflows.pipeline import merge_files
    merged = tmp_path / "m.emm"
    merge_files({t: str(p) for t, p in tiny["originals"].items()}, merged, preset="light")
    out = tmp_path / "q.emm"
    r = run_cli("quantize", merged, "--int8", "all", "-o", out, "--int8-finetune", "5", "--json",
                *[a for t, p in tiny["calib"].items() for a in ("--calib", f"{t}={p}")],
                *[a for t, p in tiny["originals"].items() for a in ("--reference", f"{t}={p}")])
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["int8_finetune"]["steps"] == 5 and len(summary["layers"]) == 4
    assert {n.name: n.input_scale for n in emm.read_emm(out).nodes if n.int8_act} == summary["input_scales"]
