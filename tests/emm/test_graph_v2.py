"""Format v2 (graphs with branches) from Python: the writer writes v1 for chains and v2 for graphs that join
branches, the reader reads both back, the C loader accepts what the writer wrote and computes what numpy
computes, and hand-made corrupt v2 files are refused by the C loader, the Python reader and
`edgemerge inspect` / `eval` (one `error:` line, exit 1)."""
import struct

import numpy as np
import pytest
from corrupt import c_loader_refuses, cli_refuses, fix_crcs, section_span
from graphs import two_task_graph

from edgemerge import _runtime, emm
from edgemerge.emm import constants as F
from edgemerge.emm.constants import Act, Op
from edgemerge.emm.graph import MergedGraph, Node, Task, Tensor
from edgemerge.errors import EmmFormatError
from edgemerge.executors import graph_ops
from edgemerge.runtime import Runtime

H, W, C, CLASSES = 6, 5, 4, 3


def residual_se_graph(seed: int = 0) -> MergedGraph:
    """x -> conv3x3+relu -> conv1x1 -> ADD(x)+relu -> [SE: gap -> dense+relu -> dense+hard_sigmoid -> MUL]
    -> CONCAT(se, x) -> PAD -> gap -> dense: every multi-input op, a residual and an SE block."""
    rng = np.random.default_rng(seed)
    g = MergedGraph(metadata={"edgemerge.tool_version": "test", "edgemerge.original_bytes": 1000,
                              "source.count": 1})
    x = g.add_input((H, W, C))
    t = lambda name, a: g.add_tensor(Tensor.f32(name, a))
    w1, b1 = t("c1/w", rng.normal(size=(3, 3, C, C)) * 0.4), t("c1/b", rng.normal(size=C) * 0.1)
    v = g.add_node(Node("c1", Op.CONV2D, x, (H, W, C), Act.RELU, (3, 3), (1, 1), (1, 1, 1, 1), weight=w1, bias=b1))
    w2 = t("c2/w", rng.normal(size=(1, 1, C, C)) * 0.4)
    v = g.add_node(Node("c2", Op.CONV2D, v, (H, W, C), weight=w2))
    res = g.add_node(Node("add", Op.ADD, v, (H, W, C), Act.RELU, extra_inputs=(x,)))
    s = g.add_node(Node("se/gap", Op.GLOBAL_AVG_POOL, res, (1, 1, C)))
    wa, wb = t("se/a", rng.normal(size=(C, 2))), t("se/b", rng.normal(size=(2, C)))
    s = g.add_node(Node("se/a", Op.DENSE, s, (1, 1, 2), Act.RELU, weight=wa))
    s = g.add_node(Node("se/b", Op.DENSE, s, (1, 1, C), Act.HARD_SIGMOID, weight=wb))
    se = g.add_node(Node("se/mul", Op.MUL, res, (H, W, C), extra_inputs=(s,)))
    cat = g.add_node(Node("cat", Op.CONCAT, se, (H, W, 2 * C), Act.HARD_SWISH, extra_inputs=(x,)))
    p = g.add_node(Node("pad", Op.PAD, cat, (H + 1, W + 2, 2 * C), pads=(1, 0, 0, 2)))
    p = g.add_node(Node("gap", Op.GLOBAL_AVG_POOL, p, (1, 1, 2 * C)))
    wd = t("head/w", rng.normal(size=(2 * C, CLASSES)))
    out = g.add_node(Node("head", Op.DENSE, p, (1, 1, CLASSES), Act.NONE, weight=wd))
    g.tasks.append(Task("t", x, out, CLASSES))
    return g


def conv_same(x, w, b=None):
    kh, kw = w.shape[:2]
    xp = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    out = sum(np.einsum("nhwc,co->nhwo", xp[:, i:i + x.shape[1], j:j + x.shape[2]], w[i, j])
              for i in range(kh) for j in range(kw))
    return out + (0 if b is None else b)


