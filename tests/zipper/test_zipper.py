"""Zippering (edgemerge.zipper, workflows.zipper_files, `edgemerge zipper`): two tiny MobileNet-style Keras
models of the same architecture, trained briefly on Fashion-MNIST for two labellings, fused block by block."""
from __future__ import annotations

import json
from pathlib import Path

import model_factory
import numpy as np
import pytest

from edgemerge import emm
from edgemerge.emm.constants import NONE, Op
from edgemerge.errors import EdgemergeError
from cli_runner import run_cli as cli

BLOCKS = ((1, 16), (2, 16), (1, 24))        # (depthwise stride, point-wise filters)
TASKS = {"a": 10, "b": 4}


def tiny_mobilenet(classes: int, name: str, blocks=BLOCKS, stem_stride: int = 2):
    import keras
    from keras import layers

    x = inputs = keras.Input((28, 28, 1))
    x = layers.Conv2D(8, 3, strides=stem_stride, padding="same", use_bias=False, name="conv1")(x)
    x = layers.BatchNormalization(name="conv1_bn")(x)
    x = layers.ReLU(6.0, name="conv1_relu")(x)
    for i, (stride, filters) in enumerate(blocks, start=1):
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"dw{i}")(x)
        x = layers.BatchNormalization(name=f"dw{i}_bn")(x)
        x = layers.ReLU(6.0, name=f"dw{i}_relu")(x)
        x = layers.Conv2D(filters, 1, use_bias=False, name=f"pw{i}")(x)
        x = layers.BatchNormalization(name=f"pw{i}_bn")(x)
        x = layers.ReLU(6.0, name=f"pw{i}_relu")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(classes, name="logits")(x)
    return keras.Model(inputs, layers.Activation("softmax", name="probs")(x), name=name)


def labels(task: str, y: np.ndarray) -> np.ndarray:
    return y if task == "a" else model_factory.SUPER_CLASS[y]


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> dict:
    """Two trained models from the same initial weights, and their calibration / validation files."""
    import keras

    directory = tmp_path_factory.mktemp("zipper_pair")
    x_train, y_train, x_test, y_test = model_factory.fashion_mnist()
    out = {"dir": directory, "models": {}, "calib": {}, "val": {}}
    for task, classes in TASKS.items():
        keras.utils.set_random_seed(0)
        model = tiny_mobilenet(classes, f"mobilenet_{task}")
        model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
        model.fit(x_train, labels(task, y_train), epochs=2, batch_size=64, verbose=0)
        path = directory / f"mobilenet_{task}.keras"
        model.save(path)
        out["models"][task] = path
        out["calib"][task] = directory / f"{task}_train.npz"
        np.savez(out["calib"][task], x=x_train, y=labels(task, y_train))
        out["val"][task] = directory / f"{task}_test.npz"
        np.savez(out["val"][task], x=x_test[:500], y=labels(task, y_test[:500]))
    return out


@pytest.fixture(scope="module")
def sources(pair):
    from edgemerge.importers import load_source_model

    return {task: load_source_model(path) for task, path in pair["models"].items()}


def pos(model, name):
    return model.position(name)


# ------------------------------------------------------------------------------------------------
# architecture check
# ------------------------------------------------------------------------------------------------
def test_blocks_found(sources):
    from edgemerge.zipper.layout import check_pair

    layout = check_pair(sources)
    a = sources["a"]
    assert layout.depth == 3
    assert [[a.layers[p].name for p in b.positions] for b in layout.blocks] == [
        ["conv1", "dw1", "pw1"], ["dw2", "pw2"], ["dw3", "pw3"]]
    assert layout.shared_positions("pointwise", 2) == [pos(a, "pw1"), pos(a, "pw2")]
    assert layout.shared_positions("block", 2) == [pos(a, n) for n in ("conv1", "dw1", "pw1", "dw2", "pw2")]


