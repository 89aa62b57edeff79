"""Clustered depthwise kernels (docs/FORMAT.md "Clustered depthwise", op LUT_DEPTHWISE_CONV2D): one codebook
[1, C, r] of r-tap kernel segments per task (r = 1: single taps, r = KH·KW: whole kernels), an index per
segment, channel and multiplier;
decoded and executed alike by numpy, the C runtime (reference and fast kernels, decoded at load) and the TF
calibration form; hostile records refused by the C loader with a message naming the field."""
from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pytest
from numeric import max_rel_err
from synthetic_models import chain_model, conv, dense, depthwise, flatten, gap

from edgemerge.emm.constants import NONE, Act, Op
from edgemerge.emm.graph import decoded_weights
from edgemerge.executors.numpy_exec import execute_graph, forward_numpy
from edgemerge.merging import merge

CODEWORDS = 8


def dw_model(task="m", seed=5, multiplier=1, kernels=None):
    """conv, two 3x3 depthwise layers (stride 1 and 2), a 1x1, gap, head; with `kernels` (a few 3x3 kernels)
    every depthwise channel's kernel is one of them, so CODEWORDS codewords hold them exactly."""
    model = chain_model(task, (9, 7, 3), [
        conv("stem", 6, act=Act.RELU6), depthwise("dw1", multiplier=multiplier),
        conv("pw", 10, kernel=1, act=Act.RELU6), depthwise("dw2", multiplier=1, stride=2),
        gap(), flatten(), dense("head", 4, act=Act.NONE)], seed=seed)
    if kernels is not None:
        rng = np.random.default_rng(seed)
        for name in ("dw1", "dw2"):
            layer = model.layer(name)
            kh, kw, cin, m = layer.weights.shape
            pick = rng.integers(0, len(kernels), size=(cin, m))
            layer.weights = np.ascontiguousarray(kernels[pick].transpose(2, 3, 0, 1)).astype(np.float32)
    return model


@pytest.fixture(params=[9, 1], ids=["whole-kernels", "single-taps"])
def preset(monkeypatch, request):
    monkeypatch.setitem(merge.PRESETS, "test-dw", dataclasses.replace(merge.PRESETS["accu"],
                                                                      depthwise=(request.param, CODEWORDS)))
    monkeypatch.setattr(merge, "DEPTHWISE_ENCODE_FROM_BYTES", 0)      # these stand-ins are small
    return "test-dw"


