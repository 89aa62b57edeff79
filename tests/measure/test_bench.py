"""`edgemerge bench`: the JSON schema and its invariants on a small merged model against its TFLite originals,
--profile listing every node, the Python API with --data, and the errors for a bad --vs. Benchmarks are not
timed tests: nothing here depends on how fast either side is."""
from __future__ import annotations

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

from edgemerge.errors import EdgemergeError  # noqa: E402
from tflite_convert import merged_tflite_pair, to_tflite  # noqa: E402
from cli_runner import run_cli as cli  # noqa: E402

L = keras.layers
RUNS, WARMUP = 12, 2
pytestmark = pytest.mark.filterwarnings("ignore:Statistics for quantized inputs:UserWarning")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two small untrained models (different inputs and heads), their .tflite files and the merged .emm."""
    directory = tmp_path_factory.mktemp("bench")
    keras.utils.set_random_seed(0)
    a = keras.Sequential([keras.Input((16, 16, 1)), L.Conv2D(8, 3, activation="relu"), L.MaxPooling2D(),
                          L.Conv2D(16, 3, activation="relu"), L.Flatten(), L.Dense(32, activation="relu"),
                          L.Dense(10, activation="softmax")])
    b = keras.Sequential([keras.Input((12, 12, 3)), L.Conv2D(8, 3, padding="same", activation="relu"),
                          L.MaxPooling2D(), L.Conv2D(16, 3, padding="same", activation="relu"),
                          L.GlobalAveragePooling2D(), L.Dense(4)])
    return merged_tflite_pair(directory, {"a": a, "b": b}, {"a_int8": "a"})


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


def test_merged_memory_is_model_plus_packed_plus_context(bench_json, pair):
    from edgemerge.runtime import Runtime
    rt = Runtime(pair["emm"])
    # the pair's LUT layers pack their index maps for the fast kernels: memory beyond the file, counted
    assert rt.packed_bytes > 0 and bench_json["merged"]["packed_bytes"] == rt.packed_bytes
    assert bench_json["merged_peak_bytes"] == pair["emm"].stat().st_size + rt.packed_bytes + rt.context_bytes
    # the packed data is written at load, so it is resident: the RSS measurement of the same side sees it
    assert bench_json["merged_rss_peak_bytes"] >= rt.packed_bytes
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


# -- every side's load time, first run and spread; several peers; per-op totals and the CSV ------------------
def ordered(ms: dict) -> bool:
    return 0 < ms["min"] <= ms["median"] <= ms["p95"] and ms["std"] >= 0 and ms["mean"] >= ms["min"]


def test_every_side_reports_load_first_run_and_spread(bench_json, pair):
    merged = bench_json["merged"]
    assert merged["load_ms"] > 0 and merged["first_run_ms"] > 0 and ordered(merged["ms"])
    assert {k: merged["ms"][k] for k in ("min", "median", "p95")} == bench_json["merged_ms"]
    assert merged["peak_bytes"] == bench_json["merged_peak_bytes"]
    [peer] = bench_json["peers"]
    assert peer["label"] == "tflite float32" and peer["kind"] == "tflite"
    assert peer["load_ms"] > 0 and peer["first_run_ms"] > 0 and ordered(peer["ms"])
    assert {k: peer["ms"][k] for k in ("min", "median", "p95")} == bench_json["reference_ms"]
    assert peer["speedup"] == bench_json["speedup"] and peer["peak_bytes"] == bench_json["reference_peak_bytes"]
    for task, t in peer["tasks"].items():
        assert t["file"] == str(pair[task]) and ordered(t["ms"])
        assert ordered(bench_json["tasks"][task]["merged_alone_ms"])


def test_profile_totals_per_op_type(bench_json):
    rows, by_op = bench_json["profile"], bench_json["profile_by_op"]
    if rows[0]["runs"] is None:
        assert by_op == []
        return
    assert sorted(o["op"] for o in by_op) == sorted({r["op"] for r in rows})
    for o in by_op:
        mine = [r for r in rows if r["op"] == o["op"]]
        assert o["nodes"] == len(mine)
        assert o["ms_per_run"] == pytest.approx(sum(r["ms_per_run"] for r in mine))
    assert sum(o["share"] for o in by_op) == pytest.approx(1.0)
    assert [o["total_ms"] for o in by_op] == sorted((o["total_ms"] for o in by_op), reverse=True)


def test_float_and_int8_peers_in_one_run_and_the_profile_csv(pair, tmp_path):
    import csv
    b_int8 = to_tflite(keras.Sequential([keras.Input((12, 12, 3)), L.Conv2D(8, 3, padding="same"),
                                         L.GlobalAveragePooling2D(), L.Dense(4)]), tmp_path / "b_int8.tflite",
                       optimise="int8-io", sample_shape=(12, 12, 3))
    out = tmp_path / "sub" / "profile.csv"
    result = cli("bench", pair["emm"], "--vs", f"a={pair['a']}", "--vs", f"b={pair['b']}", "--vs",
                 f"a={pair['a_int8']}", "--vs", f"b={b_int8}", "--runs", 3, "--warmup", 0, "--profile-csv", out,
                 "--json")
    assert result.returncode == 0, result.stderr
    r = json.loads(result.stdout)
    assert [p["label"] for p in r["peers"]] == ["tflite float32", "tflite int8"]
    int8 = r["peers"][1]
    assert {t: v["file"] for t, v in int8["tasks"].items()} == {"a": str(pair["a_int8"]), "b": str(b_int8)}
    assert all(v["input"] == "int8" for v in int8["tasks"].values())
    assert int8["speedup"] == pytest.approx(int8["ms"]["median"] / r["merged"]["ms"]["median"])
    assert isinstance(int8["peak_bytes"], int) and int8["peak_bytes"] > 0
    assert r["tasks"]["a"]["reference"] == str(pair["a"])       # the older keys: the first peer
    with open(out, newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["node", "op", "kernel", "ms", "share"]
    assert [row[0] for row in table[1:]] == [p["name"] for p in r["profile"]]
    assert [row[2] for row in table[1:]] == [p["kernel"] for p in r["profile"]]
    if r["profile"][0]["runs"] is not None:
        assert sum(float(row[4]) for row in table[1:]) == pytest.approx(1.0, abs=1e-4)
    assert r["profile_csv"] == str(out)


def test_parse_peer_sets():
    from edgemerge.measure.bench import parse_peer_sets
    assert parse_peer_sets(["a=x", "b=y", "a=x8", "b=y8"]) == [{"a": "x", "b": "y"}, {"a": "x8", "b": "y8"}]
    assert parse_peer_sets(["a=x", "a=x8", "b=y"]) == [{"a": "x", "b": "y"}, {"a": "x8"}]
    with pytest.raises(EdgemergeError, match="given twice"):
        parse_peer_sets(["a=x", "a=x"])
    with pytest.raises(EdgemergeError, match="expected TASK=PATH"):
        parse_peer_sets(["a"])


def test_profile_csv_to_a_folder_is_refused_before_measuring(pair, tmp_path):
    result = cli("bench", pair["emm"], "--vs", f"a={pair['a']}", "--vs", f"b={pair['b']}", "--runs", 1,
                 "--profile-csv", tmp_path)
    assert result.returncode == 2 and "is a directory" in result.stderr     # click's own check: usage
    (tmp_path / "plain").write_text("x")
    result = cli("bench", pair["emm"], "--vs", f"a={pair['a']}", "--vs", f"b={pair['b']}", "--runs", 1,
                 "--profile-csv", tmp_path / "plain" / "p.csv")
    assert result.returncode == 1 and result.stderr.startswith("error: "), result.stderr
    assert "bench:" not in result.stderr and "Traceback" not in result.stderr   # refused before measuring


def test_interleave_order_blocks_rounds_per_side_and_covers_every_round():
    """threads > 1 times the sides in blocks of consecutive rounds (their pools stay awake, as for a user who
    runs one model again and again); 1 thread keeps the round-by-round order."""
    from edgemerge.measure.bench import THREADED_BLOCK, interleave_order

    assert interleave_order(3, 4, 1) == [(0, 0), (1, 0), (2, 0), (1, 1), (2, 1), (0, 1),
                                         (2, 2), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]
    order = interleave_order(3, 7, 3)
    assert sorted(order) == [(side, k) for side in range(3) for k in range(7)]
    assert order[:9] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]
    assert order[9:12] == [(1, 3), (1, 4), (1, 5)]          # the next block starts with the next side
    assert order[-3:] == [(2, 6), (0, 6), (1, 6)]           # a last, shorter block
    assert THREADED_BLOCK > 1


def test_threaded_bench_reports_its_blocks_and_the_1_thread_side(pair):
    result = cli("bench", pair["emm"], "--vs", f"a={pair['a']}", "--vs", f"b={pair['b']}", "--runs", RUNS,
                 "--warmup", WARMUP, "--threads", 2, "--json")
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    from edgemerge.measure.bench import THREADED_BLOCK
    assert got["threads"] == 2 and got["interleave_block"] == THREADED_BLOCK
    assert got["merged_threads_speedup"] == pytest.approx(got["merged_1thread_ms"]["median"] / got["merged_ms"]["median"],
                                                          rel=1e-9)


def test_an_int8_peer_with_float_input_is_labelled_int8(pair, tmp_path):
    """A full-integer .tflite converted with float input and output (the converter's default) computes in int8:
    bench labels the peer by its tensors, not by its input type (which is float32)."""
    from edgemerge.measure.peers import peer_label
    from edgemerge.measure.tflite_peer import TFLiteModel

    a = keras.Sequential([keras.Input((16, 16, 1)), L.Conv2D(4, 3), L.Flatten(), L.Dense(10)])
    b = keras.Sequential([keras.Input((12, 12, 3)), L.Conv2D(4, 3), L.GlobalAveragePooling2D(), L.Dense(4)])
    a_int8 = to_tflite(a, tmp_path / "a.int8.tflite", optimise="int8", sample_shape=(16, 16, 1))
    b_int8 = to_tflite(b, tmp_path / "b.int8.tflite", optimise="int8", sample_shape=(12, 12, 3))
    a_f16 = to_tflite(a, tmp_path / "a.f16.tflite", optimise="float16")
    models = {"a": TFLiteModel(a_int8), "b": TFLiteModel(b_int8)}
    assert models["a"].input_dtype == np.float32 and models["a"].precision == "int8"
    assert TFLiteModel(pair["a"]).precision == "float32" and TFLiteModel(pair["a_int8"]).precision == "int8"
    assert TFLiteModel(a_f16).precision == "float16"
    taken: set[str] = set()
    assert peer_label(models, taken) == "tflite int8"
    assert peer_label({"a": TFLiteModel(pair["a"]), "b": TFLiteModel(b_int8)}, taken) == "tflite mixed"
    result = cli("bench", pair["emm"], "--vs", f"a={pair['a']}", "--vs", f"b={pair['b']}", "--vs", f"a={a_int8}",
                 "--vs", f"b={b_int8}", "--runs", 2, "--warmup", 0, "--json")
    assert result.returncode == 0, result.stderr
    assert [p["label"] for p in json.loads(result.stdout)["peers"]] == ["tflite float32", "tflite int8"]