def test_architectures_differ_names_first_mismatch(tmp_path, sources):
    from edgemerge.importers import load_source_model
    from edgemerge.zipper.layout import check_pair

    other = tiny_mobilenet(4, "other", blocks=((1, 16), (1, 16), (1, 24)))     # dw2 stride 1, not 2
    other.save(tmp_path / "other.keras")
    with pytest.raises(EdgemergeError, match=r"differ at layer 4: a:dw2 \(depthwise 3x3 stride 2x2.*b:dw2 "
                                             r"\(depthwise 3x3 stride 1x1"):
        check_pair({"a": sources["a"], "b": load_source_model(tmp_path / "other.keras")})
    wider = tiny_mobilenet(4, "wider", blocks=((1, 16), (2, 32), (1, 24)))
    wider.save(tmp_path / "wider.keras")
    with pytest.raises(EdgemergeError, match=r"layer 5: a:pw2 .*weights 1x1x16x16.* vs b:pw2 .*weights 1x1x16x32"):
        check_pair({"a": sources["a"], "b": load_source_model(tmp_path / "wider.keras")})


def test_different_inputs_rejected(tmp_path, sources):
    import keras
    from keras import layers

    from edgemerge.importers import load_source_model
    from edgemerge.zipper.layout import check_pair

    x = inputs = keras.Input((32, 32, 1))
    x = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = layers.Conv2D(4, 1, name="pw")(x)
    x = layers.GlobalAveragePooling2D()(x)
    keras.Model(inputs, layers.Dense(4)(x)).save(tmp_path / "m32.keras")
    with pytest.raises(EdgemergeError, match="different inputs.*28x28x1.*32x32x1"):
        check_pair({"a": sources["a"], "b": load_source_model(tmp_path / "m32.keras")})


# ------------------------------------------------------------------------------------------------
# initialisation and sharing
# ------------------------------------------------------------------------------------------------
def test_average_init_is_eq1_and_pointwise_shares_exactly_pointwise(sources):
    from edgemerge.zipper.layout import check_pair
    from edgemerge.zipper.rounds import ZipState, share_round

    layout = check_pair(sources)
    a, b = sources["a"], sources["b"]
    state = ZipState.from_models(sources)
    for k in (1, 2, 3):
        rg, _ = share_round(sources, layout, state, k, "pointwise")
        g = rg.graph
        shared_names = {f"pw{j}" for j in range(1, k + 1)}
        for p, layer in enumerate(a.layers):
            if layer.weights is None:
                continue
            na, nb = g.nodes[rg.node_of[("a", p)]], g.nodes[rg.node_of[("b", p)]]
            assert rg.node_of[("a", p)] != rg.node_of[("b", p)]           # every task keeps its own nodes
            if layer.name in shared_names:
                assert (na.weight, na.bias) == (nb.weight, nb.bias), layer.name
                if k == 1:          # Eq. 1 on the originals (folded BatchNorm), exactly
                    want = ((a.layers[p].weights.astype(np.float64) + b.layers[p].weights) / 2).astype(np.float32)
                    np.testing.assert_array_equal(g.tensors[na.weight].array, want)
                    want_b = ((a.layers[p].bias.astype(np.float64) + b.layers[p].bias) / 2).astype(np.float32)
                    np.testing.assert_array_equal(g.tensors[na.bias].array, want_b)
            else:
                assert na.weight != nb.weight and na.bias != nb.bias, layer.name
                np.testing.assert_array_equal(g.tensors[na.weight].array, a.layers[p].weights)
                np.testing.assert_array_equal(g.tensors[nb.weight].array, b.layers[p].weights)
        assert len(g.nodes) == len(a.layers) + len(b.layers)
        assert len(g.inputs) == 1 and all(t.input == 0 for t in g.tasks)
        # L1 terms on exactly the shared layers, against each task's own original layer
        assert [name for _, name in rg.l1_targets["a"]] == [f"pw{j}_relu" for j in range(1, k + 1)]


def test_pointwise_graph_runs_like_tf_form(sources, pair):
    from edgemerge.runtime import Runtime
    from edgemerge.training.calibrate import tf_forward
    from edgemerge.zipper.layout import check_pair
    from edgemerge.zipper.rounds import ZipState, share_round

    layout = check_pair(sources)
    state = ZipState.from_models(sources)
    share_round(sources, layout, state, 1, "pointwise")
    rg, _ = share_round(sources, layout, state, 2, "pointwise")
    x = np.load(pair["val"]["a"])["x"][:16]
    runtime = Runtime(emm.to_bytes(rg.graph))
    outputs, runs = runtime.run_all({"a": x})
    for task in TASKS:
        np.testing.assert_allclose(outputs[task], tf_forward(rg.graph, task, x), rtol=1e-4, atol=1e-4)


