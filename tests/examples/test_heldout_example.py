"""The held-out example's pipeline (examples/heldout/run.py) on tiny versions: two small models of the example's
architectures trained for one epoch on a few hundred samples, merged at `light`, evaluated and benchmarked
through the CLI. Checks that the merged model runs, agrees with the Keras reference of its decoded weights,
and that the bench JSON has the documented keys. No timing is asserted (speed is reported by benchmarks).

The data are not the example's (no examples/build in CI): Fashion-MNIST images from the Debian package stand
in for both tasks, the second one transposed, written as the .npz files the script reads."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

ROOT = Path(__file__).resolve().parents[2]
BENCH_KEYS = {"merged_ms", "reference_ms", "speedup", "merged_peak_bytes", "reference_peak_bytes", "threads",
              "merged_threads", "runs", "warmup", "tasks", "merged", "reference", "memory", "notes"}


@pytest.fixture(scope="module")
def heldout_run(tmp_path_factory):
    import model_factory

    data = tmp_path_factory.mktemp("heldout_data")
    x_train, y_train, x_test, y_test = model_factory.fashion_mnist()
    pad = lambda x: np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))  # noqa: E731  28×28 → 32×32
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        np.savez(data / f"fashion_{split}.npz", x=pad(x), y=y)
        np.savez(data / f"words_{split}.npz", x=np.ascontiguousarray(pad(x).transpose(0, 2, 1, 3)), y=y)
    out = tmp_path_factory.mktemp("heldout_out")
    # a process of its own, as a user runs it: the script sets TensorFlow's thread counts, which must happen
    # before TensorFlow first runs (other tests in this process have run it already)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    subprocess.run([sys.executable, "-m", "examples.heldout.run", "--data", str(data), "--out", str(out),
                    "--samples", "small", "--epochs", "1", "--presets", "light", "--steps", "0", "--runs", "10"],
                   cwd=ROOT, env=env, check=True, timeout=900)
    summary = json.loads((out / "heldout_summary.json").read_text())
    return {"summary": summary, "out": out, "data": data}


def test_trains_two_models_of_other_architectures(heldout_run):
    models = heldout_run["summary"]["models"]
    assert set(models) == {"vgg_fashion", "strided_words"}
    for m in models.values():
        assert m["tflite_top1_agreement"] >= 0.99
    out = heldout_run["out"]
    for name in models:
        assert (out / f"{name}.keras").is_file() and (out / f"{name}.tflite").is_file()


def test_merged_model_runs_and_matches_the_keras_reference(heldout_run):
    from edgemerge import emm
    from edgemerge.executors.keras_reference import reference_logits
    from edgemerge.runtime import Runtime

    path = heldout_run["out"] / "merged_light.emm"
    graph, runtime = emm.read_emm(path), Runtime(path)
    assert set(runtime.task_names) == {"fashion", "words"}
    for task in runtime.task_names:
        with np.load(heldout_run["out"] / f"{task}_test_small.npz") as npz:
            x = npz["x"][:16]
        got = runtime.run(task, x)
        with tf.device("/CPU:0"):
            want = np.asarray(reference_logits(graph, task, x))
        assert got.shape == want.shape
        assert np.max(np.abs(got - want)) <= 1e-4 * max(1.0, float(np.max(np.abs(want))))


def test_summary_and_bench_json(heldout_run):
    light = heldout_run["summary"]["presets"]["light"]
    assert light["compression"] > 1 and light["file_bytes"] > 0
    for task in ("fashion", "words"):
        r = light["tasks"][task]
        assert r["n"] == 256 and 0 <= r["accuracy"] <= 1 and r["reference_accuracy"] is not None
    bench = json.loads((heldout_run["out"] / "bench_light.json").read_text())
    assert BENCH_KEYS <= set(bench), BENCH_KEYS - set(bench)
    assert set(bench["tasks"]) == {"fashion", "words"} and bench["threads"] == 1 and bench["runs"] == 10
    for side in ("merged_ms", "reference_ms"):
        assert 0 < bench[side]["min"] <= bench[side]["median"] <= bench[side]["p95"]
    assert bench["speedup"] == pytest.approx(bench["reference_ms"]["median"] / bench["merged_ms"]["median"])
    assert light["bench"]["speedup"] == pytest.approx(bench["speedup"])
