"""Everyday commands on a small merged model (synthetic sources, no training): `run` for batches, plain
`inspect` showing the codebook sharing, `zipper pick --json`, `eval --reference x.tflite` without TensorFlow
and without LiteRT's XNNPACK banner, and `bench`'s per-task figure on the merged side."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
from synthetic_models import lenet_like

from edgemerge.emm.writer import write_emm
from edgemerge.merging.merge import merge_models
from edgemerge.runtime import Runtime
from cli_runner import run_cli as cli


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    directory = tmp_path_factory.mktemp("everyday")
    model = directory / "m.emm"
    write_emm(merge_models({"a": lenet_like("a", seed=0), "b": lenet_like("b", seed=1, classes=5)},
                           kmeans_inits=1).graph, model)
    x = np.random.default_rng(0).random((6, 16, 16, 1), dtype=np.float32)
    np.save(directory / "x.npy", x)
    np.savez(directory / "x.npz", x=x)
    return model, x, directory


def test_run_lists_the_top_classes_of_every_sample(small):
    model, x, directory = small
    logits = Runtime(model).run("b", x)
    result = cli("run", model, "--task", "b", "--input", directory / "x.npz", "--top", "3", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["n"] == 6 and out["classes"] == 5
    for i, sample in enumerate(out["samples"]):
        assert [t["class"] for t in sample["top"]] == list(np.argsort(-logits[i], kind="stable")[:3])
        probs = np.exp(logits[i] - logits[i].max())
        probs /= probs.sum()
        assert sample["top"][0]["probability"] == pytest.approx(probs.max(), rel=1e-5)
    human = cli("run", model, "--task", "a", "--input", directory / "x.npy")
    assert human.returncode == 0, human.stderr
    assert human.stdout.splitlines()[0] == "a: 6 sample(s), 10 classes"
    assert len(human.stdout.splitlines()) == 7


@pytest.mark.parametrize("name, content, message", [
    ("x.txt", None, "expected a .npy or .npz file"),
    ("missing.npy", None, "no such file"),
    ("two.npz", {"p": np.zeros(3), "q": np.zeros(3)}, "has arrays p, q; expected `x` or a single array"),
])
def test_run_input_errors_are_one_line(small, tmp_path, name, content, message):
    model, _, _ = small
    if content is not None:
        np.savez(tmp_path / name, **content)
    elif name.endswith(".txt"):
        (tmp_path / name).write_text("1 2 3")
    result = cli("run", model, "--task", "a", "--input", tmp_path / name)
    assert result.returncode == 1
    assert result.stderr.startswith("error: --input ") and message in result.stderr
    assert result.stderr.count("\n") == 1


def test_run_unknown_task_names_the_tasks(small):
    model, _, directory = small
    result = cli("run", model, "--task", "c", "--input", directory / "x.npy")
    assert result.returncode == 1
    assert "error: no task named 'c'; the model has: a, b" in result.stderr


def test_plain_inspect_shows_which_layers_share_codebooks(small):
    model, _, _ = small
    result = cli("inspect", model)
    assert result.returncode == 0, result.stderr
    assert "  codebooks: 3, 3 shared by several layers" in result.stdout
    for layer in ("c1", "c2", "d1"):
        assert f"codebook/{layer} (" in result.stdout and f"tasks a, b): a/{layer}, b/{layer}" in result.stdout
    info = json.loads(cli("inspect", model, "--json").stdout)
    assert [cb["layers"] for cb in info["codebooks"]] == [["a/c1", "b/c1"], ["a/c2", "b/c2"], ["a/d1", "b/d1"]]
    assert info["shared_trunk"] == []      # two inputs: nothing runs once for both
    assert {layer["name"]: layer["tasks"] for layer in info["layers"]}["b/d2"] == ["b"]


def test_zipper_pick_json(small, tmp_path):
    from edgemerge.zipper.report import REPORT_FORMAT, REPORT_NAME, REPORT_VERSION

    model, _, _ = small
    data = model.read_bytes()
    (tmp_path / "k01.emm").write_bytes(data)
    rounds = [{"k": 1, "file": "k01.emm", "sha256": hashlib.sha256(data).hexdigest(), "file_bytes": len(data),
               "compression": 1.5, "drop": {"a": 0.004, "b": 0.01}}]
    (tmp_path / REPORT_NAME).write_text(json.dumps({"format": REPORT_FORMAT, "version": REPORT_VERSION,
                                                     "rounds": rounds}))
    result = cli("zipper", "pick", tmp_path, "--max-drop", "0.02", "-o", tmp_path / "out.emm", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["k"] == 1 and out["drop"] == {"a": 0.004, "b": 0.01} and out["output"] == str(tmp_path / "out.emm")
    assert (tmp_path / "out.emm").read_bytes() == data


@pytest.fixture(scope="module")
def tflite_a(small):
    """A .tflite model per task (16x16x1 input; 10 and 5 classes): the reference side of eval and bench."""
    tf = pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    pytest.importorskip("ai_edge_litert")
    _, _, directory = small
    keras.utils.set_random_seed(0)
    paths = {}
    for task, classes in (("a", 10), ("b", 5)):
        net = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                                keras.layers.Flatten(), keras.layers.Dense(classes)])
        paths[task] = directory / f"{task}.tflite"
        paths[task].write_bytes(tf.lite.TFLiteConverter.from_keras_model(net).convert())
    return paths


def test_eval_with_a_tflite_reference_loads_no_tensorflow_and_prints_no_xnnpack_banner(small, tflite_a):
    model, x, directory = small
    np.savez(directory / "a_data.npz", x=x, y=np.arange(len(x)) % 10)
    code = ("import sys\nfrom edgemerge.cli import main\n"
            "try:\n    main(sys.argv[1:], standalone_mode=False)\n"
            "finally:\n    print('TF-LOADED' if 'tensorflow' in sys.modules else 'TF-NOT-LOADED', file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", code, "eval", str(model), "--data", f"a={directory / 'a_data.npz'}",
                             "--reference", f"a={tflite_a['a']}", "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "TF-NOT-LOADED"      # and nothing else: no XNNPACK INFO line
    assert json.loads(result.stdout)["tasks"]["a"]["reference_accuracy"] is not None


def test_bench_gives_a_per_task_figure_on_the_merged_side(small, tflite_a, tmp_path):
    model, _, _ = small
    result = cli("bench", model, "--vs", f"a={tflite_a['a']}", "--vs", f"b={tflite_a['b']}", "--runs", "5", "--warmup", "1",
                 "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    for task in ("a", "b"):
        alone = out["tasks"][task]["merged_alone_ms"]
        assert alone["min"] > 0 and alone["min"] <= alone["median"] <= alone["p95"]
    human = cli("bench", model, "--vs", f"a={tflite_a['a']}", "--vs", f"b={tflite_a['b']}", "--runs", "5", "--warmup", "1")
    assert human.returncode == 0, human.stderr
    assert "merged alone" in human.stdout
    assert "XNNPACK" not in human.stderr