def two_rounds(sources, share):
    """The pair's layout and state after rounds 1 and 2 of `share`, the k=0 round and round 2's graph."""
    from edgemerge.zipper.layout import check_pair
    from edgemerge.zipper.rounds import ZipState, build_round, share_round

    layout = check_pair(sources)
    state = ZipState.from_models(sources)
    base = build_round(sources, layout, state, 0, share)
    share_round(sources, layout, state, 1, share)
    rg, _ = share_round(sources, layout, state, 2, share)
    return layout, state, base, rg


def test_block_trunk_runs_once_per_sample(sources, pair):
    from edgemerge.runtime import Runtime
    from edgemerge.training.calibrate import tf_forward
    from edgemerge.zipper.rounds import build_round

    layout, state, base, rg = two_rounds(sources, "block")
    g = rg.graph
    a = sources["a"]
    trunk = [a.layers[p].name for p in range(pos(a, "pw2") + 1)]
    assert [g.nodes[i].name for i in rg.trunk_nodes] == [f"shared/{n}" for n in trunk]
    assert set(rg.trunk_nodes) <= set(g.nodes_for("a")) & set(g.nodes_for("b"))
    assert len(g.nodes) == len(base.graph.nodes) - len(trunk)
    # the trunk is one set of nodes; every node of the file runs once per sample under em_run_all
    x = np.load(pair["val"]["a"])["x"][:12]
    outputs, runs = Runtime(emm.to_bytes(g)).run_all({"a": x})
    assert runs == [len(x)] * len(g.nodes)
    base_outputs, base_runs = Runtime(emm.to_bytes(base.graph)).run_all({"a": x})
    assert sum(base_runs) - sum(runs) == len(trunk) * len(x)         # the unmerged pair ran the trunk twice
    for task in TASKS:
        np.testing.assert_allclose(outputs[task], tf_forward(g, task, x), rtol=1e-4, atol=1e-4)
    # shared trunk nodes get L1 terms for both tasks, against each task's own layer
    assert [n for _, n in rg.l1_targets["b"]] == [sources["b"].layers[p].match_output
                                                  for p in range(pos(a, "pw2") + 1)]
    assert [i for i, _ in rg.l1_targets["a"]] == [i for i, _ in rg.l1_targets["b"]]
    # l1_scope="all": the same trunk terms, then every per-task layer with an original counterpart
    every = build_round(sources, layout, state, 2, "block", l1_scope="all")
    for task in TASKS:
        model = sources[task]
        assert every.l1_targets[task][:len(rg.l1_targets[task])] == rg.l1_targets[task]
        branch = every.l1_targets[task][len(rg.l1_targets[task]):]
        assert [n for _, n in branch] == [model.layers[p].match_output for p in range(pos(a, "pw2") + 1,
                                          len(model.layers)) if model.layers[p].match_output]
        assert branch and all(i not in rg.trunk_nodes for i, _ in branch)
    with pytest.raises(EdgemergeError, match="unknown L1 scope"):
        build_round(sources, layout, state, 2, "block", l1_scope="everything")


def test_pointwise_shared_layers_run_grouped(sources, pair):
    """Issue 6: layers that share weights across tasks run together: em_run_all runs each shared point-wise
    conv of both tasks as one step (a fused product over both feature maps) with the bits of running each
    task alone; the profile shows one entry per group."""
    from edgemerge import _runtime
    from edgemerge.runtime import Runtime

    layout, state, base, rg = two_rounds(sources, "pointwise")
    g = rg.graph
    x = np.load(pair["val"]["a"])["x"][:10]
    assert all(n["run_group"] is None for n in Runtime(emm.to_bytes(base.graph)).nodes())
    for kernels in ("auto", "ref"):
        model = _runtime.Model(emm.to_bytes(g), kernels)
        nodes = model.nodes()
        groups: dict[int, list[int]] = {}
        for i, n in enumerate(nodes):
            if n["run_group"] is not None:
                groups.setdefault(n["run_group"], []).append(i)
        # exactly the shared layers, one node of each task per group, same weight tensor
        by_weight: dict[int, list[int]] = {}
        for i, node in enumerate(g.nodes):
            if node.weight != NONE:
                by_weight.setdefault(node.weight, []).append(i)
        shared = sorted(v for v in by_weight.values() if len(v) > 1)
        assert len(shared) == 2 and sorted(groups.values()) == shared
        for members in shared:
            assert {nodes[i]["name"].split("/")[0] for i in members} == set(TASKS)
            assert all(nodes[i]["run_group_fused"] == (kernels == "auto") for i in members)
        # one step: all members ran, the step's time is on its lead, none on the others
        profile = model.profile_all([x], 0, len(x))
        assert all(p["runs"] == len(x) for p in profile)
        for members in groups.values():
            assert profile[members[0]]["total_ns"] > 0 and all(profile[i]["total_ns"] == 0 for i in members[1:])
        # grouped em_run_all == each task run alone (em_run_task runs members one by one), bit for bit
        outputs, runs = model.run_all([x])
        assert list(runs) == [len(x)] * len(g.nodes)
        for t, task in enumerate(TASKS):
            np.testing.assert_array_equal(outputs[t], model.run(t, x))


