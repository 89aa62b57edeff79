"""Calibration of merged DAGs: the TensorFlow form of the format-v2 ops (ADD, CONCAT, MUL, PAD) and the new
activations equals the numpy executor (graph_ops' formulas), L1 targets at every matched layer of functional
Keras originals, and a calibration run that lowers the loss of a residual merged pair of two different
architectures (tests/dag_models.py: a ResNet-style net with a projection shortcut, a MobileNetV2-style net with
an inverted residual, PAD, squeeze-and-excite and CONCAT), whose written file the C runtime runs like TF."""
from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from dag_models import dag_pair_files  # noqa: E402

from edgemerge import _runtime, emm  # noqa: E402
from edgemerge.emm.constants import Act, Op  # noqa: E402
from edgemerge.emm.graph import MergedGraph, Node, Task  # noqa: E402
from edgemerge.errors import EdgemergeError  # noqa: E402
from edgemerge.executors import graph_ops  # noqa: E402
from edgemerge.executors.numpy_exec import execute_graph  # noqa: E402
from edgemerge.merging.align import align_models  # noqa: E402
from edgemerge.merging.merge import merge_models  # noqa: E402
from edgemerge.training.calibrate import TFMergedGraph, calibrate, tf_forward  # noqa: E402
from edgemerge.training.targets import load_targets, target_outputs  # noqa: E402
from edgemerge.training.tf_form import _activation  # noqa: E402
from numeric import max_rel_err  # noqa: E402


@pytest.mark.parametrize("act", list(Act))
def test_every_activation_has_graph_ops_formula(act):
    # the kinks and saturation points of relu6 / hard-sigmoid (-3, 0, 3, 6) and the tails of the sigmoids
    x = np.array([-40.0, -6.5, -3.0, -2.999, -1.0, -0.0, 0.0, 0.25, 1.0, 2.999, 3.0, 5.5, 6.0, 6.001, 40.0],
                 np.float32)
    got = np.asarray(_activation(act)(tf.constant(x)))
    np.testing.assert_allclose(got, graph_ops.activate(x, act), rtol=1e-6, atol=1e-7)


def _v2_graph(seed=0) -> MergedGraph:
    from edgemerge.emm.graph import Tensor

    rng = np.random.default_rng(seed)
    from edgemerge.merging.merge import source_metadata

    g = MergedGraph(metadata=source_metadata({"t": ("t.keras", 1000)}))
    x = g.add_input((5, 4, 3))
    f32 = lambda name, *shape: g.add_tensor(Tensor.f32(name, rng.normal(size=shape)))  # noqa: E731
    a = g.add_node(Node("a", Op.CONV2D, x, (5, 4, 3), Act.SWISH, weight=f32("a/w", 1, 1, 3, 3), bias=f32("a/b", 3)))
    s = g.add_node(Node("add3", Op.ADD, a, (5, 4, 3), Act.HARD_SWISH))
    g.nodes[-1].inputs = (a, x, a)
    gap = g.add_node(Node("gap", Op.GLOBAL_AVG_POOL, s, (1, 1, 3)))
    gate = g.add_node(Node("gate", Op.CONV2D, gap, (1, 1, 3), Act.SIGMOID, weight=f32("g/w", 1, 1, 3, 3)))
    m1 = g.add_node(Node("mul_hw_first", Op.MUL, s, (5, 4, 3), Act.NONE))
    g.nodes[-1].inputs = (s, gate)
    m2 = g.add_node(Node("mul_gate_first", Op.MUL, gate, (5, 4, 3), Act.RELU6))
    g.nodes[-1].inputs = (gate, a)
    cat = g.add_node(Node("cat", Op.CONCAT, m1, (5, 4, 9), Act.HARD_SIGMOID))
    g.nodes[-1].inputs = (m1, m2, x)
    pad = g.add_node(Node("pad", Op.PAD, cat, (7, 5, 9), Act.HARD_SIGMOID, pads=(2, 0, 0, 1)))
    out = g.add_node(Node("head", Op.DENSE, pad, (1, 1, 4), weight=f32("h/w", 7 * 5 * 9, 4)))
    g.tasks.append(Task("t", 0, out, 4))
    return g


