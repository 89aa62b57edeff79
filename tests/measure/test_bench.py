"""`edgemerge bench`: the JSON schema and its invariants on a small merged model against its TFLite originals,
--profile listing every node, the Python API with --data, and the errors for a bad --vs. Benchmarks are not
timed tests: nothing here depends on how fast either side is."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

from edgemerge.errors import EdgemergeError  # noqa: E402

L = keras.layers
RUNS, WARMUP = 12, 2
pytestmark = pytest.mark.filterwarnings("ignore:Statistics for quantized inputs:UserWarning")


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "edgemerge.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


def to_tflite(model, path, int8_sample_shape=None):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8_sample_shape is not None:        # full integer quantisation: the peer a user would likely pick
        rng = np.random.default_rng(0)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([rng.random((1, *int8_sample_shape), dtype=np.float32)]
                                                    for _ in range(8))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    path.write_bytes(converter.convert())
    return path


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two small untrained models (different inputs and heads), their .tflite files and the merged .emm."""
    from edgemerge.workflows.pipeline import merge_files
    directory = tmp_path_factory.mktemp("bench")
    keras.utils.set_random_seed(0)
    a = keras.Sequential([keras.Input((16, 16, 1)), L.Conv2D(8, 3, activation="relu"), L.MaxPooling2D(),
                          L.Conv2D(16, 3, activation="relu"), L.Flatten(), L.Dense(32, activation="relu"),
                          L.Dense(10, activation="softmax")])
    b = keras.Sequential([keras.Input((12, 12, 3)), L.Conv2D(8, 3, padding="same", activation="relu"),
                          L.MaxPooling2D(), L.Conv2D(16, 3, padding="same", activation="relu"),
                          L.GlobalAveragePooling2D(), L.Dense(4)])
    paths = {"a": to_tflite(a, directory / "a.tflite"), "b": to_tflite(b, directory / "b.tflite"),
             "a_int8": to_tflite(a, directory / "a_int8.tflite", int8_sample_shape=(16, 16, 1))}
    paths["emm"] = directory / "m.emm"
    merge_files({"a": paths["a"], "b": paths["b"]}, paths["emm"], preset="accu")
    return paths


@pytest.fixture(scope="module")
def bench_json(pair):
    result = cli("bench", pair["emm"], "--vs", f"a={pair['a']}", "--vs", f"b={pair['b']}", "--runs", RUNS,
                 "--warmup", WARMUP, "--json", "--profile")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_json_has_the_documented_schema(bench_json):
    for side in ("merged_ms", "reference_ms"):
        stats = bench_json[side]
        assert set(stats) == {"min", "median", "p95"}
        assert all(isinstance(v, float) for v in stats.values())
        assert 0 < stats["min"] <= stats["median"] <= stats["p95"]
    assert isinstance(bench_json["speedup"], float)
    assert bench_json["speedup"] == pytest.approx(bench_json["reference_ms"]["median"] / bench_json["merged_ms"]["median"],
                                                  rel=1e-9)
    for key in ("merged_peak_bytes", "reference_peak_bytes"):
        assert isinstance(bench_json[key], int) and bench_json[key] > 0
    assert bench_json["threads"] == 1 and bench_json["runs"] == RUNS and bench_json["warmup"] == WARMUP


def test_merged_memory_is_model_plus_context(bench_json, pair):
    from edgemerge.runtime import Runtime
    rt = Runtime(pair["emm"])
    assert bench_json["merged_peak_bytes"] == pair["emm"].stat().st_size + rt.context_bytes
    assert bench_json["merged_rss_peak_bytes"] > 0
    held = bench_json["memory"]["reference"]["held"]
    assert set(held) == {"heap", "model_files", "library_code"}


def test_per_task_details(bench_json, pair):
    tasks = bench_json["tasks"]
    assert list(tasks) == ["a", "b"]
    for task, t in tasks.items():
        assert t["reference"] == str(pair[task])
        assert 0 < t["reference_ms"]["min"] <= t["reference_ms"]["median"] <= t["reference_ms"]["p95"]
        assert 0.0 <= t["top1_agreement"] <= 1.0
    assert tasks["a"]["input_shape"] == [16, 16, 1] and tasks["b"]["input_shape"] == [12, 12, 3]


def test_profile_lists_every_node(bench_json, pair):
    from edgemerge.runtime import Runtime
    nodes = Runtime(pair["emm"]).nodes()
    profile = bench_json["profile"]
    assert [p["name"] for p in profile] == [n["name"] for n in nodes]
    assert [p["kernel"] for p in profile] == [n["kernel"] for n in nodes]
    if profile[0]["runs"] is not None:          # a runtime with the profiling API: every node ran every run
        assert all(p["runs"] == RUNS for p in profile)
        for p in profile:
            assert p["total_ms"] >= 0 and p["table_ms"] >= 0 and p["accumulate_ms"] >= 0
            assert p["table_ms"] + p["accumulate_ms"] <= p["total_ms"] * 1.001 + 1e-6


def test_human_output(pair):
    result = cli("bench", pair["emm"], "--vs", f"b={pair['b']}", "--vs", f"a={pair['a']}", "--runs", 3,
                 "--warmup", 0, "--profile")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "speedup" in out and "merged" in out and "reference" in out and "peak memory" in out
    assert "a/" in out and "b/" in out                      # the profile names every task's nodes
    assert "single-threaded" in out


def test_python_api_with_data_and_a_quantised_reference(pair, tmp_path):
    from edgemerge.measure.bench import bench
    x = np.random.default_rng(3).random((5, 16, 16, 1), dtype=np.float32)
    np.savez(tmp_path / "a.npz", x=x, y=np.zeros(5, np.int64))
    result = bench(pair["emm"], {"a": str(pair["a_int8"]), "b": str(pair["b"])}, runs=4, warmup=1,
                   data={"a": str(tmp_path / "a.npz")}, memory=False)
    assert result["inputs"] == "data"
    assert result["tasks"]["a"]["reference_input"] == "int8"
    assert result["merged_ms"]["min"] <= result["merged_ms"]["median"] <= result["merged_ms"]["p95"]


@pytest.mark.parametrize("vs, message", [
    (["a={a}"], "no reference model for task(s) b"),
    (["a={a}", "b={b}", "c={b}"], "task(s) c not in"),
    (["a={a}", "b={missing}"], "no such file"),
    (["a={b}", "b={a}"], "takes input of shape"),
    (["a={a}", "b={emm}"], "must be a .tflite file"),
    (["a={a}", "a={a}"], "given twice"),
])
def test_bad_vs_is_a_clear_error(pair, tmp_path, vs, message):
    values = {**{k: str(v) for k, v in pair.items()}, "missing": str(tmp_path / "nope.tflite")}
    args = [x for item in vs for x in ("--vs", item.format(**values))]
    result = cli("bench", pair["emm"], *args, "--runs", 1, "--warmup", 0)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr


def test_bad_data_and_missing_model(pair, tmp_path):
    np.savez(tmp_path / "wrong.npz", x=np.zeros((2, 5, 5, 1), np.float32))
    from edgemerge.measure.bench import bench
    with pytest.raises(EdgemergeError, match="--data a=.*needs"):
        bench(pair["emm"], {"a": str(pair["a"]), "b": str(pair["b"])}, runs=1, warmup=0,
              data={"a": str(tmp_path / "wrong.npz")}, memory=False)
    result = cli("bench", tmp_path / "none.emm", "--vs", f"a={pair['a']}")
    assert result.returncode == 1 and "no such file" in result.stderr