def test_rounds_continue_from_previous_weights(sources):
    from edgemerge.zipper.layout import check_pair
    from edgemerge.zipper.rounds import ZipState, read_back, share_round

    layout = check_pair(sources)
    a = sources["a"]
    state = ZipState.from_models(sources)
    r1, _ = share_round(sources, layout, state, 1, "pointwise")
    # stand-in for calibration: every float tensor moves
    for t in r1.graph.tensors:
        t.array = t.array + np.float32(0.25)
    read_back(r1, state)
    p1, p2, d2 = pos(a, "pw1"), pos(a, "pw2"), pos(a, "dw2")
    trained = {t: (r1.graph.tensors[r1.weight_ids[(t, p2)]].array.astype(np.float64)) for t in TASKS}
    r2, _ = share_round(sources, layout, state, 2, "pointwise")
    g2 = r2.graph
    # pw1 carries its calibrated value, pw2 starts at the mean of the calibrated per-task pw2, dw2 as trained
    np.testing.assert_array_equal(g2.tensors[r2.weight_ids[("a", p1)]].array,
                                  r1.graph.tensors[r1.weight_ids[("a", p1)]].array)
    np.testing.assert_array_equal(g2.tensors[r2.weight_ids[("a", p2)]].array,
                                  ((trained["a"] + trained["b"]) / 2).astype(np.float32))
    for t in TASKS:
        np.testing.assert_array_equal(g2.tensors[r2.weight_ids[(t, d2)]].array,
                                      sources[t].layers[d2].weights + np.float32(0.25))


def test_bn_stats_averages_statistics(sources, pair):
    import keras

    from edgemerge.zipper.fuse import average_layer, load_batch_norms
    from edgemerge.zipper.rounds import ZipState

    state = ZipState.from_models(sources)
    state.batch_norms = load_batch_norms(sources)
    a = sources["a"]
    p = pos(a, "pw2")
    w, b, bn = average_layer(a, p, state, list(TASKS), "stats")
    ks = {t: keras.models.load_model(pair["models"][t], compile=False) for t in TASKS}
    kernels = [ks[t].get_layer("pw2").kernel.numpy().astype(np.float64) for t in TASKS]
    params = [[v.numpy().astype(np.float64) for v in (ks[t].get_layer("pw2_bn").gamma, ks[t].get_layer("pw2_bn").beta,
               ks[t].get_layer("pw2_bn").moving_mean, ks[t].get_layer("pw2_bn").moving_variance)] for t in TASKS]
    gamma, beta, mean, var = (np.mean([q[i] for q in params], axis=0) for i in range(4))
    scale = gamma / np.sqrt(var + 1e-3)
    np.testing.assert_allclose(w, np.mean(kernels, axis=0) * scale, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b, beta - mean * scale, rtol=1e-5, atol=1e-5)
    fold, _, _ = average_layer(a, p, state, list(TASKS), "fold")
    assert not np.allclose(fold, w)