def test_tf_form_of_every_v2_op_equals_numpy():
    graph = _v2_graph()
    x = np.random.default_rng(1).normal(size=(3, 5, 4, 3)).astype(np.float32) * 3
    want = execute_graph(graph, "t", x)
    assert max_rel_err(tf_forward(graph, "t", x), want) <= 1e-5
    # and the C runtime (reference kernels) computes the same graph
    got, _ = _runtime.Model(emm.to_bytes(graph), kernels="ref").run_all([x])
    assert max_rel_err(np.reshape(got[0], want.shape), want) <= 1e-5


@pytest.fixture(scope="module")
def dag_files(tmp_path_factory):
    """The hand-built pair as functional .keras originals, and calibration sets labelled by the originals."""
    return dag_pair_files(tmp_path_factory.mktemp("dag_pair"), samples=512)


def test_tf_form_of_a_merged_dag_pair_equals_numpy(dag_files):
    sources, _, _ = dag_files
    graph = merge_models(sources, "light", kmeans_inits=1, n_jobs=1).graph
    x = np.random.default_rng(2).normal(size=(4, 8, 8, 3)).astype(np.float32)
    for task in sources:
        assert max_rel_err(tf_forward(graph, task, x), execute_graph(graph, task, x)) <= 1e-5, task


def test_l1_targets_at_every_matched_layer_of_functional_originals(dag_files):
    sources, originals, _ = dag_files
    # exact codebooks: every matched node output equals its layer of the Keras original
    groups = align_models(sources)
    graph = merge_models(sources, "accu", layer_rc={g.name: (1, 4096) for g in groups}, kmeans_inits=1,
                         n_jobs=1).graph
    targets, skipped = load_targets(graph, originals, list(sources))
    x = np.random.default_rng(3).normal(size=(4, 8, 8, 3)).astype(np.float32)
    form = TFMergedGraph(graph)
    for task, source in sources.items():
        lut_layers = [graph.nodes[i].name.split("/", 1)[1] for i in graph.nodes_for(task)
                      if graph.nodes[i].op in (Op.LUT_CONV2D, Op.LUT_DENSE)]
        assert targets[task].layers == lut_layers and not skipped[task]
        # the shortcut/projection and the expand/project convs of the branches are all targets
        assert ("b2_proj" in lut_layers) if task == "res" else {"ir1_expand", "ir1_project", "se_expand"} <= set(lut_layers)
        outs = form.forward(task, x, want=targets[task].nodes)[1]
        for node, layer, orig in zip(targets[task].nodes, targets[task].layers, target_outputs(targets[task], x)):
            assert max_rel_err(np.asarray(outs[node]).reshape(orig.shape), orig) <= 1e-4, (task, layer)


def test_calibration_lowers_the_loss_of_a_merged_residual_pair(dag_files, tmp_path):
    sources, originals, calib = dag_files
    # a coarse encoding (r = 4, C = 4 on every conv) so there is something to repair
    graph = merge_models(sources, "light", layer_rc={g.name: (4, 4) for g in align_models(sources)},
                         kmeans_inits=1, n_jobs=1).graph
    result = calibrate(graph, originals, calib, steps=120, eval_every=40, learning_rate=3e-3)
    history = result.report["history"]
    for task in sources:
        report = result.report["tasks"][task]
        assert report["l1_layers"]                                       # L1 terms at the DAG's matched layers
        assert report["accuracy_after"] >= report["accuracy_before"], task
        train_loss = [h["tasks"][task]["train"]["loss"] for h in history[1:]]
        assert len(train_loss) == 3 and train_loss[-1] < train_loss[0], (task, train_loss)
        assert report["val_ce_after"] < report["val_ce_before"], task
    # the written file is the trained model: the C runtime (every kernel set) gives tf_forward's logits
    trained = result.graph
    assert all(trained.nodes[i].inputs == graph.nodes[i].inputs for i in range(len(graph.nodes)))
    data = emm.to_bytes(trained)
    x = np.random.default_rng(4).normal(size=(5, 8, 8, 3)).astype(np.float32)
    for name in _runtime.kernel_sets():
        got, _ = _runtime.Model(data, kernels=name).run_all([x, x])
        for t, g in zip(trained.tasks, got):
            want = tf_forward(trained, t.name, x)
            assert max_rel_err(np.reshape(g, want.shape), want) <= 1e-4, (name, t.name)


def test_a_node_with_an_unknown_op_has_no_tf_form():
    graph = _v2_graph()
    graph.nodes[1].op = 99
    with pytest.raises(EdgemergeError, match="has no TensorFlow form"):
        tf_forward(graph, "t", np.zeros((1, 5, 4, 3), np.float32))
