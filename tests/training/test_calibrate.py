"""Calibration training (sdk/edgemerge/training/calibrate.py): the TensorFlow form of a merged graph against the Keras
reference, shared codebooks, that calibration repairs a degraded merge, that the written file is the trained
model (C runtime parity), distribution strategies and deterministic data subsets (the r/C search:
tests/workflows/test_budget.py).

The merged models here come from two tiny Keras CNNs trained in a fixture (about 3 s) and encoded with a
small numpy/scikit-learn NeuralMerger encoding (`merge_tiny`), so these tests do not depend on the importer
or merge.py.
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from tiny_pair import SPECS, _real_merge, cpu_reference_logits, max_rel_err, merge_tiny  # noqa: E402

from edgemerge import emm  # noqa: E402
from edgemerge.emm.constants import Act, DType, Op  # noqa: E402
from edgemerge.emm.graph import MergedGraph, Node, Task, Tensor  # noqa: E402
from edgemerge.errors import EdgemergeError  # noqa: E402
from edgemerge.training.calibrate import (  # noqa: E402
    TFMergedGraph,
    calibrate,
    split_calibration,
    tf_forward,
)
from edgemerge.workflows.budget import lut_groups  # noqa: E402

HERE = Path(__file__).resolve().parents[1]  # tests/, where the helper modules live


def all_ops_graph(seed=0) -> MergedGraph:
    """One task through every op: plain, LUT (stride 2, TF-'same' pads) and depthwise convolutions, max/avg
    pools (valid and same), ACTIVATION, global average pool, reshape, LUT dense and dense."""
    rng = np.random.default_rng(seed)
    g = MergedGraph(metadata={"edgemerge.tool_version": "test"})
    v = g.add_input((11, 10, 3))
    f32 = lambda name, *shape, scale=0.5: g.add_tensor(Tensor.f32(name, rng.normal(size=shape) * scale))  # noqa: E731
    v = g.add_node(Node("conv", Op.CONV2D, v, (11, 10, 5), Act.RELU, (3, 3), (1, 1), (1, 1, 1, 1),
                        weight=f32("conv/w", 3, 3, 3, 5), bias=f32("conv/b", 5)))
    cb = f32("codebook/lut", 2, 6, 3)                                       # r = 3 does not divide Cin = 5
    ix = g.add_tensor(Tensor.index("lut/index", rng.integers(0, 6, size=(3, 3, 2, 7)), 6))
    v = g.add_node(Node("lut", Op.LUT_CONV2D, v, (6, 5, 7), Act.RELU6, (3, 3), (2, 2), (1, 0, 1, 1), 3, 6, cb, ix,
                        f32("lut/b", 7)))
    v = g.add_node(Node("dw", Op.DEPTHWISE_CONV2D, v, (6, 5, 14), Act.NONE, (3, 3), (1, 1), (1, 1, 1, 1),
                        weight=f32("dw/w", 3, 3, 7, 2), bias=f32("dw/b", 14)))
    v = g.add_node(Node("relu", Op.ACTIVATION, v, (6, 5, 14), Act.RELU))
    v = g.add_node(Node("avg", Op.AVG_POOL, v, (3, 3, 14), kernel=(2, 2), stride=(2, 2), pads=(0, 0, 0, 1)))
    v = g.add_node(Node("max", Op.MAX_POOL, v, (2, 2, 14), kernel=(2, 2), stride=(1, 1)))
    gap = g.add_node(Node("gap", Op.GLOBAL_AVG_POOL, v, (1, 1, 14)))
    v = g.add_node(Node("flat", Op.RESHAPE, v, (1, 1, 56)))
    cb_fc = f32("codebook/fc", 14, 5, 4)
    ix = g.add_tensor(Tensor.index("fc/index", rng.integers(0, 5, size=(14, 9)), 5))
    v = g.add_node(Node("fc", Op.LUT_DENSE, v, (1, 1, 9), Act.RELU, seg_len=4, codewords=5, weight=cb_fc, index=ix,
                        bias=f32("fc/b", 9)))
    v = g.add_node(Node("head", Op.DENSE, v, (1, 1, 4), weight=f32("head/w", 9, 4), bias=f32("head/b", 4)))
    g.tasks.append(Task("t", 0, v, 4))
    g.add_node(Node("gap_head", Op.DENSE, gap, (1, 1, 3), weight=f32("gh/w", 14, 3)))
    g.tasks.append(Task("u", 0, len(g.inputs) + len(g.nodes) - 1, 3))
    return g


# ------------------------------------------------------------------------------------------------
# (a) the TensorFlow form is the graph
# ------------------------------------------------------------------------------------------------
def test_tf_form_equals_keras_reference_on_every_op():
    graph = all_ops_graph()
    x = np.random.default_rng(1).normal(size=(6, 11, 10, 3)).astype(np.float32)
    for task in ("t", "u"):
        got, want = tf_forward(graph, task, x), cpu_reference_logits(graph, task, x)
        assert got.shape == want.shape
        assert max_rel_err(got, want) <= 1e-5


def test_tf_form_equals_keras_reference_on_a_merged_pair(tiny):
    graph = merge_tiny(tiny["models"], (2, 4), (4, 8))
    for task in SPECS:
        x = tiny["test"][task][0][:64]
        assert max_rel_err(tf_forward(graph, task, x), cpu_reference_logits(graph, task, x)) <= 1e-5


def test_node_outputs_match_the_original_layers_they_name(tiny):
    """With a lossless codebook (C ≥ number of sub-vectors) every LUT node reproduces its match_output layer."""
    graph = merge_tiny(tiny["models"], (2, 256), (4, 256))
    model = TFMergedGraph(graph)
    for task in SPECS:
        x = tiny["test"][task][0][:32]
        outs = model.node_outputs(task, x)
        orig = tiny["models"][task]
        for i, node in enumerate(graph.nodes):
            if node.match_output.startswith(task + ":"):
                layer = orig.get_layer(node.match_output.split(":", 1)[1])
                want = keras.Model(orig.inputs, layer.output)(x)
                assert max_rel_err(np.reshape(outs[i], (len(x), -1)), np.reshape(want, (len(x), -1))) <= 1e-4


# ------------------------------------------------------------------------------------------------
# (b) shared codebooks, fixed index maps
# ------------------------------------------------------------------------------------------------
def test_shared_codebook_is_one_variable_with_gradients_from_both_tasks(tiny):
    graph = merge_tiny(tiny["models"], (2, 4), (4, 8))
    model = TFMergedGraph(graph)
    float_ids = {tid for n in graph.nodes for tid in (n.weight, n.bias)
                 if tid != 0xFFFFFFFF and graph.tensors[tid].dtype == DType.F32}
    assert set(model.variables) == float_ids
    assert len(model.trainable_variables) == len(float_ids)
    for group in lut_groups(graph):
        assert {n.name for n in group.nodes} == {f"{t}/{group.key.split(':')[1]}" for t in SPECS}
        var = model.variables[group.codebook]
        grads = {}
        for task in SPECS:
            x, y = (a[:32] for a in tiny["test"][task])
            with tf.GradientTape() as tape:
                logits, _ = model.forward(task, x)
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
            grads[task] = tf.convert_to_tensor(tape.gradient(loss, var)).numpy()
            assert np.abs(grads[task]).sum() > 0, f"{group.key}: no gradient from task {task}"
        assert not np.allclose(grads["a"], grads["b"])
        # both tasks read the same variable object: the sum's gradient is the sum of the gradients
        with tf.GradientTape() as tape:
            loss = sum(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                tiny["test"][t][1][:32], model.forward(t, tiny["test"][t][0][:32])[0])) for t in SPECS)
        both = tf.convert_to_tensor(tape.gradient(loss, var)).numpy()
        np.testing.assert_allclose(both, grads["a"] + grads["b"], rtol=1e-4, atol=1e-7)


def test_calibration_keeps_index_maps_and_writes_back_the_trained_values(tiny):
    graph = merge_tiny(tiny["models"], (2, 4), (4, 4))
    result = calibrate(graph, tiny["originals"], tiny["calib"], steps=20, eval_every=5)
    trained = result.graph
    assert trained is not graph and len(trained.tensors) == len(graph.tensors)
    changed = 0
    for old, new in zip(graph.tensors, trained.tensors):
        assert (old.name, old.dtype, old.bits, old.shape) == (new.name, new.dtype, new.bits, new.shape)
        if old.dtype == DType.IDX:
            assert np.array_equal(old.array, new.array)
        else:
            assert new.array.dtype == np.float32
            changed += not np.array_equal(old.array, new.array)
    if result.report["best_step"] > 0:
        assert changed >= 2
    assert [n.name for n in trained.nodes] == [n.name for n in graph.nodes]
    assert trained.metadata["calibrate.steps"] == 20
    # the input graph is left alone
    fresh = merge_tiny(tiny["models"], (2, 4), (4, 4))
    assert all(np.array_equal(a.array, b.array) for a, b in zip(graph.tensors, fresh.tensors))


# ------------------------------------------------------------------------------------------------
# (c) calibration repairs a degraded merge
# ------------------------------------------------------------------------------------------------
def test_calibration_raises_accuracy_of_a_degraded_merge(tiny):
    graph = merge_tiny(tiny["models"], (2, 2), (8, 2))       # C = 2: deliberately far too small
    lines = []
    result = calibrate(graph, tiny["originals"], tiny["calib"], steps=150, eval_every=30, progress=lines.append)
    rep = result.report
    assert rep["steps"] == 150 and 0 <= rep["best_step"] <= 150
    mean_before = np.mean([rep["tasks"][t]["accuracy_before"] for t in SPECS])
    mean_after = np.mean([rep["tasks"][t]["accuracy_after"] for t in SPECS])
    assert mean_after >= mean_before + 0.1, rep["tasks"]
    for t in SPECS:
        r = rep["tasks"][t]
        assert r["val_ce_after"] < r["val_ce_before"]
        assert np.isfinite(r["final_loss"]) and r["final_l1"] > 0
        assert r["l1_layers"] == ["conv1", "fc1"] and r["l1_skipped_nodes"] == []
    # the loss went down during training, and the report is what a person following the run saw
    first, last = rep["history"][1], rep["history"][-1]
    train_loss = lambda entry: sum(entry["tasks"][t]["train"]["loss"] for t in SPECS)  # noqa: E731
    assert train_loss(last) < train_loss(first)
    assert any("step 150/150" in line for line in lines) and "done" in lines[-1]
    json.dumps(rep)                                            # the CLI prints it
    # and on data it never saw

    def test_accuracy(g):
        return np.mean([np.mean(tf_forward(g, t, tiny["test"][t][0]).argmax(1) == tiny["test"][t][1]) for t in SPECS])
    assert test_accuracy(result.graph) >= test_accuracy(graph) + 0.1


def test_zero_steps_returns_the_graph_unchanged_and_silence_without_progress(tiny, capsys):
    graph = merge_tiny(tiny["models"], (2, 4), (4, 4))
    result = calibrate(graph, tiny["originals"], tiny["calib"], steps=0)
    assert all(np.array_equal(a.array, b.array) for a, b in zip(graph.tensors, result.graph.tensors))
    for t in SPECS:
        assert result.report["tasks"][t]["accuracy_before"] == result.report["tasks"][t]["accuracy_after"]
    out = capsys.readouterr()
    assert "calibrate" not in out.out and "calibrate" not in out.err


def test_nodes_without_match_output_get_no_l1_term(tiny):
    graph = merge_tiny(tiny["models"], (2, 4), (4, 4))
    for node in graph.nodes:
        node.match_output = ""
    lines = []
    result = calibrate(graph, tiny["originals"], tiny["calib"], steps=10, progress=lines.append)
    for t in SPECS:
        r = result.report["tasks"][t]
        assert r["l1_layers"] == [] and r["l1_skipped_nodes"] == [f"{t}/conv1", f"{t}/fc1"]
        assert r["final_l1"] == 0.0
    assert any("no match_output" in line for line in lines)


def test_bad_arguments_are_reported(tiny):
    graph = merge_tiny(tiny["models"], (2, 4), (4, 4))
    with pytest.raises(EdgemergeError, match="no calibration data for task"):
        calibrate(graph, tiny["originals"], {"a": tiny["calib"]["a"]}, steps=1)
    with pytest.raises(EdgemergeError, match="not in the merged model"):
        calibrate(graph, tiny["originals"], {**tiny["calib"], "zzz": tiny["calib"]["a"]}, steps=1)
    with pytest.raises(EdgemergeError, match="expects samples of shape"):
        calibrate(graph, {"a": tiny["originals"]["b"], "b": tiny["originals"]["b"]}, tiny["calib"], steps=1)
    bad = merge_tiny(tiny["models"], (2, 4), (4, 4))
    bad.nodes[0].match_output = "a:no_such_layer"
    with pytest.raises(EdgemergeError, match="names no layer"):
        calibrate(bad, tiny["originals"], tiny["calib"], steps=1)
    with pytest.raises(EdgemergeError, match="calib_fraction"):
        calibrate(graph, tiny["originals"], tiny["calib"], steps=1, calib_fraction=0)
    with pytest.raises(EdgemergeError, match="unknown strategy"):
        calibrate(graph, tiny["originals"], tiny["calib"], steps=1, strategy="tpu")


# ------------------------------------------------------------------------------------------------
# (d) the written file is the trained model
# ------------------------------------------------------------------------------------------------
def test_written_file_runs_in_the_c_runtime_like_tf_forward(tiny, tmp_path):
    graph = merge_tiny(tiny["models"], (2, 4), (4, 4))
    result = calibrate(graph, tiny["originals"], tiny["calib"], steps=30, eval_every=10)
    path = tmp_path / "calibrated.emm"
    emm.write_emm(result.graph, path)
    back = emm.read_emm(path)
    for a, b in zip(result.graph.tensors, back.tensors):
        assert np.array_equal(a.array, b.array), a.name            # float32 values written bit for bit
    try:                                                           # an independent float64 executor of the file
        from edgemerge.executors.numpy_exec import execute_graph
    except ImportError:                                            # pragma: no cover
        execute_graph = None
    if execute_graph is not None:
        for task in SPECS:
            x = tiny["test"][task][0][:100]
            assert max_rel_err(execute_graph(back, task, x), tf_forward(result.graph, task, x)) <= 1e-5
    try:
        from edgemerge import _runtime  # noqa: F401
        from edgemerge.runtime import Runtime
    except ImportError as e:
        pytest.skip(f"C runtime module edgemerge._runtime not built ({e}); "
                    "run `pip install --no-build-isolation --no-deps .`")
    rt = Runtime(path)
    for task in SPECS:
        x = tiny["test"][task][0][:100]
        assert max_rel_err(rt.run(task, x), tf_forward(result.graph, task, x)) <= 1e-4


# ------------------------------------------------------------------------------------------------
# (e) distribution strategies
# ------------------------------------------------------------------------------------------------
def test_mirrored_strategy_on_cpu_improves_the_loss(tiny):
    graph = merge_tiny(tiny["models"], (2, 2), (8, 2))
    result = calibrate(graph, tiny["originals"], tiny["calib"], steps=40, eval_every=20, strategy="mirrored")
    rep = result.report
    assert rep["strategy"]["name"] == "MirroredStrategy" and rep["strategy"]["replicas"] >= 1
    for t in SPECS:
        assert np.isfinite(rep["tasks"][t]["final_loss"])
        assert rep["tasks"][t]["val_ce_after"] < rep["tasks"][t]["val_ce_before"]


_TWO_REPLICAS = textwrap.dedent("""
    import sys, numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, sys.argv[1])
    import tiny_pair as T
    from edgemerge.training.calibrate import calibrate
    from edgemerge import emm
    graph = emm.read_emm(sys.argv[2] + "/degraded.emm")
    calib = {t: sys.argv[2] + f"/{t}.npz" for t in T.SPECS}
    originals = {t: sys.argv[2] + f"/{t}.keras" for t in T.SPECS}
    two = calibrate(graph, originals, calib, steps=12, eval_every=4,
                      strategy=tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    one = calibrate(graph, originals, calib, steps=12, eval_every=4, strategy="default")
    assert two.report["strategy"]["replicas"] == 2, two.report["strategy"]
    worst = max(T.max_rel_err(a.array, b.array) for a, b in zip(two.graph.tensors, one.graph.tensors))
    print("worst", worst)
    assert worst <= 1e-5, worst
""")


@pytest.mark.slow
def test_two_replicas_take_the_same_steps_as_one(tiny):
    """Gradients summed over 2 CPU replicas (each half a batch) equal the one-replica step on the same batch."""
    emm.write_emm(merge_tiny(tiny["models"], (2, 2), (8, 2)), tiny["dir"] / "degraded.emm")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", _TWO_REPLICAS, str(HERE), str(tiny["dir"])], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


_WORKER = textwrap.dedent("""
    import json, os, sys
    index, port0, port1, here, d = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"localhost:{port0}", f"localhost:{port1}"]},
                                          "task": {"type": "worker", "index": index}})
    sys.path.insert(0, here)
    import tiny_pair as T
    from edgemerge.training.calibrate import calibrate
    from edgemerge import emm
    graph = emm.read_emm(d + "/degraded.emm")
    result = calibrate(graph, {t: d + f"/{t}.keras" for t in T.SPECS}, {t: d + f"/{t}.npz" for t in T.SPECS},
                         steps=20, eval_every=10, strategy="multi-worker")
    assert result.report["strategy"]["replicas"] == 2, result.report["strategy"]
    emm.write_emm(result.graph, d + f"/worker{index}.emm")
