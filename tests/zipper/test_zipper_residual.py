"""Zippering MobileNetV2-style graphs (inverted-residual blocks, issue 15 part 5): blocks found in the DAG,
--share pointwise / block on graphs, the C runtime against the TF form, the trunk run once, Hungarian
matching on a block's internal channels, a whole run with report.json and pick."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
from residual_pair import TASK_CLASSES, mnv2_like, trained_pair

from edgemerge import emm
from edgemerge.errors import EdgemergeError

TASKS = tuple(TASK_CLASSES)


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> dict:
    return trained_pair(tmp_path_factory.mktemp("residual_pair"), epochs=2, n_train=1500, n_val=200)


def random_pair() -> dict:
    return {t: mnv2_like(seed, c, name=f"mnv2_{t}") for seed, (t, c) in enumerate(TASK_CLASSES.items())}


def names(model, positions):
    return [model.layers[p].name for p in positions]


def test_inverted_residual_blocks_found():
    from edgemerge.zipper.layout import check_pair

    models = random_pair()
    layout = check_pair(models)
    a = models["a"]
    assert layout.depth == 4
    assert [names(a, b.positions) for b in layout.blocks] == [
        ["stem", "b1_dw", "b1_project", "b1_add"],
        ["b2_expand", "b2_pad", "b2_dw", "b2_project"],
        ["b3_expand", "b3_dw", "b3_project", "b3_add"],
        ["b4_expand", "b4_dw", "b4_project", "b4_add"]]
    assert [b.expand is None for b in layout.blocks] == [True, False, False, False]
    assert [b.add is None for b in layout.blocks] == [False, True, False, False]
    # pointwise: the expand and project convs of blocks 1..k, nothing else
    assert names(a, layout.shared_positions("pointwise", 3)) == [
        "b1_project", "b2_expand", "b2_project", "b3_expand", "b3_project"]
    assert names(a, layout.shared_positions("block", 2)) == names(a, range(8))


def test_residual_wiring_must_match():
    from edgemerge.zipper.layout import check_pair

    models = random_pair()
    b = models["b"]
    add = b.position("b4_add")
    # b's block 4 adds a skip from block 2's output instead of block 3's (same shapes, same layers): another graph
    layers = list(b.layers)
    layers[add] = dataclasses.replace(layers[add], inputs=("b4_project", "b2_project"))
    other = dataclasses.replace(b, layers=layers)
    other.check_topology()
    with pytest.raises(EdgemergeError, match=r"architectures differ at layer 16: a:b4_add reads layer 15 "
                                             r"\(b4_project\), layer 12 \(b3_add\), b:b4_add reads layer 15 "
                                             r"\(b4_project\), layer 8 \(b2_project\)"):
        check_pair({"a": models["a"], "b": other})


def rounds(models, share, k_max=None):
    """Yields (k, round graph) for k = 0..L, each round continuing from the previous one."""
    from edgemerge.zipper.fuse import ZipState
    from edgemerge.zipper.layout import check_pair
    from edgemerge.zipper.rounds import build_round, share_round

    layout = check_pair(models)
    state = ZipState.from_models(models)
    yield 0, build_round(models, layout, state, 0, share)
    for k in range(1, (k_max or layout.depth) + 1):
        yield k, share_round(models, layout, state, k, share)[0]


@pytest.mark.parametrize("share", ["block", "pointwise"])
def test_every_round_runs_in_c_like_tf_form(share):
    """k = 0..L: the file loads and runs in the C runtime, logits = the TF form (what calibration trains);
    k = 0 is the two originals exactly; block sharing runs the trunk once per sample."""
    from edgemerge.executors.numpy_exec import forward_numpy
    from edgemerge.runtime import Runtime
    from edgemerge.training.calibrate import tf_forward

    models = random_pair()
    x = np.random.default_rng(3).normal(size=(6, 16, 16, 3)).astype(np.float32)
    base_runs = None
    for k, rg in rounds(models, share):
        g = rg.graph
        outputs, runs = Runtime(emm.to_bytes(g)).run_all({"a": x})
        for task in TASKS:
            np.testing.assert_allclose(outputs[task], tf_forward(g, task, x), rtol=1e-4, atol=1e-4)
            if k == 0:
                np.testing.assert_allclose(outputs[task], forward_numpy(models[task], x), rtol=1e-4, atol=1e-4)
        assert runs == [len(x)] * len(g.nodes)
        if k == 0:
            base_runs = sum(runs)
        elif share == "block":
            trunk = rg.shared_positions[-1] + 1
            assert len(rg.trunk_nodes) == trunk
            assert base_runs - sum(runs) == trunk * len(x)        # the unmerged pair ran the trunk twice
            assert set(rg.trunk_nodes) <= set(g.nodes_for("a")) & set(g.nodes_for("b"))
        else:
            assert sum(runs) == base_runs and not rg.trunk_nodes   # same compute, shared tensors


def test_pointwise_shares_exactly_expand_and_project_convs():
    models = random_pair()
    a = models["a"]
    *_, (k, rg) = rounds(models, "pointwise")
    g = rg.graph
    shared = set(rg.shared_positions)
    assert {a.layers[p].name for p in shared} == {f"b{i}_{w}" for i in (1, 2, 3, 4) for w in ("expand", "project")} - {"b1_expand"}
    for p, layer in enumerate(a.layers):
        if layer.weights is None:
            continue
        na, nb = (g.nodes[rg.node_of[(t, p)]] for t in TASKS)
        if p in shared:
            assert (na.weight, na.bias) == (nb.weight, nb.bias)
            assert tuple(layer.kernel) == (1, 1) and layer.kind == "conv"
        else:
            assert na.weight != nb.weight           # stem, depthwise convs, tail: per task
    # the residual Adds stay per task: two ADD nodes each
    assert sum(1 for n in g.nodes if n.name.endswith("_add")) == 2 * 3


def test_block_shares_residual_add_and_trunk_feeds_skip():
    """--share block at k = 3: the trunk ends with block 3's Add, and block 4's per-task Add reads the
    trunk's output (the skip connection) besides its own project conv."""
    models = random_pair()
    a = models["a"]
    for k, rg in rounds(models, "block", k_max=3):
        pass
    g = rg.graph
    assert [g.nodes[i].name for i in rg.trunk_nodes][-1] == "shared/b3_add"
    trunk_out = len(g.inputs) + rg.trunk_nodes[-1]
    for task in TASKS:
        add4 = g.nodes[rg.node_of[(task, a.position("b4_add"))]]
        assert trunk_out in add4.inputs and g.nodes[rg.node_of[(task, a.position("b4_expand"))]].input == trunk_out