def manual_decode(codebook, index, kh, kw):
    """W[ky, kx, c, m] = codebook[0, index[t / r, c, m], t mod r], t = ky·KW + kx, one element at a time."""
    _, cin, m = index.shape
    r = codebook.shape[2]
    w = np.zeros((kh, kw, cin, m), np.float32)
    for ky, kx, c, k in np.ndindex(kh, kw, cin, m):
        t = ky * kw + kx
        w[ky, kx, c, k] = codebook[0, index[t // r, c, k], t % r]
    return w


def test_depthwise_layers_of_a_task_share_one_codebook(preset):
    r = merge.PRESETS[preset].depthwise[0]
    result = merge.merge_models({"m": dw_model(multiplier=2), "n": dw_model("n", seed=6)}, preset=preset,
                                kmeans_inits=1)
    nodes = {n.name: n for n in result.graph.nodes}
    for task in ("m", "n"):
        dw1, dw2 = nodes[f"{task}/dw1"], nodes[f"{task}/dw2"]
        assert dw1.op == dw2.op == Op.LUT_DEPTHWISE_CONV2D
        assert dw1.weight == dw2.weight                     # one codebook per task
        codebook = result.graph.tensors[dw1.weight].array
        assert codebook.shape == (1, CODEWORDS, r) and (dw1.seg_len, dw1.codewords) == (r, CODEWORDS)
        for node in (dw1, dw2):
            index = result.graph.tensors[node.index].array
            cin = result.graph.value_shape(node.input)[2]
            assert index.shape == (9 // r, cin, node.out_shape[2] // cin)
            np.testing.assert_array_equal(decoded_weights(result.graph, node), manual_decode(codebook, index, 3, 3))
    assert nodes["m/dw1"].weight != nodes["n/dw1"].weight          # tasks never share depthwise codebooks
    report = [r for r in result.report if r.kind == "depthwise"]
    assert [g.name for g in report] == ["m:depthwise", "n:depthwise"]
    assert report[0].members == ["m:dw1", "m:dw2"] and report[0].codebook_bytes == 4 * CODEWORDS * r
    # 3-bit indices, one per r taps of every (channel, multiplier)
    assert report[0].index_bytes == sum(-(-n * 9 // r * 3 // 8) for n in (6 * 2, 10))


def test_small_depthwise_layers_stay_float_below_the_threshold(monkeypatch):
    model = dw_model(multiplier=2)
    small = sum(4 * layer.weights.size for layer in model.layers if layer.kind == "depthwise")
    assert small < merge.DEPTHWISE_ENCODE_FROM_BYTES and merge.PRESETS["accu"].depthwise is not None
    result = merge.merge_models({"m": model}, preset="accu", kmeans_inits=1)
    assert {n.op for n in result.graph.nodes if "/dw" in n.name} == {Op.DEPTHWISE_CONV2D}
    monkeypatch.setattr(merge, "DEPTHWISE_ENCODE_FROM_BYTES", small)
    result = merge.merge_models({"m": model}, preset="accu", kmeans_inits=1)
    assert {n.op for n in result.graph.nodes if "/dw" in n.name} == {Op.LUT_DEPTHWISE_CONV2D}


def test_without_the_preset_field_depthwise_layers_stay_float():
    assert merge.PRESETS["light4"].depthwise is None
    result = merge.merge_models({"m": dw_model()}, preset="light4", kmeans_inits=1)
    assert {n.op for n in result.graph.nodes if "/dw" in n.name} == {Op.DEPTHWISE_CONV2D}


def test_few_distinct_kernels_are_encoded_exactly(preset):
    kernels = np.random.default_rng(7).normal(size=(5, 3, 3)).astype(np.float32)
    model = dw_model(multiplier=2, kernels=kernels)
    result = merge.merge_models({"m": model}, preset=preset, kmeans_inits=1)
    if merge.PRESETS[preset].depthwise[0] == 1:
        kernels = np.clip(np.round(kernels), -2, 2)    # single taps: at most 5 distinct values
        model = dw_model(multiplier=2, kernels=kernels)
        result = merge.merge_models({"m": model}, preset=preset, kmeans_inits=1)
    for g in result.report:
        if g.kind == "depthwise":
            assert max(g.relative_error.values()) == 0.0
    for node in result.graph.nodes:
        if node.op == Op.LUT_DEPTHWISE_CONV2D:
            np.testing.assert_array_equal(decoded_weights(result.graph, node),
                                          model.layer(node.name.split("/")[1]).weights)


def test_clustered_depthwise_runs_alike_in_numpy_c_runtime_and_tf(tmp_path, preset):
    runtime = pytest.importorskip("edgemerge.runtime")
    if runtime._runtime is None:
        pytest.skip("the C runtime module is not built")
    from edgemerge import emm

    kernels = np.random.default_rng(8).normal(size=(5, 3, 3)).astype(np.float32)
    model = dw_model(multiplier=2, kernels=kernels)
    result = merge.merge_models({"m": model}, preset=preset, kmeans_inits=1)
    path = tmp_path / "m.emm"
    emm.write_emm(result.graph, path)
    back = emm.read_emm(path.read_bytes())
    assert [n.op for n in back.nodes] == [n.op for n in result.graph.nodes]
    x = np.random.default_rng(9).normal(size=(3, *model.input_shape)).astype(np.float32)
    want = execute_graph(result.graph, "m", x)
    np.testing.assert_array_equal(execute_graph(back, "m", x), want)
    # the depthwise kernels are exact and the rest is plain float: close to the source model too
    assert max_rel_err(want, forward_numpy(model, x)) < 0.5
    for kernels_set in ("ref", "auto"):
        assert max_rel_err(runtime.Runtime(path, kernels=kernels_set).run("m", x), want) < 1e-5, kernels_set
    # the weights decoded at load are model memory beyond the file (bench's peak memory counts them): with the
    # reference set they are all the loader derives, a float per tap and output channel plus a tensor record each
    decoded = [n for n in result.graph.nodes if n.op == Op.LUT_DEPTHWISE_CONV2D]
    floats = sum(decoded_weights(result.graph, n).size for n in decoded)
    packed = runtime.Runtime(path, kernels="ref").packed_bytes
    assert 4 * floats < packed <= 4 * floats + 256 * len(decoded)
    # inspect lists r/C of the clustered nodes; "layer-shared" is a LUT_CONV2D / LUT_DENSE notion, never set here
    from edgemerge.measure.inspect_model import describe
    clustered = [layer for layer in describe(path)["layers"] if layer["op"] == "LUT_DEPTHWISE_CONV2D"]
    assert clustered and all("r" in layer and layer["layer_shared_codebook"] is False for layer in clustered)

    pytest.importorskip("tensorflow")
    from edgemerge.training.tf_form import TFMergedGraph

    form = TFMergedGraph(result.graph)
    for i, node in enumerate(result.graph.nodes):
        if node.op == Op.LUT_DEPTHWISE_CONV2D:
            np.testing.assert_array_equal(form.weights(i).numpy(), decoded_weights(result.graph, node))
    assert max_rel_err(form.logits("m", x).numpy(), want) < 1e-5


def _hostile(tmp_path, preset, change):
    """The merged file with the first clustered depthwise node (or its tensors) changed by `change`."""
    from edgemerge import emm
    from edgemerge.emm.graph import Tensor

    result = merge.merge_models({"m": dw_model(multiplier=2)}, preset=preset, kmeans_inits=1)
    graph = result.graph
    node = next(n for n in graph.nodes if n.op == Op.LUT_DEPTHWISE_CONV2D)
    change(graph, node, Tensor)
    path = tmp_path / "bad.emm"
    emm.write_emm(graph, path)
    return path


@pytest.mark.parametrize("change, message", [
    (lambda g, n, T: setattr(n, "seg_len", 4), "seg_len (r) 4 does not divide KH x KW = 9"),
    (lambda g, n, T: g.tensors.__setitem__(n.weight, T.f32("cb", np.zeros((2, CODEWORDS, n.seg_len)))),
     "codebook (weight) tensor"),
    (lambda g, n, T: setattr(n, "index", NONE), "index tensor is NONE"),
    (lambda g, n, T: g.tensors.__setitem__(n.index, T.index("i", np.full((9 // n.seg_len, 6, 3), 2), 4)),
     "index tensor"),
    (lambda g, n, T: g.tensors.__setitem__(n.index, T.index("i", np.full((9 // n.seg_len, 5, 2), 2), 4)),
     "index tensor"),
    (lambda g, n, T: g.tensors.__setitem__(n.index, T.index("i", np.full((9 // n.seg_len, 6, 2), 7), 16)), "bits"),
    (lambda g, n, T: setattr(n, "codewords", 1), "codewords (C) 1 is below 2"),
], ids=["seg_len", "codebook-dims", "no-index", "index-multiplier", "index-channels", "index-bits", "codewords"])
def test_c_loader_refuses_hostile_clustered_depthwise_nodes(tmp_path, preset, change, message):
    runtime = pytest.importorskip("edgemerge.runtime")
    if runtime._runtime is None:
        pytest.skip("the C runtime module is not built")
    path = _hostile(tmp_path, preset, change)
    from edgemerge.emm.reader import EmmFormatError

    with pytest.raises(EmmFormatError) as info:
        runtime.Runtime(path)
    assert message in str(info.value) and "node 1 (LUT_DEPTHWISE_CONV2D)" in str(info.value), str(info.value)


def test_node_flags_on_a_clustered_depthwise_node_are_refused(tmp_path, preset):
    """The Python writer refuses the flag; a file patched to carry it is refused by the C loader."""
    runtime = pytest.importorskip("edgemerge.runtime")
    if runtime._runtime is None:
        pytest.skip("the C runtime module is not built")
    import corrupt

    from edgemerge.emm import constants as F
    from edgemerge.emm.reader import EmmFormatError

    with pytest.raises(ValueError, match="only defined for LUT ops"):
        _hostile(tmp_path, preset, lambda g, n, T: setattr(n, "flags", F.NODE_FLAG_INT8_TABLES))
    data = _hostile(tmp_path, preset, lambda g, n, T: None).read_bytes()
    _, graph_at, _ = corrupt.section_span(data, F.Section.GRAPH)
    inputs = struct.unpack_from("<I", data, graph_at)[0]
    # a chain is written as version 1 (8-byte GRAPH header); node 1's record starts with its op, word 3 is flags
    node_at = next(graph_at + header + 16 * inputs + F.NODE_RECORD_BYTES for header in (F.GRAPH_HEADER_BYTES_V1,
                   F.GRAPH_HEADER_BYTES) if struct.unpack_from("<I", data, graph_at + header + 16 * inputs
                                                               + F.NODE_RECORD_BYTES)[0] == Op.LUT_DEPTHWISE_CONV2D)
    flags_at = node_at + 12
    (tmp_path / "flag.emm").write_bytes(corrupt.patch_u32(data, flags_at, F.NODE_FLAG_INT8_TABLES))
    with pytest.raises(EmmFormatError, match="node 1 \\(LUT_DEPTHWISE_CONV2D\\): flags 0x00000001: no node flag"):
        runtime.Runtime(tmp_path / "flag.emm")



# -- rpi4-aarch64 under qemu: the cross-built em_run decodes the clustered kernels like the host ---------------
from test_convert import _boards_module, boards, built  # noqa: E402,F401  (session fixtures: em_run per board)


def test_rpi4_aarch64_under_qemu_gives_the_host_logits(boards, built, tmp_path, monkeypatch):
    runtime = pytest.importorskip("edgemerge.runtime")
    if runtime._runtime is None:
        pytest.skip("the C runtime module is not built")
    from edgemerge import emm
    from edgemerge.deploy.boards import missing_tools

    board = boards["rpi4-aarch64"]
    if missing_tools(board, emulator=True):
        pytest.skip("no cross compiler / qemu for rpi4-aarch64 (tools/setup.sh)")
    out, _ = built(board.name)
    monkeypatch.setattr(merge, "DEPTHWISE_ENCODE_FROM_BYTES", 0)
    for r in (1, 9):
        monkeypatch.setitem(merge.PRESETS, "test-dw", dataclasses.replace(merge.PRESETS["accu"], depthwise=(r, 4)))
        model = dw_model(multiplier=2)
        result = merge.merge_models({"m": model}, preset="test-dw", kmeans_inits=1)
        path = tmp_path / f"m{r}.emm"
        emm.write_emm(result.graph, path)
        x = np.random.default_rng(10).normal(size=(1, *model.input_shape)).astype(np.float32)
        x[0].astype("<f4").tofile(tmp_path / "x.f32")
        ran = _boards_module.run_on_board(board, out / "em_run", path, "--task", "m", "--input", tmp_path / "x.f32",
                                          "--output", tmp_path / "y.f32")
        assert ran.returncode == 0, ran.stderr
        got = np.fromfile(tmp_path / "y.f32", dtype="<f4")
        assert max_rel_err(got, runtime.Runtime(path).run("m", x)[0]) <= 1e-5, r
        assert max_rel_err(got, execute_graph(result.graph, "m", x)[0]) <= 1e-4, r
