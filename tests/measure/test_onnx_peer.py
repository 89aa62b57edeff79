"""ONNX Runtime as a peer: `eval --reference X.onnx` (NCHW or NHWC data, ambiguous shapes refused, a corrupt
.onnx one error line) and `bench --vs X.onnx` beside a TFLite peer, each reported by kind. The merged model is
the plain-CNN fixture merged with a Keras chain of the same input size (merging of graphs is another branch)."""
from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

from edgemerge.measure.onnx_peer import ONNXModel, open_peer  # noqa: E402
from cli_runner import run_cli  # noqa: E402

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "onnx"
PLAIN = FIXTURES / "plain_cnn.onnx"


cli = partial(run_cli, timeout=900)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx_peer")
    keras.utils.set_random_seed(0)
    k = keras.Sequential([keras.Input((32, 32, 1)), keras.layers.Conv2D(8, 5, padding="same", activation="relu"),
                          keras.layers.MaxPooling2D(), keras.layers.Conv2D(16, 3, activation="relu"),
                          keras.layers.MaxPooling2D(), keras.layers.Flatten(), keras.layers.Dense(4)])
    k.save(d / "k.keras")
    (d / "k.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(k).convert())
    data = np.load(FIXTURES / "data.npz")
    np.savez(d / "nchw.npz", x=data["x1"], y=data["y1"])
    np.savez(d / "nhwc.npz", x=data["x1"].transpose(0, 2, 3, 1), y=data["y1"])
    r = cli("merge", f"vision={PLAIN}", f"k={d / 'k.keras'}", "-o", d / "m.emm")
    assert r.returncode == 0, r.stderr
    return d, data


def test_peer_matches_fixture_logits_nhwc_in(setup):
    _, data = setup
    peer = open_peer(PLAIN)
    assert isinstance(peer, ONNXModel) and peer.input_shape == (32, 32, 1) and peer.output_size == 10
    nhwc = data["x1"].transpose(0, 2, 3, 1)
    np.testing.assert_allclose(peer.run_batch(nhwc), data["plain_cnn_logits"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(peer.run_one(nhwc[3]), data["plain_cnn_logits"][3], rtol=1e-5, atol=1e-5)
    assert "intra_op_num_threads=1" in peer.description


def test_eval_reference_onnx_nchw_and_nhwc(setup):
    d, data = setup
    results = []
    for name in ("nchw.npz", "nhwc.npz"):
        r = cli("eval", d / "m.emm", "--data", f"vision={d / name}", "--reference", f"vision={PLAIN}", "--json")
        assert r.returncode == 0, r.stderr
        results.append(json.loads(r.stdout)["tasks"]["vision"])
    assert results[0] == results[1]
    expected = float(np.mean(np.argmax(data["plain_cnn_logits"], -1) == data["y1"]))
    assert results[0]["reference_accuracy"] == pytest.approx(expected)


def test_eval_reference_refuses_wrong_shape_and_corrupt_onnx(setup, tmp_path):
    d, _ = setup
    np.savez(tmp_path / "bad.npz", x=np.zeros((2, 32, 1, 32), np.float32), y=np.zeros(2, np.int64))
    r = cli("eval", d / "m.emm", "--data", f"vision={tmp_path / 'bad.npz'}", "--reference", f"vision={PLAIN}")
    assert r.returncode == 1 and r.stderr.strip().startswith("error: ") and "NCHW" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    trunc = tmp_path / "t.onnx"
    trunc.write_bytes(PLAIN.read_bytes()[:5000])
    r = cli("eval", d / "m.emm", "--data", f"vision={d / 'nchw.npz'}", "--reference", f"vision={trunc}")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("error: ") and "t.onnx" in r.stderr and "Traceback" not in r.stderr


def test_bench_vs_onnx_and_tflite(setup):
    d, _ = setup
    r = cli("bench", d / "m.emm", "--vs", f"vision={PLAIN}", "--vs", f"k={d / 'k.tflite'}", "--runs", "20",
            "--warmup", "2", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["tasks"]["vision"]["reference_kind"] == "onnxruntime"
    assert out["tasks"]["k"]["reference_kind"] == "tflite"
    assert "CPUExecutionProvider" in out["tasks"]["vision"]["reference_peer"]
    assert out["tasks"]["vision"]["top1_agreement"] >= 0.9    # the merged task agrees with ONNX Runtime
    assert out["reference_ms"]["median"] > 0 and out["reference_peak_bytes"] > 0


def test_bench_data_nchw_for_an_onnx_task(setup, tmp_path):
    """`bench --data` of a task with an .onnx peer takes NCHW (the ONNX model's layout) like NHWC: the same pool,
    so the same agreement with ONNX Runtime; a shape that is neither layout is one error line; without an .onnx
    peer for the task, NCHW data is refused as before (the merged model reads NHWC)."""
    d, _ = setup
    k_data = tmp_path / "k.npz"
    np.savez(k_data, x=np.random.default_rng(0).random((4, 32, 32, 1), dtype=np.float32))
    agreements = []
    for name in ("nchw.npz", "nhwc.npz"):
        r = cli("bench", d / "m.emm", "--vs", f"vision={PLAIN}", "--vs", f"k={d / 'k.tflite'}", "--runs", "5",
                "--warmup", "1", "--data", f"vision={d / name}", "--data", f"k={k_data}", "--json")
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["inputs"] == "data"
        agreements.append(out["tasks"]["vision"]["top1_agreement"])
    assert agreements[0] == agreements[1]
    np.savez(tmp_path / "bad.npz", x=np.zeros((2, 32, 1, 32), np.float32))
    for vs, data, needle in ((f"vision={PLAIN}", tmp_path / "bad.npz", "NCHW"),
                             (f"vision={d / 'k.tflite'}", d / "nchw.npz", "(8, 1, 32, 32)")):
        r = cli("bench", d / "m.emm", "--vs", vs, "--vs", f"k={d / 'k.tflite'}", "--runs", "2", "--warmup", "0",
                "--data", f"vision={data}")
        assert r.returncode == 1 and r.stderr.startswith("error: ") and needle in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_calibration_targets_from_onnx_runtime(setup):
    """L1 targets of an ONNX original: ONNX Runtime with the matched tensors exposed, NHWC, checked before use."""
    from edgemerge import emm
    from edgemerge.errors import EdgemergeError
    from edgemerge.training.targets import OnnxTargetModel, load_targets

    d, data = setup
    graph = emm.read_emm(d / "m.emm")
    targets, _ = load_targets(graph, {"vision": str(PLAIN)}, ["vision"])
    tg = targets["vision"]
    assert isinstance(tg.model, OnnxTargetModel) and tg.nodes
    x = data["x1"].transpose(0, 2, 3, 1)
    outs = tg.model(x)
    assert len(outs) == len(tg.nodes) + 1
    np.testing.assert_allclose(outs[-1], data["plain_cnn_logits"], rtol=1e-5, atol=1e-5)
    for i, out in zip(tg.nodes, outs):
        shape = tuple(graph.nodes[i].out_shape)
        assert tuple(out.shape[1:]) == (shape if out.ndim == 4 else (int(np.prod(shape)),))   # NCHW -> NHWC
    in_tf = tf.function(lambda t: tg.model(t, training=False))(tf.constant(x))
    np.testing.assert_allclose(np.asarray(in_tf[0]), outs[0], rtol=1e-6)
    # a node matched to the wrong tensor fails the numeric spot check before any training
    first, second = tg.nodes[0], tg.nodes[1]
    wrong = [(first, graph.nodes[second].match_output.partition(":")[2])]
    graph.nodes[second].out_shape = graph.nodes[first].out_shape
    with pytest.raises(EdgemergeError, match="spot check|shape"):
        load_targets(graph, {"vision": str(PLAIN)}, ["vision"], l1_targets={"vision": wrong})