def test_hungarian_matches_internal_channels_only_and_keeps_function():
    """A permutation of block 3's expanded channels (internal to the block) is found and undone; the
    project conv (its channels feed the Add and the skip) is not permuted; every model's function is kept."""
    from edgemerge.training.calibrate import tf_forward
    from edgemerge.zipper.fuse import ZipState, _carry_plan, hungarian_align
    from edgemerge.zipper.layout import check_pair
    from edgemerge.zipper.rounds import build_round

    a = mnv2_like(0, 4)
    e, d, p = (a.position(n) for n in ("b3_expand", "b3_dw", "b3_project"))
    assert _carry_plan(a, p) is None and _carry_plan(a, e) == [d, p]
    assert _carry_plan(a, a.position("stem")) is None           # stem feeds block 1's Add
    assert _carry_plan(a, a.position("b2_expand")) == [a.position(n) for n in ("b2_pad", "b2_dw", "b2_project")]
    order = np.random.default_rng(0).permutation(a.layers[e].out_shape[2])
    layers = [dataclasses.replace(layer) for layer in a.layers]
    layers[e].weights, layers[e].bias = a.layers[e].weights[..., order], a.layers[e].bias[order]
    layers[d].weights, layers[d].bias = a.layers[d].weights[:, :, order, :], a.layers[d].bias[order]
    layers[p].weights = a.layers[p].weights[:, :, order, :]
    models = {"a": a, "b": dataclasses.replace(a, layers=layers)}
    layout = check_pair(models)
    state = ZipState.from_models(models)
    before = build_round(models, layout, state, 0, "pointwise").graph
    moved = hungarian_align(models, state, layout.blocks[2].positions)
    assert set(moved) == {e} and moved[e]["b"] > 0.5
    for q in (e, d, p):
        np.testing.assert_array_equal(state.weights["b"][q], a.layers[q].weights)
    after = build_round(models, layout, state, 0, "pointwise").graph
    x = np.random.default_rng(1).normal(size=(8, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(tf_forward(after, "b", x), tf_forward(before, "b", x), rtol=1e-4, atol=1e-4)


def test_whole_run_on_trained_pair_report_and_pick(tmp_path, pair):
    """zipper_files on the functional .keras files (SourceModels given: the file importer reads chains only
    today), --share block --align hungarian, a few calibration steps a round; report.json and pick as for
    chains."""
    from edgemerge.runtime import Runtime
    from edgemerge.workflows.zipper_files import zipper_files

    out = tmp_path / "z"
    result = zipper_files(pair["files"], pair["calib"], pair["val"], out, share="block", steps_per_round=3,
                          align="hungarian", tflite=False, latency_samples=10, plot=False, imported=pair["models"])
    report = json.loads((out / "report.json").read_text())
    assert report == result.report and report["blocks"] == 4
    assert report["block_layers"][0] == ["stem", "b1_dw", "b1_project", "b1_add"]
    rounds_ = report["rounds"]
    assert [r["k"] for r in rounds_] == [0, 1, 2, 3, 4]
    assert [r["trunk_nodes"] for r in rounds_] == [0, 4, 8, 12, 16]
    assert max(abs(d) for d in rounds_[0]["drop"].values()) < 0.01        # k = 0: the originals
    sizes = [r["file_bytes"] for r in rounds_]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < sizes[0]
    assert all(r["latency_ms"] > 0 for r in rounds_)
    assert "b3_expand" in rounds_[3]["aligned"] and "b3_project" not in rounds_[3]["aligned"]
    for r in rounds_:
        Runtime(out / r["file"])                                           # every file loads
    budget = max(max(r["drop"].values()) for r in rounds_[1:]) + 0.001
    merged = tmp_path / "merged.emm"
    done = subprocess.run([sys.executable, "-m", "edgemerge.cli", "zipper", "pick", str(out), "--max-drop",
                           str(budget), "-o", str(merged)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert merged.read_bytes() == (out / "k04.emm").read_bytes() and "picked k=4" in done.stdout


def _importer_reads_functional() -> bool:
    """Whether importers.load_source_model reads a residual (functional) .keras file."""
    import tempfile
    from pathlib import Path

    from dag_models import to_keras

    from edgemerge.errors import ModelFormatError
    from edgemerge.importers import load_source_model

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "residual.keras"
        to_keras(mnv2_like(0, 4)).save(path)
        try:
            return load_source_model(path).layers is not None
        except ModelFormatError:
            return False


@pytest.mark.skipif(not _importer_reads_functional(),
                    reason="importers.keras_import reads single-chain Keras models only (a residual Add is refused: "
                           "'joins 2 inputs; only single-chain models are supported'); the Keras functional importer "
                           "(issue 15 part 3) is being added on another branch")
def test_cli_zipper_on_functional_files(tmp_path, pair):
    zipped = tmp_path / "zipped"
    f, c, v = pair["files"], pair["calib"], pair["val"]
    done = subprocess.run(
        [sys.executable, "-m", "edgemerge.cli", "zipper", f"a={f['a']}", f"b={f['b']}", "--calib", f"a={c['a']}",
         "--calib", f"b={c['b']}", "--val", f"a={v['a']}", "--val", f"b={v['b']}", "-o", str(zipped),
         "--share", "block", "--steps-per-round", "2", "--no-tflite"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads((zipped / "report.json").read_text())
    # the importer folds the stride-2 block's ZeroPadding2D into its depthwise (the hand-built pair keeps an
    # explicit PAD layer there), so that block shares 3 nodes, not 4
    assert report["blocks"] == 4 and [r["trunk_nodes"] for r in report["rounds"]] == [0, 4, 7, 11, 15]


@pytest.mark.skipif(not _importer_reads_functional(), reason="the Keras functional importer is on another branch")
def test_cli_zipper_rounds_stops_after_round_n(tmp_path, pair):
    """--rounds 2 runs k = 1, 2 of the 4 blocks: k00..k02 written, the report says where it stopped, and pick
    chooses among those rounds only."""
    zipped = tmp_path / "zipped"
    f, c, v = pair["files"], pair["calib"], pair["val"]
    done = subprocess.run(
        [sys.executable, "-m", "edgemerge.cli", "zipper", f"a={f['a']}", f"b={f['b']}", "--calib", f"a={c['a']}",
         "--calib", f"b={c['b']}", "--val", f"a={v['a']}", "--val", f"b={v['b']}", "-o", str(zipped),
         "--share", "block", "--steps-per-round", "2", "--rounds", "2", "--no-tflite"],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads((zipped / "report.json").read_text())
    assert report["blocks"] == 4 and report["last_round"] == 2
    assert [r["k"] for r in report["rounds"]] == [0, 1, 2]
    assert sorted(p.name for p in zipped.glob("k*.emm")) == ["k00.emm", "k01.emm", "k02.emm"]
    assert "k00.emm .. k02.emm" in done.stdout
    picked = tmp_path / "p.emm"
    done = subprocess.run([sys.executable, "-m", "edgemerge.cli", "zipper", "pick", str(zipped), "--max-drop", "0.99",
                           "-o", str(picked)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert picked.read_bytes() == (zipped / "k02.emm").read_bytes()
    bad = subprocess.run([sys.executable, "-m", "edgemerge.cli", "zipper", f"a={f['a']}", f"b={f['b']}", "--calib",
                          f"a={c['a']}", "--calib", f"b={c['b']}", "--val", f"a={v['a']}", "--val", f"b={v['b']}",
                          "-o", str(tmp_path / "z0"), "--rounds", "0"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--rounds" in bad.stderr and "Traceback" not in bad.stderr


def test_a_run_stopped_after_round_1_leaves_a_report_of_round_1_that_pick_reads(tmp_path, pair, monkeypatch):
    """report.json is rewritten (marked unfinished) after every round but the last: a run stopped in round 2
    leaves the rounds done, with their files' hashes, and `pick` chooses among them."""
    import edgemerge.training.calibrate as calibrate_module
    from edgemerge.errors import EdgemergeError
    from edgemerge.workflows.zipper_files import zipper_files
    from edgemerge.zipper.report import pick

    real, calls = calibrate_module.calibrate, []

    def stopped_in_round_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(calibrate_module, "calibrate", stopped_in_round_2)
    out = tmp_path / "z"
    with pytest.raises(KeyboardInterrupt):
        zipper_files(pair["files"], pair["calib"], pair["val"], out, share="block", steps_per_round=2, tflite=False,
                     latency_samples=5, plot=False, imported=pair["models"])
    report = json.loads((out / "report.json").read_text())
    assert report["complete"] is False and report["last_round"] == 1 and report["blocks"] == 4
    assert [r["k"] for r in report["rounds"]] == [0, 1]
    row = pick(out, 0.99, tmp_path / "p.emm")
    assert row["k"] == 1 and (tmp_path / "p.emm").read_bytes() == (out / "k01.emm").read_bytes()
    monkeypatch.setattr(calibrate_module, "calibrate", real)
    done = zipper_files(pair["files"], pair["calib"], pair["val"], out, share="block", steps_per_round=2,
                        rounds=1, tflite=False, latency_samples=5, plot=False, imported=pair["models"])
    assert done.report["complete"] is True and done.report["last_round"] == 1
    with pytest.raises(EdgemergeError, match="rounds must be >= 1"):
        zipper_files(pair["files"], pair["calib"], pair["val"], out, rounds=0, imported=pair["models"])


def test_top_block_shares_the_last_conv_before_the_pooling():
    """top=True: one more block, the conv between the last block and the pooling (MobileNetV2's Conv_1); round 5
    of --share block computes it once and leaves each task its pooling and classifier; the shared graph runs."""
    from edgemerge.runtime import Runtime
    from edgemerge.zipper.fuse import ZipState
    from edgemerge.zipper.layout import check_pair
    from edgemerge.zipper.rounds import share_round

    models = random_pair()
    a = models["a"]
    assert check_pair(models).depth == 4
    layout = check_pair(models, top=True)
    assert layout.depth == 5 and names(a, layout.blocks[4].positions) == ["top"]
    assert names(a, layout.shared_positions("pointwise", 5))[-1] == "top"
    state = ZipState.from_models(models)
    for k in range(1, 6):
        graph, _ = share_round(models, layout, state, k, "block")
    shared = [graph.graph.nodes[i].name for i in graph.trunk_nodes]
    assert shared[-1] == "shared/top" and len(shared) == 17
    per_task = sorted(n.name for n in graph.graph.nodes if not n.name.startswith("shared/"))
    assert per_task == ["a/gap", "a/head", "b/gap", "b/head"]
    np.testing.assert_array_equal(state.weights["a"][a.position("top")], state.weights["b"][a.position("top")])
    x = np.random.default_rng(0).random((2, *a.input_shape), dtype=np.float32)
    path = emm.to_bytes(graph.graph)
    from tempfile import NamedTemporaryFile
    with NamedTemporaryFile(suffix=".emm") as f:
        f.write(path)
        f.flush()
        runtime = Runtime(f.name)
        assert {t: runtime.run(t, x).shape for t in ("a", "b")} == {"a": (2, TASK_CLASSES["a"]),
                                                                      "b": (2, TASK_CLASSES["b"])}


def test_top_needs_a_conv_after_the_blocks():
    from edgemerge.zipper.layout import check_pair

    models = random_pair()
    cut = {t: dataclasses.replace(m, layers=[l for l in m.layers if l.name != "top"]) for t, m in models.items()}
    for m in cut.values():
        m.layers[m.position("gap")] = dataclasses.replace(m.layers[m.position("gap")], inputs=["b4_add"])
    with pytest.raises(EdgemergeError, match="no conv between its last block and its pooling"):
        check_pair(cut, top=True)