def numpy_reference(g: MergedGraph, x: np.ndarray) -> np.ndarray:
    """The residual + SE graph computed here in float64, op by op, from FORMAT.md."""
    a = lambda name: g.tensors[[t.name for t in g.tensors].index(name)].array.astype(np.float64)
    h = np.maximum(conv_same(x, a("c1/w"), a("c1/b")), 0)
    h = conv_same(h, a("c2/w"))
    res = np.maximum(h + x, 0)
    s = res.mean(axis=(1, 2), keepdims=True)
    s = np.maximum(s @ a("se/a"), 0)
    s = np.clip(s @ a("se/b") + 3, 0, 6) / 6
    se = res * s
    cat = np.concatenate([se, x], axis=-1)
    cat = cat * np.clip(cat + 3, 0, 6) / 6
    p = np.pad(cat, ((0, 0), (1, 0), (0, 2), (0, 0)))
    return (p.mean(axis=(1, 2)) @ a("head/w")).reshape(x.shape[0], -1)


def test_graph_ops_match_the_spec_formulas():
    x = np.array([-np.inf, -4, -3, -1, 0, 1, 2.5, 3, 7, np.inf, np.nan])
    hs = graph_ops.activate(x, Act.HARD_SIGMOID)
    np.testing.assert_allclose(hs[1:10], [0, 0, 1 / 3, 0.5, 2 / 3, 5.5 / 6, 1, 1, 1])
    assert hs[0] == 0 and np.isnan(hs[-1])
    hw = graph_ops.activate(x, Act.HARD_SWISH)
    assert np.isnan(hw[0]) and hw[-2] == np.inf and np.isnan(hw[-1])     # -Inf · 0 is NaN (FORMAT.md)
    np.testing.assert_allclose(graph_ops.activate(x[1:10], Act.SWISH), x[1:10] / (1 + np.exp(-x[1:10])))
    assert graph_ops.activate(np.array([-np.inf]), Act.SIGMOID)[0] == 0
    a, s = np.ones((1, 2, 2, 3)), np.array([1.0, 2.0, 3.0]).reshape(1, 1, 1, 3)
    np.testing.assert_array_equal(graph_ops.mul(a, s)[0, 1, 1], [1, 2, 3])
    with pytest.raises(ValueError, match="MUL broadcasts only"):
        graph_ops.mul(a, np.ones((1, 2, 1, 3)))
    with pytest.raises(ValueError, match="CONCAT joins"):
        graph_ops.concat([a, np.ones((1, 1, 1, 3))])
    assert graph_ops.pad(a, (1, 0, 0, 2), Act.SIGMOID)[0, 0, 0, 0] == 0.5


def test_writer_keeps_chains_at_version_1_and_writes_v2_for_branches():
    chain = emm.to_bytes(two_task_graph())
    assert struct.unpack_from("<I", chain, 4)[0] == 1
    g = residual_se_graph()
    assert g.format_version == 2
    assert struct.unpack_from("<I", emm.to_bytes(g), 4)[0] == 2


def test_v2_round_trip():
    g = residual_se_graph()
    back = emm.read_emm(emm.to_bytes(g))
    assert [n.inputs for n in back.nodes] == [n.inputs for n in g.nodes]
    assert [n.input for n in back.nodes] == [n.inputs[0] for n in g.nodes]   # single-input code keeps working
    assert [(n.op, n.activation, n.out_shape, n.pads) for n in back.nodes] == \
        [(n.op, n.activation, tuple(n.out_shape), n.pads) for n in g.nodes]
    for a, b in zip(back.tensors, g.tensors):
        np.testing.assert_array_equal(a.array, b.array)
    assert emm.to_bytes(back) == emm.to_bytes(g)
    assert back.nodes_for("t") == list(range(len(g.nodes)))


def test_c_runtime_computes_the_numpy_reference_on_every_kernel_set():
    g = residual_se_graph()
    data = emm.to_bytes(g)
    x = np.random.default_rng(1).normal(size=(4, H, W, C)).astype(np.float32)
    want = numpy_reference(g, x.astype(np.float64))
    rt = Runtime(data)
    assert rt.format_version == 2
    np.testing.assert_allclose(rt.run("t", x), want, rtol=1e-4, atol=1e-5)
    nodes = rt.nodes()
    assert nodes[2]["op_name"] == "ADD" and nodes[2]["inputs"] == (2, 0)
    assert nodes[6]["inputs"] == (3, 6) and nodes[7]["inputs"] == (7, 0)
    for kernels in _runtime.kernel_sets():          # the reference kernels and every fast set of this CPU
        got = _runtime.Model(data, kernels).run(0, x)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=kernels)