def test_hungarian_recovers_a_permutation_and_keeps_function(sources, pair):
    import dataclasses

    from edgemerge.training.calibrate import tf_forward
    from edgemerge.zipper.fuse import hungarian_align
    from edgemerge.zipper.layout import check_pair
    from edgemerge.zipper.rounds import ZipState, build_round

    a = sources["a"]
    p1, d2, p2 = pos(a, "pw1"), pos(a, "dw2"), pos(a, "pw2")
    order = np.random.default_rng(0).permutation(a.layers[p1].out_shape[2])
    layers = [dataclasses.replace(layer) for layer in a.layers]
    layers[p1].weights, layers[p1].bias = a.layers[p1].weights[..., order], a.layers[p1].bias[order]
    layers[d2].weights, layers[d2].bias = a.layers[d2].weights[:, :, order, :], a.layers[d2].bias[order]
    layers[p2].weights = a.layers[p2].weights[:, :, order, :]
    shuffled = dataclasses.replace(a, layers=layers)
    models = {"a": a, "b": shuffled}
    layout = check_pair(models)
    state = ZipState.from_models(models)
    before = build_round(models, layout, state, 0, "pointwise").graph
    moved = hungarian_align(models, state, [p1])
    assert moved[p1]["b"] > 0.5
    for p in (p1, d2, p2):                          # b's layers now equal a's: the permutation is undone
        np.testing.assert_array_equal(state.weights["b"][p], a.layers[p].weights)
    after = build_round(models, layout, state, 0, "pointwise").graph
    x = np.load(pair["val"]["a"])["x"][:16]
    np.testing.assert_allclose(tf_forward(after, "b", x), tf_forward(before, "b", x), rtol=1e-4, atol=1e-4)


