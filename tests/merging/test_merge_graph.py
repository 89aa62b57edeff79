"""Merging DAG source models (residual Add, projection shortcuts, inverted residuals, PAD, squeeze-and-excite
MUL, CONCAT): alignment in topological order, per-task nodes that follow each DAG, format v2 files, and the
C runtime on every kernel set against the numpy executor."""
from __future__ import annotations

import numpy as np
import pytest
from dag_models import dag_pair, mobilenet_like, resnet_like

from edgemerge import _runtime, emm
from edgemerge.emm.constants import NONE, Op
from edgemerge.errors import AlignmentError, EdgemergeError
from edgemerge.executors.numpy_exec import execute_graph, forward_numpy
from edgemerge.importers.source_model import SourceLayer
from edgemerge.merging.align import align_models, mergeable_layers
from edgemerge.merging.merge import merge_models
from numeric import max_rel_err


@pytest.fixture(scope="module")
def pair():
    return dag_pair()


@pytest.fixture(scope="module")
def merged(pair):
    return merge_models(pair, "accu", kmeans_inits=1, n_jobs=1)


def test_default_alignment_pairs_convs_in_topological_order_shortcuts_included(pair):
    groups = align_models(pair)
    conv_groups = [g for g in groups if g.kind == "conv"]
    res = [layer.name for layer in mergeable_layers(pair["res"])]
    mnv = [layer.name for layer in mergeable_layers(pair["mnv"])]
    assert "b2_proj" in res and "ir1_expand" in mnv and "ir1_dw" not in mnv     # depthwise stays per task
    assert [g.members.get("res") for g in conv_groups[:len(res)]] == res
    assert [g.members.get("mnv") for g in conv_groups if "mnv" in g.members] == mnv
    # every position pairs the i-th conv of both models (the projection shortcut with the 6th conv of mnv)
    assert conv_groups[5].members == {"res": "b2_proj", "mnv": "se_expand"}


def test_explicit_alignment_on_graphs_is_checked_for_order(pair):
    groups = align_models(pair, ["res:b1_c1=mnv:ir1_expand", "res:b2_proj=mnv:top"])
    assert {"res": "b2_proj", "mnv": "top"} in [g.members for g in groups]
    with pytest.raises(AlignmentError, match="crosses"):
        align_models(pair, ["res:b2_proj=mnv:ir1_expand", "res:b2_c1=mnv:top"])
    with pytest.raises(AlignmentError, match="depthwise layer"):
        align_models(pair, ["res:b1_c1=mnv:ir1_dw"])


def test_merged_nodes_follow_each_tasks_dag(pair, merged, tmp_path):
    graph = merged.graph
    by_name = {node.name: node for node in graph.nodes}
    n_in = len(graph.inputs)
    value_of = {node.name: n_in + i for i, node in enumerate(graph.nodes)}
    add = by_name["res/b2_add"]
    assert add.op == Op.ADD and add.inputs == (value_of["res/b2_c2"], value_of["res/b2_proj"])
    assert add.weight == add.bias == add.index == NONE and add.seg_len == add.codewords == 0
    assert by_name["res/b1_add"].inputs == (value_of["res/b1_c2"], value_of["res/stem"])
    assert by_name["mnv/se_mul"].op == Op.MUL
    assert by_name["mnv/se_mul"].inputs == (value_of["mnv/ir2_dw"], value_of["mnv/se_expand"])
    assert by_name["mnv/cat"].op == Op.CONCAT and by_name["mnv/cat"].out_shape == (4, 4, 32)
    pad = by_name["mnv/ir2_pad"]
    assert pad.op == Op.PAD and pad.pads == (0, 0, 1, 1) and pad.kernel == pad.stride == (1, 1)
    assert by_name["mnv/ir1_expand"].op == Op.LUT_CONV2D and by_name["mnv/ir1_dw"].op == Op.DEPTHWISE_CONV2D
    assert by_name["res/b2_proj"].op == Op.LUT_CONV2D
    assert by_name["mnv/stem"].input == graph.task("mnv").input
    assert graph.format_version == 2
    # a merged DAG's file round-trips through the v2 writer/reader
    emm.write_emm(graph, tmp_path / "dag.emm")
    again = emm.read_emm(tmp_path / "dag.emm")
    assert [n.inputs for n in again.nodes] == [n.inputs for n in graph.nodes]


def test_exact_codebooks_reproduce_the_dag_sources(pair):
    # C larger than every segment's vector count: k-means keeps every vector, so the merge is exact
    result = merge_models(pair, "accu", layer_rc={g.name: (1, 4096) for g in align_models(pair)},
                          kmeans_inits=1, n_jobs=1)
    x = np.random.default_rng(3).normal(size=(4, 8, 8, 3))
    for task, model in pair.items():
        np.testing.assert_allclose(execute_graph(result.graph, task, x), forward_numpy(model, x),
                                   rtol=1e-4, atol=1e-4)


def test_c_runtime_runs_the_merged_dag_like_numpy_on_every_kernel_set(pair, merged):
    data = emm.to_bytes(merged.graph)
    rng = np.random.default_rng(4)
    inputs = [rng.normal(size=(3, *shape)).astype(np.float32) for shape in merged.graph.inputs]
    want = [execute_graph(merged.graph, t.name, inputs[t.input]) for t in merged.graph.tasks]
    assert {"ref", "generic"} <= set(_runtime.kernel_sets())
    for name in _runtime.kernel_sets():
        got, runs = _runtime.Model(data, kernels=name).run_all(inputs)
        assert all(r == 3 for r in runs), name
        for task, g, w in zip(merged.graph.tasks, got, want):
            assert max_rel_err(np.reshape(g, w.shape), w) <= 1e-4, (name, task.name)


def test_three_graphs_merge(pair):
    sources = {**pair, "res2": resnet_like(seed=7, classes=3)}
    result = merge_models(sources, "light", kmeans_inits=1, n_jobs=1)
    assert {"res": "b2_proj", "mnv": "se_expand", "res2": "b2_proj"} in [g.members for g in result.groups]
    x = np.random.default_rng(5).normal(size=(2, 8, 8, 3)).astype(np.float32)
    model = _runtime.Model(emm.to_bytes(result.graph), kernels="ref")
    got, _ = model.run_all([x, x, x])
    for task, g in zip(result.graph.tasks, got):
        np.testing.assert_allclose(np.reshape(g, (2, -1)), execute_graph(result.graph, task.name, x),
                                   rtol=1e-4, atol=1e-4)


def test_merge_refuses_a_source_graph_with_a_forward_reference():
    model = mobilenet_like()
    bad = model.layers[1]
    model.layers[1] = SourceLayer(bad.name, bad.kind, bad.in_shape, bad.out_shape, bad.weights, bad.bias,
                                  bad.kernel, bad.stride, bad.pads, bad.activation, inputs=("top",))
    with pytest.raises(EdgemergeError, match="task 'mnv'.*not an earlier layer"):
        merge_models({"res": resnet_like(), "mnv": model}, kmeans_inits=1, n_jobs=1)