def test_numpy_executor_runs_v2_graphs():
    from edgemerge.executors.numpy_exec import execute_graph
    g = residual_se_graph()
    x = np.random.default_rng(2).normal(size=(3, H, W, C)).astype(np.float32)
    np.testing.assert_allclose(execute_graph(g, "t", x), numpy_reference(g, x.astype(np.float64)), rtol=1e-5,
                               atol=1e-6)


def test_arena_reuses_memory_across_branches():
    rt = Runtime(emm.to_bytes(residual_se_graph()))
    assert 0 < rt.arena_bytes < rt._model.values_bytes
    assert rt.arena_bytes <= rt.context_bytes


def test_writer_refuses_an_invalid_join():
    g = residual_se_graph()
    g.nodes[6].extra_inputs = (5,)        # MUL by the (1, 1, 2) squeeze instead of the (1, 1, C) gate
    with pytest.raises(ValueError, match="MUL broadcasts only"):
        emm.to_bytes(g)
    g = residual_se_graph()
    g.nodes[2].out_shape = (H, W, C)
    g.nodes[2].op = Op.CONCAT             # declared (H, W, C), computed (H, W, 2C): the reader catches it
    with pytest.raises(EmmFormatError, match="does not match the computed"):
        emm.read_emm(emm.to_bytes(g))
    g = residual_se_graph()
    g.nodes[2].extra_inputs = (3,)        # the node's own value: a cycle
    with pytest.raises(ValueError, match="not computed before it"):
        emm.to_bytes(g)


# ---- hand-made corrupt v2 files -------------------------------------------------------------------------

def _node_offset(data: bytes, node: int) -> int:
    _, graph, _ = section_span(data, F.Section.GRAPH)
    n_inputs = struct.unpack_from("<I", data, graph)[0]
    return graph + F.GRAPH_HEADER_BYTES + F.INPUT_RECORD_BYTES * n_inputs + F.NODE_RECORD_BYTES * node


def _extra_offset(data: bytes, k: int) -> int:
    _, graph, _ = section_span(data, F.Section.GRAPH)
    n_nodes = struct.unpack_from("<I", data, graph + 4)[0]
    return _node_offset(data, n_nodes) + 4 * k


def _patch(data: bytes, offset: int, value: int) -> bytes:
    buf = bytearray(data)
    struct.pack_into("<I", buf, offset, value)
    return fix_crcs(buf)


# residual_se_graph: value 0 = x, node i makes value i + 1; its extra-input list is [0 (add <- x), 6 (se/mul <- the
# gate, (1, 1, C)), 0 (cat <- x)]; value 5 is the (1, 1, 2) squeeze, value 4 the (1, 1, C) pooled vector
CORRUPT_V2 = {
    "cycle": (lambda d: _patch(d, _extra_offset(d, 0), 3), "input 1 reads value 3, which is not computed before it"),
    "forward_reference": (lambda d: _patch(d, _extra_offset(d, 1), 11),
                          "input 1 reads value 11, which is not computed before it"),
    "broadcast_mismatch": (lambda d: _patch(d, _extra_offset(d, 1), 5), "mul broadcasts only"),
    "concat_spatial_mismatch": (lambda d: _patch(d, _extra_offset(d, 2), 4), "concat joins channels of equal spatial"),
    "too_many_inputs": (lambda d: _patch(d, _node_offset(d, 2) + 80, 65), "input_count 65"),
    "extra_count_mismatch": (lambda d: _patch(d, _node_offset(d, 2) + 80, 3), "extra_input_count is 3"),
}


@pytest.fixture(scope="module")
def v2_bytes():
    return emm.to_bytes(residual_se_graph())


@pytest.mark.parametrize("name", sorted(CORRUPT_V2))
def test_corrupt_v2_refused_by_the_c_loader_and_the_python_reader(v2_bytes, name):
    keyword = CORRUPT_V2[name][1]
    bad, _ = c_loader_refuses(v2_bytes, *CORRUPT_V2[name])
    with pytest.raises(EmmFormatError) as info:
        emm.read_emm(bad)
    assert keyword.split(",")[0] in str(info.value).lower(), str(info.value)


@pytest.mark.parametrize("name", ["cycle", "broadcast_mismatch", "concat_spatial_mismatch", "too_many_inputs"])
def test_inspect_and_eval_print_one_error_line(tmp_path, v2_bytes, name):
    mutate, keyword = CORRUPT_V2[name]
    cli_refuses(tmp_path, name, mutate(v2_bytes), keyword, (H, W, C), task="t")
