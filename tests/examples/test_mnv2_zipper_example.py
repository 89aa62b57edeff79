"""The keras.applications MobileNetV2 zipper example (examples/mnv2_zipper/run.py), shortened: the RGB garments
built from a few hundred Fashion-MNIST images, both MobileNetV2 trained for one epoch, zipper --share block for
two rounds of a few steps, pick, eval, and bench against the float and the int8 originals, all through the CLI.

No accuracy or timing is asserted (the example reports them, examples/mnv2_zipper/README.md); what is checked is
that every step ran on the real files and agrees with the rest: the models are keras.applications' MobileNetV2
(17 blocks), the picked file is one of the rounds, eval's figures are the C runtime's on the test files, both
bench runs name their peer by what it computes in."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from examples.mnv2_zipper import run as mz  # noqa: E402

@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    import model_factory

    fashion = tmp_path_factory.mktemp("mz_fashion")
    x_train, y_train, x_test, y_test = model_factory.fashion_mnist()
    pad = lambda x: np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))  # noqa: E731  28×28 → 32×32, as the example's files
    for split, x, y, n in (("train", x_train, y_train, 512), ("test", x_test, y_test, 200)):
        np.savez(fashion / f"fashion_{split}.npz", x=pad(x[:n]).astype(np.float32), y=y[:n])
    out = tmp_path_factory.mktemp("mz_out")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "examples.mnv2_zipper.run", "--fashion", str(fashion), "--out",
                           str(out), "--epochs", "1", "--steps-per-round", "3", "--rounds", "2", "--runs", "5",
                           "--max-drop", "0.99", "--no-check"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {"summary": json.loads((out / "mnv2_zipper_block_summary.json").read_text()), "out": out,
            "data": out / "data", "stdout": done.stdout}


@pytest.mark.slow
def test_quick_run_zippers_keras_mobilenetv2_blocks_and_picks_within_budget(quick_run):
    s = quick_run["summary"]
    assert s["depth"] == 17 and [r["k"] for r in s["rounds"]] == [0, 1, 2]
    assert s["picked_k"] == 2                      # --max-drop 0.99 admits every round: the deepest run
    assert "picked k=2 of 17" in quick_run["stdout"]
    for t in mz.TASKS:
        m = s["models"][t]
        for ext in ("keras", "tflite", "int8.tflite"):
            assert (quick_run["out"] / f"mnv2_{t}.{ext}").is_file()
        assert m["bytes"]["int8_tflite"] < m["bytes"]["tflite"]
    a = keras.models.load_model(quick_run["out"] / "mnv2_garment.keras")
    b = keras.models.load_model(quick_run["out"] / "mnv2_colour.keras")
    assert a.output_shape[-1] == 10 and b.output_shape[-1] == 8
    # the same layers (Keras numbers the input and pooling layers' names per session)
    assert [type(l).__name__ for l in a.layers] == [type(l).__name__ for l in b.layers]
    assert "block_16_project" in [l.name for l in a.layers] and "block_16_project" in [l.name for l in b.layers]


@pytest.mark.slow
def test_quick_run_eval_is_the_c_runtime_on_the_test_files(quick_run):
    from edgemerge.runtime import Runtime

    s = quick_run["summary"]
    runtime = Runtime(quick_run["out"] / "picked_block.emm")
    for t in mz.TASKS:
        with np.load(mz.task_file(quick_run["data"], t, "test")) as npz:
            x, y = npz["x"], npz["y"]
        accuracy = float(np.mean(runtime.run(t, x).argmax(axis=1) == y))
        r = s["eval"][t]
        assert r["n"] == len(y) and r["accuracy"] == pytest.approx(accuracy)
        assert r["accuracy"] == pytest.approx(s["rounds"][s["picked_k"]]["accuracy"][t])


@pytest.mark.slow
def test_quick_run_benches_against_float_and_int8_originals(quick_run):
    s = quick_run["summary"]
    for key, label, name in (("tflite_float32", "tflite float32", "float"), ("tflite_int8", "tflite int8", "int8")):
        bench = json.loads((quick_run["out"] / f"bench_block_{name}.json").read_text())
        [peer] = bench["peers"]
        assert peer["label"] == label and bench["threads"] == 1 and bench["runs"] == 5
        assert set(bench["tasks"]) == set(mz.TASKS)
        assert bench["speedup"] == pytest.approx(bench["reference_ms"]["median"] / bench["merged_ms"]["median"])
        assert s["bench"][key]["speedup"] == pytest.approx(bench["speedup"])
        assert s["bench"][key]["peer_label"] == label


def test_claims_are_checked():
    result = {"eval": {"garment": {"drop": 0.01}, "colour": {"drop": 0.03}},
              "bench": {"tflite_float32": {"speedup": 1.2}, "tflite_int8": {"speedup": 0.9}}}
    missed = mz.check_claims(result, 0.02)
    assert len(missed) == 2 and "colour" in missed[0] and "tflite_int8" in missed[1]
    result["eval"]["colour"]["drop"], result["bench"]["tflite_int8"]["speedup"] = 0.02, 1.01
    assert mz.check_claims(result, 0.02) == []
