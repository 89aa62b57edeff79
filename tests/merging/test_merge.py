"""Merging: graph structure, shared codebooks, metadata, presets and overrides, and numpy execution of the
merged graph against the source models."""
from __future__ import annotations

import re

import numpy as np
import pytest
from synthetic_models import chain_model, conv, dense, flatten, lenet_like, mobile_like

from edgemerge.emm.constants import NONE, Act, DType, Op, index_bits
from edgemerge.emm.graph import decoded_weights
from edgemerge.errors import AlignmentError, EdgemergeError
from edgemerge.executors.numpy_exec import execute_graph, forward_numpy
from edgemerge.merging.merge import PRESETS, merge_models
from numeric import max_rel_err


def expected_out_shape(graph, node):
    h, w, c = graph.value_shape(node.input)
    if node.op in (Op.CONV2D, Op.LUT_CONV2D, Op.DEPTHWISE_CONV2D, Op.MAX_POOL, Op.AVG_POOL):
        top, left, bottom, right = node.pads
        oh = (h + top + bottom - node.kernel[0]) // node.stride[0] + 1
        ow = (w + left + right - node.kernel[1]) // node.stride[1] + 1
        if node.op == Op.DEPTHWISE_CONV2D:
            return oh, ow, c * graph.tensors[node.weight].shape[3]
        if node.op in (Op.MAX_POOL, Op.AVG_POOL):
            return oh, ow, c
        return oh, ow, node.out_shape[2]
    if node.op == Op.GLOBAL_AVG_POOL:
        return 1, 1, c
    if node.op == Op.RESHAPE:
        return 1, 1, h * w * c
    if node.op == Op.ACTIVATION:
        return h, w, c
    return 1, 1, node.out_shape[2]