def test_encode_shares_one_codebook_and_index_map(sources, pair):
    from edgemerge.runtime import Runtime
    from edgemerge.training.calibrate import tf_forward
    from edgemerge.zipper.layout import check_pair
    from edgemerge.zipper.rounds import ZipState, read_back, share_round

    layout = check_pair(sources)
    state = ZipState.from_models(sources)
    r1, info = share_round(sources, layout, state, 1, "pointwise", encode="accu")
    read_back(r1, state)
    r2, _ = share_round(sources, layout, state, 2, "pointwise", encode="accu")
    g = r2.graph
    a = sources["a"]
    for name in ("pw1", "pw2"):
        na, nb = (g.nodes[r2.node_of[(t, pos(a, name))]] for t in TASKS)
        assert na.op == nb.op == Op.LUT_CONV2D
        assert (na.weight, na.index, na.bias) == (nb.weight, nb.index, nb.bias) and na.index != NONE
    assert g.nodes[r2.node_of[("a", pos(a, "pw3"))]].op == Op.CONV2D
    assert "pw1" in info["encoded"]
    x = np.load(pair["val"]["a"])["x"][:8]
    outputs, _ = Runtime(emm.to_bytes(g)).run_all({"a": x})
    for task in TASKS:
        np.testing.assert_allclose(outputs[task], tf_forward(g, task, x), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------------
# the whole run, report, pick, CLI
# ------------------------------------------------------------------------------------------------
REPORT_KEYS = {"format", "version", "tool_version", "tasks", "blocks", "block_layers", "share", "bn", "align",
               "encode", "seed", "steps_per_round", "calibration", "originals", "original_bytes", "latency", "rounds", "seconds"}
ROUND_KEYS = {"k", "file", "sha256", "file_bytes", "compression", "params", "context_bytes", "nodes",
              "trunk_nodes", "shared_layers", "accuracy", "drop", "latency_ms", "speedup", "speedup_vs_tflite",
              "calibration"}


def check_report(report: dict, folder: Path, share: str) -> None:
    assert REPORT_KEYS <= set(report)
    assert report["format"] == "edgemerge.zipper.report" and report["version"] == 1
    assert report["share"] == share and report["tasks"] == ["a", "b"] and report["blocks"] == 3
    assert [r["k"] for r in report["rounds"]] == [0, 1, 2, 3]
    for r in report["rounds"]:
        assert ROUND_KEYS <= set(r), ROUND_KEYS - set(r)
        data = (folder / r["file"]).read_bytes()
        assert len(data) == r["file_bytes"]
        assert r["compression"] == pytest.approx(report["original_bytes"] / r["file_bytes"])
        assert set(r["accuracy"]) == set(r["drop"]) == {"a", "b"}
        for t in ("a", "b"):
            assert r["drop"][t] == pytest.approx(report["originals"][t]["accuracy"] - r["accuracy"][t])
        assert r["latency_ms"] > 0 and r["context_bytes"] > 0
    assert report["rounds"][0]["calibration"] is None
    assert all(r["calibration"]["steps"] == report["steps_per_round"] for r in report["rounds"][1:])
    # k=0 is the unmerged pair: the originals' accuracy
    assert max(abs(d) for d in report["rounds"][0]["drop"].values()) < 0.01
    sizes = [r["file_bytes"] for r in report["rounds"]]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < sizes[0]
    assert (folder / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(folder.glob(".*.tmp"))


def test_cli_exact_forms(tmp_path, pair):
    zipped = tmp_path / "zipped"
    m, c, v = pair["models"], pair["calib"], pair["val"]
    result = cli("zipper", f"a={m['a']}", f"b={m['b']}", "--calib", f"a={c['a']}", "--calib", f"b={c['b']}",
                 "--val", f"a={v['a']}", "--val", f"b={v['b']}", "-o", f"{zipped}/", "--share", "block",
                 "--steps-per-round", "20")
    assert result.returncode == 0, result.stderr
    assert "speedup" in result.stdout and "zipper: round 3/3" in result.stderr
    report = json.loads((zipped / "report.json").read_text())
    check_report(report, zipped, "block")
    rounds = report["rounds"]
    assert [r["trunk_nodes"] for r in rounds] == [0, 3, 5, 7]
    assert rounds[3]["nodes"] < rounds[0]["nodes"]

    # pick: the deepest k whose every drop fits
    budget = max(max(r["drop"].values()) for r in rounds[1:]) + 0.001
    merged = tmp_path / "merged.emm"
    result = cli("zipper", "pick", f"{zipped}/", "--max-drop", budget, "-o", merged)
    assert result.returncode == 0, result.stderr
    assert merged.read_bytes() == (zipped / "k03.emm").read_bytes()
    assert "picked k=3" in result.stdout
    # and when none fits: a clear error, nothing written
    result = cli("zipper", "pick", zipped, "--max-drop", "0", "-o", tmp_path / "none.emm")
    if min(max(r["drop"].values()) for r in rounds[1:]) > 0:
        assert result.returncode == 1 and result.stderr.startswith("error: no zippered model")
        assert not (tmp_path / "none.emm").exists()


def test_cli_calibration_options_reach_every_round(tmp_path, pair):
    zipped = tmp_path / "zipped"
    m, c, v = pair["models"], pair["calib"], pair["val"]
    result = cli("zipper", f"a={m['a']}", f"b={m['b']}", "--calib", f"a={c['a']}", "--calib", f"b={c['b']}",
                 "--val", f"a={v['a']}", "--val", f"b={v['b']}", "-o", zipped, "--share", "block",
                 "--steps-per-round", "2", "--l1-weight", "0.25", "--learning-rate", "0.003", "--l1-scope", "all",
                 "--no-tflite")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("lr 0.003, l1 weight 0.25") == 3        # one calibration per round
    report = json.loads((zipped / "report.json").read_text())
    assert report["calibration"] == {"l1_scope": "all", "l1_weight": 0.25, "learning_rate": 0.003}
    # --l1-scope all: every task's layers that have an original counterpart carry an L1 term, the
    # per-task ones too; round 1 of block sharing has more per-task layers than shared ones
    for r in report["rounds"][1:]:
        n_l1 = {t: len(layers) for t, layers in r["calibration"]["l1_layers"].items()}
        assert all(n > r["trunk_nodes"] for n in n_l1.values()), (n_l1, r["trunk_nodes"])
    bad = cli("zipper", f"a={m['a']}", f"b={m['b']}", "--calib", f"a={c['a']}", "--calib", f"b={c['b']}",
              "--val", f"a={v['a']}", "--val", f"b={v['b']}", "-o", tmp_path / "bad", "--l1-weight", "-1")
    assert bad.returncode == 2 and "--l1-weight" in bad.stderr and not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_run_pointwise_and_report(tmp_path, pair):
    from edgemerge.workflows.zipper_files import zipper_files
    from edgemerge.zipper.report import format_table

    result = zipper_files(pair["models"], pair["calib"], pair["val"], tmp_path / "z", share="pointwise",
                          steps_per_round=10, tflite=False, latency_samples=20)
    report = result.report
    check_report(report, tmp_path / "z", "pointwise")
    assert json.loads((tmp_path / "z" / "report.json").read_text()) == report
    assert [r["shared_layers"] for r in report["rounds"]] == [[], ["pw1"], ["pw1", "pw2"], ["pw1", "pw2", "pw3"]]
    # the pointwise share does not remove nodes: same compute
    assert len({r["nodes"] for r in report["rounds"]}) == 1
    assert report["rounds"][1]["calibration"]["l1_layers"] == {"a": ["pw1_relu"], "b": ["pw1_relu"]}
    table = format_table(report)
    assert table.splitlines()[0].split()[:3] == ["k", "acc", "a"] and len(table.splitlines()) >= 5


def make_report(folder: Path, drops: list[dict]) -> None:
    rounds = []
    for k, drop in enumerate(drops):
        data = f"model {k}".encode()
        (folder / f"k{k:02d}.emm").write_bytes(data)
        import hashlib
        rounds.append({"k": k, "file": f"k{k:02d}.emm", "sha256": hashlib.sha256(data).hexdigest(),
                       "file_bytes": len(data), "compression": 1.0, "drop": drop})
    (folder / "report.json").write_text(json.dumps({"format": "edgemerge.zipper.report", "version": 1,
                                                    "rounds": rounds}))


def test_pick_deepest_within_budget(tmp_path):
    from edgemerge.zipper.report import pick

    make_report(tmp_path, [{"a": 0, "b": 0}, {"a": 0.001, "b": 0.0}, {"a": 0.03, "b": 0.0},
                           {"a": 0.015, "b": 0.019}, {"a": 0.05, "b": 0.01}])
    assert pick(tmp_path, 0.02, tmp_path / "out.emm")["k"] == 3          # deepest fitting, not the first
    assert (tmp_path / "out.emm").read_bytes() == b"model 3"
    assert pick(tmp_path, 0.01, tmp_path / "out.emm")["k"] == 1
    assert (tmp_path / "out.emm").read_bytes() == b"model 1"
    with pytest.raises(EdgemergeError, match=r"no zippered model .* within 0.05 points; the smallest worst-task "
                                             r"drop is 0.10 points \(k=1\)"):
        pick(tmp_path, 0.0005, tmp_path / "none.emm")
    assert not (tmp_path / "none.emm").exists()
    (tmp_path / "k03.emm").write_bytes(b"tampered")
    with pytest.raises(EdgemergeError, match="differ from what report.json recorded"):
        pick(tmp_path, 0.02, tmp_path / "out2.emm")
    with pytest.raises(EdgemergeError, match="no report.json"):
        pick(tmp_path.parent, 0.02, tmp_path / "x.emm")


def test_cli_bad_inputs(tmp_path, pair):
    other = tiny_mobilenet(4, "other", blocks=((1, 16), (1, 16), (1, 24)))
    other.save(tmp_path / "other.keras")
    c, v = pair["calib"], pair["val"]
    result = cli("zipper", f"a={pair['models']['a']}", f"b={tmp_path / 'other.keras'}", "--calib", f"a={c['a']}",
                 "--calib", f"b={c['b']}", "--val", f"a={v['a']}", "--val", f"b={v['b']}", "-o", tmp_path / "z")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: architectures differ at layer 4: a:dw2")
    result = cli("zipper", f"a={pair['models']['a']}", f"b={pair['models']['b']}", "--calib", f"a={c['a']}",
                 "--calib", f"b={c['b']}", "--val", f"a={v['a']}", "-o", tmp_path / "z")
    assert result.returncode == 1 and "--val: no data for task(s) b" in result.stderr
    result = cli("zipper", "pick", tmp_path / "missing", "--max-drop", "0.02", "-o", tmp_path / "m.emm")
    assert result.returncode == 1 and "error:" in result.stderr and "no such folder" in result.stderr


@pytest.mark.slow
def test_run_with_encode_and_hungarian(tmp_path, pair):
    from edgemerge.runtime import Runtime
    from edgemerge.workflows.zipper_files import zipper_files

    result = zipper_files(pair["models"], pair["calib"], pair["val"], tmp_path / "z", share="pointwise",
                          steps_per_round=5, encode="accu", align="hungarian", bn="fold", tflite=False,
                          latency_samples=10, plot=False)
    report = result.report
    assert report["encode"] == "accu" and report["align"] == "hungarian" and report["bn"] == "fold"
    assert set(report["rounds"][1]["encoded"]) == {"pw1"} and "aligned" in report["rounds"][1]
    graph = emm.read_emm(tmp_path / "z" / "k03.emm")
    luts = [n for n in graph.nodes if n.op == Op.LUT_CONV2D]
    assert len(luts) == 6 and len({(n.weight, n.index) for n in luts}) == 3      # one codebook + index per pw
    assert Runtime(tmp_path / "z" / "k03.emm").task_names == ["a", "b"]
    assert not (tmp_path / "z" / "tradeoff.png").exists()
    assert report["rounds"][3]["file_bytes"] < report["rounds"][0]["file_bytes"]