""")


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_workers_from_tf_config_train_the_same_model(tiny):
    """strategy="multi-worker": two local worker processes (TF_CONFIG) step in lock-step and write
    identical files."""
    emm.write_emm(merge_tiny(tiny["models"], (2, 2), (8, 2)), tiny["dir"] / "degraded.emm")
    ports = [str(_free_port()), str(_free_port())]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    workers = [subprocess.Popen([sys.executable, "-c", _WORKER, str(i), *ports, str(HERE), str(tiny["dir"])],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for i in range(2)]
    try:
        outputs = [w.communicate(timeout=300)[0] for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    for w, out in zip(workers, outputs):
        assert w.returncode == 0, out[-3000:]
    files = [(tiny["dir"] / f"worker{i}.emm").read_bytes() for i in range(2)]
    assert files[0] == files[1]


# ------------------------------------------------------------------------------------------------
# (f) calibration subsets
# ------------------------------------------------------------------------------------------------
def test_calib_fraction_selects_a_deterministic_nested_subset():
    n = 1000
    train, val = split_calibration(n, task="a", seed=3, calib_fraction=0.25)
    again = split_calibration(n, task="a", seed=3, calib_fraction=0.25)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])
    assert len(val) == 100 and len(train) == 225 and not set(train) & set(val)
    full_train, full_val = split_calibration(n, task="a", seed=3, calib_fraction=1.0)
    assert np.array_equal(full_val, val)                     # the held-out part does not depend on the fraction
    assert set(train) < set(full_train) and len(full_train) == 900
    tiny_train, _ = split_calibration(n, task="a", seed=3, calib_fraction=0.01)
    assert set(tiny_train) < set(train)                      # smaller fractions are subsets of larger ones
    assert not np.array_equal(split_calibration(n, task="a", seed=4)[1], val)
    assert not np.array_equal(split_calibration(n, task="b", seed=3)[1], val)
    no_val_train, no_val = split_calibration(n, task="a", seed=3, val_fraction=0.0)
    assert len(no_val) == 0 and len(no_val_train) == n


def test_calibrate_uses_the_fraction(tiny):
    graph = merge_tiny(tiny["models"], (2, 4), (4, 4))
    result = calibrate(graph, tiny["originals"], tiny["calib"], steps=2, calib_fraction=0.2, seed=5)
    for t in SPECS:
        r = result.report["tasks"][t]
        assert (r["n_train"], r["n_val"]) == (180, 100) and r["batch_size"] == 64
    assert result.report["calib_fraction"] == 0.2


# ------------------------------------------------------------------------------------------------
# with the real importer and merger
# ------------------------------------------------------------------------------------------------
def test_calibrating_a_real_merge_uses_the_importers_match_output(tiny):
    load_source_model, merge_models = _real_merge()
    models = {t: load_source_model(p) for t, p in tiny["originals"].items()}
    graph = merge_models(models, preset="light", layer_rc={"a:conv1": (2, 2), "a:fc1": (8, 2)}, kmeans_inits=1).graph
    result = calibrate(graph, tiny["originals"], tiny["calib"], steps=80, eval_every=20)
    for t in SPECS:
        r = result.report["tasks"][t]
        assert r["l1_layers"] == ["conv1", "fc1"], r
        assert max_rel_err(tf_forward(graph, t, tiny["test"][t][0][:50]),
                           cpu_reference_logits(graph, t, tiny["test"][t][0][:50])) <= 1e-5
    before = np.mean([result.report["tasks"][t]["accuracy_before"] for t in SPECS])
    after = np.mean([result.report["tasks"][t]["accuracy_after"] for t in SPECS])
    assert after >= before + 0.05, result.report["tasks"]


# ------------------------------------------------------------------------------------------------
# .tflite originals: calibration runs what the importer read
# ------------------------------------------------------------------------------------------------
def _to_tflite(model, path: Path) -> Path:
    import contextlib
    import io

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    with contextlib.redirect_stdout(io.StringIO()):
        path.write_bytes(converter.convert())
    return path


@pytest.fixture(scope="module")
def tiny_tflite(tiny):
    return {t: _to_tflite(tiny["models"][t], tiny["dir"] / f"{t}.tflite") for t in SPECS}


def test_tflite_originals_give_the_same_l1_targets_as_keras(tiny, tiny_tflite):
    from edgemerge.training.calibrate import _load_targets, _target_outputs

    load_source_model, merge_models = _real_merge()
    targets = {}
    for kind, files in (("keras", tiny["originals"]), ("tflite", tiny_tflite)):
        graph = merge_models({t: load_source_model(p) for t, p in files.items()}, preset="light",
                             kmeans_inits=1).graph
        targets[kind], skipped = _load_targets(graph, files, list(SPECS))
        assert not any(skipped.values()), skipped
    for t in SPECS:
        keras_t, tflite_t = targets["keras"][t], targets["tflite"][t]
        assert keras_t.layers == ["conv1", "fc1"]
        assert len(tflite_t.layers) == 2 and "conv1" in tflite_t.layers[0], tflite_t.layers   # tensor names
        x = tiny["test"][t][0][:64]
        with tf.device("/CPU:0"):
            from_keras, from_tflite = _target_outputs(keras_t, x), _target_outputs(tflite_t, x)
        assert len(from_keras) == len(from_tflite) == 3          # conv1, fc1, predictions
        for a, b in zip(from_keras, from_tflite):
            a, b = np.asarray(a).reshape(len(x), -1), np.asarray(b).reshape(len(x), -1)
            assert a.shape == b.shape
            assert max_rel_err(b, a) <= 1e-5
        # the predictions are the original file's outputs (softmax included), as the interpreter gives them
        interpreter = tf.lite.Interpreter(model_path=str(tiny_tflite[t]))
        interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], list(x.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        assert max_rel_err(from_tflite[-1], interpreter.get_tensor(interpreter.get_output_details()[0]["index"])) <= 1e-5


def test_merge_with_calib_from_tflite_sources(tiny, tiny_tflite, tmp_path):
    from edgemerge.workflows.pipeline import merge_files

    load_source_model, _ = _real_merge()
    # a deliberately coarse encoding of task a, so that calibration has something to repair
    conv, fc = [layer.name for layer in load_source_model(tiny_tflite["a"]).layers if layer.kind in ("conv", "dense")][:2]
    summary = merge_files(tiny_tflite, tmp_path / "m.emm", preset="light", kmeans_inits=1,
                          layer_rc={f"a:{conv}": (2, 2), f"a:{fc}": (8, 2)}, calib=tiny["calib"], steps=80)
    report = summary["calibration"]["tasks"]
    for t in SPECS:
        assert len(report[t]["l1_layers"]) == 2 and not report[t]["l1_skipped_nodes"], report[t]
        assert report[t]["held_out"]
        assert report[t]["accuracy_after"] >= report[t]["accuracy_before"], report[t]
    before = np.mean([report[t]["accuracy_before"] for t in SPECS])
    after = np.mean([report[t]["accuracy_after"] for t in SPECS])
    assert after >= before + 0.05, report
    assert emm.read_emm(tmp_path / "m.emm").metadata["calibrate.steps"] == 80