def check_graph_consistency(graph):
    """Everything the format requires of node records and their tensors, checked independently."""
    n_inputs = len(graph.inputs)
    for i, node in enumerate(graph.nodes):
        assert node.input < n_inputs + i, f"{node.name} reads a later value"
        assert tuple(node.out_shape) == expected_out_shape(graph, node), node.name
        assert all(p < k for p, k in zip(node.pads, node.kernel * 2)), node.name
        in_h, in_w, in_c = graph.value_shape(node.input)
        if node.op in (Op.LUT_CONV2D, Op.LUT_DENSE):
            codebook, index = graph.tensors[node.weight], graph.tensors[node.index]
            depth = in_c if node.op == Op.LUT_CONV2D else in_h * in_w * in_c
            s = -(-depth // node.seg_len)
            assert codebook.dtype == DType.F32 and codebook.shape[1:] == (node.codewords, node.seg_len)
            assert codebook.shape[0] >= s or codebook.shape[0] == 1     # FORMAT.md: S_cb >= S, or layer-shared
            assert index.dtype == DType.IDX and index.bits == index_bits(node.codewords)
            expected_index = (*node.kernel, s, node.out_shape[2]) if node.op == Op.LUT_CONV2D else (s, node.out_shape[2])
            assert index.shape == expected_index, node.name
            assert int(index.array.max()) < node.codewords
            assert node.bias != NONE and graph.tensors[node.bias].shape == (node.out_shape[2],)
        elif node.op in (Op.DENSE, Op.DEPTHWISE_CONV2D):
            assert graph.tensors[node.weight].dtype == DType.F32
        else:
            assert node.weight == node.index == node.bias == NONE
    for task in graph.tasks:
        assert task.classes == int(np.prod(graph.value_shape(task.output)))


# -- synthetic models: structure and exact round trips ----------------------------------------------
@pytest.fixture
def two():
    return {"a": lenet_like("a"), "b": mobile_like("b")}


def test_graph_structure(two):
    result = merge_models(two, kmeans_inits=1)
    g = result.graph
    check_graph_consistency(g)
    assert g.inputs == [(16, 16, 1), (16, 16, 3)]
    assert [(t.name, t.input, t.classes) for t in g.tasks] == [("a", 0, 10), ("b", 1, 4)]
    ops = {n.name: n.op for n in g.nodes}
    assert ops == {
        "a/c1": Op.LUT_CONV2D, "a/p1": Op.MAX_POOL, "a/c2": Op.LUT_CONV2D, "a/p2": Op.MAX_POOL,
        "a/flatten": Op.RESHAPE, "a/d1": Op.LUT_DENSE, "a/d2": Op.DENSE,
        "b/k1": Op.LUT_CONV2D, "b/dw": Op.DEPTHWISE_CONV2D, "b/k2": Op.LUT_CONV2D, "b/ap": Op.AVG_POOL,
        "b/k3": Op.LUT_CONV2D, "b/gap": Op.GLOBAL_AVG_POOL, "b/e1": Op.LUT_DENSE, "b/e2": Op.LUT_DENSE,
        "b/e3": Op.DENSE}
    node = {n.name: n for n in g.nodes}
    assert node["a/c1"].sources == ("a:c1",) and node["a/c1"].match_output == "a:c1"
    assert g.tasks[0].output == len(g.inputs) + g.nodes.index(node["a/d2"])
    # paired layers share one codebook tensor; leftovers have their own
    assert node["a/c1"].weight == node["b/k1"].weight
    assert node["a/c2"].weight == node["b/k2"].weight
    assert node["a/d1"].weight == node["b/e1"].weight
    assert len({node[n].weight for n in ("a/c1", "a/c2", "b/k3", "a/d1", "b/e2")}) == 5
    assert g.tensors[node["b/k3"].weight].name == "codebook/k3"
    assert g.tensors[node["a/c1"].weight].name == "codebook/a:c1+b:k1"
    assert g.tensors[node["a/c1"].index].name == "a/c1/index"
    # the bias-free conv still gets a (zero) bias; activations are on the nodes
    np.testing.assert_array_equal(g.tensors[node["a/c2"].bias].array, 0.0)
    assert node["b/k3"].activation == Act.RELU6 and node["b/dw"].activation == Act.RELU6
    assert node["a/d2"].activation == Act.NONE
    # the report
    assert [r.members for r in result.report] == [["a:c1", "b:k1"], ["a:c2", "b:k2"], ["b:k3"], ["a:d1", "b:e1"],
                                                  ["b:e2"]]
    for r in result.report:
        assert r.codebook_bytes == 4 * g.tensors[node[r.members[0].replace(":", "/")].weight].array.size
        assert set(r.relative_error) == set(r.members)
        assert r.to_dict()["bytes"] == r.codebook_bytes + r.index_bytes


def test_metadata_keys(two):
    g = merge_models(two, preset="light", seed=5, kmeans_inits=2).graph
    meta = g.metadata
    assert meta["edgemerge.tool_version"] == __import__("edgemerge").__version__
    assert meta["edgemerge.original_bytes"] == two["a"].param_bytes + two["b"].param_bytes
    assert meta["source.count"] == 2
    assert (meta["source.0.task"], meta["source.0.file"], meta["source.0.param_bytes"]) == \
        ("a", "a.keras", two["a"].param_bytes)
    assert meta["source.1.task"] == "b"
    assert (meta["merge.preset"], meta["merge.seed"], meta["merge.kmeans_inits"]) == ("light", 5, 2)
    for i, node in enumerate(g.nodes):
        assert meta[f"node.{i}.name"] == node.name
        assert meta[f"node.{i}.sources"] == ",".join(node.sources)
        assert meta[f"node.{i}.match_output"] == node.match_output
    for i, tensor in enumerate(g.tensors):
        assert meta[f"tensor.{i}.name"] == tensor.name
    allowed = re.compile(r"edgemerge\.(tool_version|original_bytes)|source\.(count|\d+\.(task|file|param_bytes))|"
                         r"node\.\d+\.(name|sources|match_output)|tensor\.\d+\.name|merge\.(preset|seed|kmeans_inits)")
    assert all(allowed.fullmatch(key) for key in meta)
    assert all(isinstance(v, (int, str)) for v in meta.values())


def test_exact_codebooks_reproduce_the_sources(two):
    """With weights of a few distinct values every segment fits its codebook: the merged graph computes
    exactly what the source models compute."""
    levels = np.array([-0.3, -0.1, 0.0, 0.2, 0.35], np.float32)
    sources = {"a": lenet_like("a", levels=levels), "b": mobile_like("b", levels=levels)}
    # r=1 and C=8 >= 5 levels: every segment is exact
    layer_rc = {ref: (1, 8) for ref in ("a:c1", "a:c2", "b:k3", "a:d1", "b:e2")}
    result = merge_models(sources, layer_rc=layer_rc)
    assert all(err == 0.0 for r in result.report for err in r.relative_error.values())
    for task, model in sources.items():
        x = np.random.default_rng(0).normal(size=(4, *model.input_shape)).astype(np.float32)
        assert max_rel_err(execute_graph(result.graph, task, x), forward_numpy(model, x)) < 1e-5
        for node in result.graph.nodes:
            if node.op in (Op.LUT_CONV2D, Op.LUT_DENSE) and node.name.startswith(f"{task}/"):
                layer = model.layer(node.name.split("/", 1)[1])
                np.testing.assert_array_equal(decoded_weights(result.graph, node), layer.weights)


def test_presets_and_clipping():
    assert set(PRESETS) == {"accu", "light", "light4"}
    assert PRESETS["accu"].first_conv_narrow == (1, 64) and PRESETS["accu"].conv == (8, 128)
    assert PRESETS["accu"].dense == (16, 64) and PRESETS["light"].dense == (32, 32)
    wide = chain_model("w", (8, 8, 6), [conv("first", 16), conv("thin", 3, kernel=1), conv("second", 40),
                                        flatten(), dense("fc", 64), dense("head", 3, act=Act.NONE)])
    narrow = chain_model("n", (8, 8, 1), [conv("first", 16, kernel=5), flatten(), dense("fc", 8),
                                          dense("head", 3, act=Act.NONE)])
    result = merge_models({"w": wide, "n": narrow}, kmeans_inits=1)
    rc = {tuple(r.members): (r.seg_len, r.codewords) for r in result.report}
    assert rc[("w:first", "n:first")] == (4, 64)       # a first conv on 6 > 4 channels: r = 4
    assert rc[("w:thin",)] == (8, 3)                   # C clipped to the 3 vectors a segment has
    assert rc[("w:second",)] == (3, 128)               # r clipped to the depth of 3
    assert rc[("w:fc", "n:fc")] == (16, 32)            # In 2560: a 640 KiB codebook at C = 64, held to 32 (below)
    result = merge_models({"n": narrow}, preset="light", kmeans_inits=1)
    assert {tuple(r.members): (r.seg_len, r.codewords) for r in result.report} == {
        ("n:first",): (1, 32), ("n:fc",): (32, 8)}      # a single model merges too; C clipped to Out = 8

def test_large_one_tap_codebooks_are_held_to_an_eighth_of_the_weights():
    # Dense and 1x1 kernels have one segment vector per output, so a per-segment codebook of C codewords costs
    # C / outputs of the weights. A codebook that would pass 128 KiB gets C = outputs / 8 (a power of two, at
    # least 32); smaller ones, and larger kernels, keep the preset's C.
    model = chain_model("m", (2, 2, 1024), [conv("pw", 256, kernel=1), conv("k2", 256, kernel=2, padding="same"),
                                            flatten(), dense("fc_wide", 256), dense("fc_small", 40),
                                            dense("head", 3, act=Act.NONE)])
    result = merge_models({"m": model}, kmeans_inits=1)
    report = {r.members[0].split(":")[1]: r for r in result.report}
    rc = {name: (r.seg_len, r.codewords) for name, r in report.items()}
    assert rc["pw"] == (4, 32)          # a first conv on 1024 channels: (4, 64) -> 1024 x 64 x 4 = 256 KiB, capped
    assert rc["k2"] == (8, 128)         # 2x2: four vectors per output, not capped
    assert rc["fc_wide"] == (16, 32)    # In 1024: a 256 KiB codebook at C = 64 -> 256 outputs / 8
    assert rc["fc_small"] == (16, 40)   # In 256: a 40 KiB codebook, kept (C clipped to its 40 vectors)
    for name in ("pw", "fc_wide"):
        assert report[name].codebook_bytes <= report[name].original_bytes / 8, name


def test_layer_rc_overrides(two):
    result = merge_models(two, layer_rc={"a:c2": (2, 16), "e2": (4, 8), "a:c1+b:k1": (1, 4)}, kmeans_inits=1)
    rc = {r.name: (r.seg_len, r.codewords) for r in result.report}
    assert rc["a:c2+b:k2"] == (2, 16) and rc["e2"] == (4, 8) and rc["a:c1+b:k1"] == (1, 4)
    node = {n.name: n for n in result.graph.nodes}
    assert (node["b/k2"].seg_len, node["b/k2"].codewords) == (2, 16)     # shared by the whole group
    assert result.graph.tensors[node["b/k2"].index].bits == 4


@pytest.mark.parametrize("layer_rc,message", [
    ({"zz": (2, 16)}, "layer_rc 'zz': no merged layer of that name"),
    ({"a:d2": (2, 16)}, "layer_rc 'a:d2': that layer is not encoded"),
    ({"a:c1": (0, 16)}, "r=0 is outside 1..256"),
    ({"a:c1": (300, 16)}, "r=300 is outside 1..256"),
    ({"a:c1": (2, 1)}, "C=1 is outside 2..65536"),
    ({"a:c1": (2, 70000)}, "C=70000 is outside 2..65536"),
    ({"a:c1": (2, 16), "b:k1": (4, 16)}, "is given two different settings"),
    ({"a:c1": "2/16"}, "expected \\(r, C\\)"),
    ({"a:c1": "26"}, "expected \\(r, C\\)"),
    ({"a:c1": (2, 16, 1)}, "expected \\(r, C\\)"),
])
def test_layer_rc_rejects(two, layer_rc, message):
    with pytest.raises(EdgemergeError, match=message):
        merge_models(two, layer_rc=layer_rc, kmeans_inits=1)


def test_ambiguous_bare_layer_name():
    a = lenet_like("a")
    b = lenet_like("b", seed=3)
    # explicit alignment leaves a:c1 and b:c1 in different groups: "c1" is ambiguous
    with pytest.raises(EdgemergeError, match="'c1': the name is ambiguous"):
        merge_models({"a": a, "b": b}, alignment=["a:c1=b:c2"], layer_rc={"c1": (1, 8)}, kmeans_inits=1)
    result = merge_models({"a": a, "b": b}, layer_rc={"c1": (1, 8)}, kmeans_inits=1)   # same group: fine
    assert result.report[0].name == "c1" and result.report[0].codewords == 8


def test_explicit_alignment_and_errors(two):
    result = merge_models(two, alignment=["a:c1=b:k2"], kmeans_inits=1)
    node = {n.name: n for n in result.graph.nodes}
    assert node["a/c1"].weight == node["b/k2"].weight
    assert node["b/k1"].weight != node["a/c1"].weight and node["a/d1"].weight != node["b/e1"].weight
    check_graph_consistency(result.graph)
    with pytest.raises(AlignmentError, match="crosses"):
        merge_models(two, alignment=["a:c1=b:k2", "a:c2=b:k1"])


@pytest.mark.parametrize("tasks,message", [
    ([], "no source models"),
    (["bad name"], "task name 'bad name': 1..31 characters of \\[A-Za-z0-9_.-\\] required"),
    (["x" * 32], "1..31 characters"),
])
def test_merge_rejects_bad_tasks(tasks, message):
    with pytest.raises(EdgemergeError, match=message):
        merge_models({task: lenet_like("a") for task in tasks})


def test_unknown_preset(two):
    with pytest.raises(EdgemergeError, match="unknown preset 'fast' \\(presets: accu, light, light4\\)"):
        merge_models(two, preset="fast")


# -- trained models ----------------------------------------------------------------------------------
def test_trained_models_merge_and_run_close_at_high_c(source_models):
    """Fine segments and large codebooks: the merged tasks compute almost what the originals compute."""
    import model_factory

    result = merge_models(source_models, preset="accu", kmeans_inits=1,
                          layer_rc={g: (1, 256) for g in ("fashion:conv1", "fashion:conv2", "fashion:fc1",
                                                          "flipped:c2", "transposed:a4")})
    g = result.graph
    check_graph_consistency(g)
    assert len(g.tasks) == 3 and len(g.inputs) == 3
    for task, model in source_models.items():
        x, y = model_factory.task_data(task)
        x = x[:300]
        source = forward_numpy(model, x)
        merged = execute_graph(g, task, x)
        assert merged.shape == source.shape
        assert max_rel_err(merged, source) < 0.03
        assert np.mean(merged.argmax(1) == source.argmax(1)) >= 0.97


@pytest.mark.slow
def test_trained_models_presets_compress_and_keep_accuracy(source_models):
    """Before calibration: 'accu' keeps the tasks usable, 'light' is smaller still (it relies on calibration
    to recover accuracy, so only its size is checked)."""
    import model_factory

    sizes = {}
    for preset in ("accu", "light"):
        result = merge_models(source_models, preset=preset)
        check_graph_consistency(result.graph)
        sizes[preset] = sum(r.bytes for r in result.report)
        original_bytes = sum(r.original_bytes for r in result.report)
        print(f"\n{preset}: encoded in {result.encode_seconds:.2f} s, merged layers {original_bytes} -> "
              f"{sizes[preset]} bytes")
        assert sizes[preset] < original_bytes
        for task, model in source_models.items():
            x, y = model_factory.task_data(task)
            source_acc = np.mean(forward_numpy(model, x).argmax(1) == y)
            merged_acc = np.mean(execute_graph(result.graph, task, x).argmax(1) == y)
            print(f"  {task}: top-1 source {source_acc:.3f}, merged {merged_acc:.3f} (before calibration)")
            if preset == "accu":
                assert merged_acc >= source_acc - 0.15
    assert sizes["light"] < sizes["accu"]


def test_emm_round_trip_of_a_merged_graph(two, tmp_path):
    emm = pytest.importorskip("edgemerge.emm")
    result = merge_models(two, kmeans_inits=1)
    path = tmp_path / "m.emm"
    emm.write_emm(result.graph, path)
    back = emm.read_emm(path.read_bytes())
    for task, model in two.items():
        x = np.random.default_rng(0).normal(size=(3, *model.input_shape)).astype(np.float32)
        np.testing.assert_array_equal(execute_graph(back, task, x), execute_graph(result.graph, task, x))
    assert back.metadata["merge.preset"] == "accu"
    assert [n.match_output for n in back.nodes] == [n.match_output for n in result.graph.nodes]


def test_c_runtime_agrees_with_numpy_execution(two, tmp_path):
    runtime = pytest.importorskip("edgemerge.runtime")
    if runtime._runtime is None:
        pytest.skip("the C runtime module is not built")
    from edgemerge import emm

    result = merge_models(two, kmeans_inits=1)
    path = tmp_path / "m.emm"
    emm.write_emm(result.graph, path)
    rt = runtime.Runtime(path)
    for task, model in two.items():
        x = np.random.default_rng(1).normal(size=(5, *model.input_shape)).astype(np.float32)
        assert max_rel_err(rt.run(task, x), execute_graph(result.graph, task, x)) < 1e-4
