"""int8 tables (node flag INT8_TABLES on LUT ops with C = 16; docs/FORMAT.md "int8 tables"): the flag
round-trips through the file and `inspect`, writer / Python reader / C loader refuse it where it is not
allowed, every kernel set agrees with the reference kernels, the reference agrees with an independent numpy
implementation of the spec, int8 logits stay close to the float path, and `merge` flags the chosen layers."""
from __future__ import annotations

import struct

import numpy as np
import pytest
from graphs import lut_conv_graph, two_task_graph
from synthetic_models import lenet_like, mobile_like

from edgemerge import _runtime, emm
from edgemerge.emm import constants as F
from edgemerge.emm.constants import Op
from edgemerge.errors import EdgemergeError, EmmFormatError
from edgemerge.merging.merge import PRESETS, merge_models


def int8_graph(*args, **kwargs):
    g = lut_conv_graph(*args, **kwargs)
    g.nodes[0].flags = F.NODE_FLAG_INT8_TABLES
    return g


def lut_table(g, x):
    """float64 table [N, pixels, S, 16] of node 0 for a batch x."""
    node = g.nodes[0]
    cb = g.tensors[node.weight].array.astype(np.float64)
    r, cin = node.seg_len, x.shape[-1]
    s = -(-cin // r)
    xp = np.zeros((*x.shape[:-1], s * r))
    xp[..., :cin] = x
    segs = xp.reshape(x.shape[0], -1, s, r)
    return np.einsum("npsj,scj->npsc", segs, cb[:s])


def numpy_int8_conv(g, x):
    """The spec of FORMAT.md "int8 tables" for node 0 (LUT_CONV2D), written independently of the C code."""
    node = g.nodes[0]
    h, w, cin = g.inputs[0]
    kh, kw = node.kernel
    sh, sw = node.stride
    pt, pl, pb, pr = node.pads
    oh, ow, cout = node.out_shape
    idx = g.tensors[node.index].array.astype(np.int64)            # [KH, KW, S, Cout]
    bias = g.tensors[node.bias].array
    out, steps = [], []
    for n in range(x.shape[0]):
        table = lut_table(g, x[n:n + 1]).astype(np.float32)[0]      # [pixels, S, 16]
        m = np.float32(np.abs(table).max())
        inv = np.float32(127) / m
        q = np.clip(np.rint(table * inv), -127, 127).astype(np.int64)   # rint: half to even
        q = q.reshape(h, w, *q.shape[1:])
        qp = np.zeros((h + pt + pb, w + pl + pr, *q.shape[2:]), np.int64)
        qp[pt:pt + h, pl:pl + w] = q
        acc = np.zeros((oh, ow, cout), np.int64)
        s_idx = np.arange(idx.shape[2])[:, None]
        for ky in range(kh):
            for kx in range(kw):
                window = qp[ky:ky + sh * (oh - 1) + 1:sh, kx:kx + sw * (ow - 1) + 1:sw]   # [oh, ow, S, 16]
                acc += window[:, :, s_idx, idx[ky, kx]].sum(axis=2)
        out.append(acc.astype(np.float32) * (m / np.float32(127)) + bias)
        steps.append(float(m) / 127)
    return np.stack(out).reshape(x.shape[0], -1), max(steps)


SHAPES = [  # h, w, cin, cout, kernel, stride, pads, r
    (9, 7, 5, 6, (3, 3), (1, 1), (1, 1, 1, 1), 2),
    (11, 10, 7, 17, (3, 3), (2, 2), (0, 0, 1, 1), 3),
    (8, 8, 1, 33, (5, 5), (1, 1), (0, 0, 0, 0), 1),
    (7, 5, 12, 40, (1, 1), (1, 1), (0, 0, 0, 0), 4),
    (12, 9, 20, 1, (5, 3), (2, 1), (2, 1, 2, 1), 6),
    (10, 10, 48, 23, (5, 5), (1, 1), (2, 2, 2, 2), 4),    # 300 terms: int16 sums flushed
]


@pytest.mark.parametrize("shape", SHAPES)
def test_every_kernel_set_matches_the_reference_and_the_numpy_spec(shape):
    h, w, cin, cout, k, stride, pads, r = shape
    g = int8_graph(h, w, cin, cout, k, stride, pads, r, 16, seed=sum(shape[:4]))
    data = emm.to_bytes(g)
    x = np.random.default_rng(3).uniform(-1, 1, size=(2, h, w, cin)).astype(np.float32)
    ref = _runtime.Model(data, kernels="ref")
    want = ref.run(0, x).reshape(x.shape[0], -1)
    spec, step = numpy_int8_conv(g, x)
    # the numpy table sums in another order: an entry may cross a rounding boundary (one step per term)
    assert np.max(np.abs(want - spec)) <= 2 * step + 1e-5 * np.max(np.abs(spec))
    for name in _runtime.kernel_sets():
        if name in ("ref", "auto"):
            continue
        model = _runtime.Model(data, kernels=name)
        assert model.nodes()[0]["kernel"].startswith("lut_conv2d_i8_"), name
        got = model.run(0, x).reshape(x.shape[0], -1)
        if name == "generic":   # builds the float table in the reference's order: bit for bit
            np.testing.assert_array_equal(got, want)
        else:                   # FMA in the table gemm: at most a step here and there
            assert np.max(np.abs(got - want)) <= 2 * step + 1e-5 * np.max(np.abs(want)), name


def test_int8_logits_stay_close_to_the_float_path():
    g = two_task_graph(seed=3)
    for node in g.nodes:                 # C = 16 everywhere, with and without the flag
        if node.op in (Op.LUT_CONV2D, Op.LUT_DENSE):
            cb = g.tensors[node.weight]
            cb.array = np.random.default_rng(node.weight).normal(size=(cb.shape[0], 16, cb.shape[2])).astype(
                np.float32) * (0.3 if node.op == Op.LUT_DENSE else 1.0)
            node.codewords = 16
            ix = g.tensors[node.index]
            g.tensors[node.index] = ix.index(ix.name, np.random.default_rng(node.index).integers(0, 16, ix.shape), 16)
    float_data = emm.to_bytes(g)
    for node in g.nodes:
        if node.op in (Op.LUT_CONV2D, Op.LUT_DENSE):
            node.flags = F.NODE_FLAG_INT8_TABLES
    int8_data = emm.to_bytes(g)
    for task in ("a", "b"):
        shape = g.task_input_shape(task)
        x = np.random.default_rng(1).normal(size=(20, *shape)).astype(np.float32)
        ti = [t.name for t in g.tasks].index(task)
        f = _runtime.Model(float_data).run(ti, x)
        q = _runtime.Model(int8_data).run(ti, x)
        assert np.max(np.abs(q - f)) <= 0.05 * np.max(np.abs(f)), task
        assert not np.array_equal(q, f)          # the int8 path did run


def test_flag_round_trips_and_inspect_shows_it(tmp_path):
    from edgemerge.measure.inspect_model import describe

    g = int8_graph(6, 6, 4, 5, (3, 3), (1, 1), (1, 1, 1, 1), 2, 16)
    path = tmp_path / "i8.emm"
    emm.write_emm(g, path)
    back = emm.read_emm(path)
    assert back.nodes[0].flags == F.NODE_FLAG_INT8_TABLES and back.nodes[0].int8_tables
    assert emm.to_bytes(back) == path.read_bytes()
    layer = describe(path)["layers"][0]
    assert layer["int8_tables"] is True and layer["C"] == 16 and layer["index_bits"] == 4
    assert layer["kernel"].startswith("lut_conv2d_i8_") or layer["kernel"] == "lut_conv2d_ref"
    plain = tmp_path / "f.emm"
    emm.write_emm(lut_conv_graph(6, 6, 4, 5, (3, 3), (1, 1), (1, 1, 1, 1), 2, 16), plain)
    assert describe(plain)["layers"][0]["int8_tables"] is False


def _node_flags_offset(data: bytes) -> int:
    sections = emm.read_sections(data)
    graph_offset = bytes(data).find(bytes(sections[F.Section.GRAPH]))
    n_inputs = struct.unpack_from("<I", data, graph_offset)[0]
    return graph_offset + 8 + 16 * n_inputs + 12        # node 0, word 3


def _patch(data: bytes, offset: int, value: int) -> bytes:
    """Rewrites a u32 of GRAPH and fixes the section and section-table CRCs (a file that is valid but for it)."""
    import zlib
    buf = bytearray(data)
    struct.pack_into("<I", buf, offset, value)
    count = struct.unpack_from("<I", buf, 24)[0]
    for i in range(count):
        e = 64 + 32 * i
        kind, _, off, size = struct.unpack_from("<IIQQ", buf, e)
        struct.pack_into("<I", buf, e + 24, zlib.crc32(bytes(buf[off:off + size])))
    struct.pack_into("<I", buf, 48, zlib.crc32(bytes(buf[64:64 + 32 * count])))
    struct.pack_into("<I", buf, 60, zlib.crc32(bytes(buf[:60])))
    return bytes(buf)


def test_flag_is_refused_where_it_is_not_allowed():
    g = int8_graph(6, 6, 4, 5, (3, 3), (1, 1), (1, 1, 1, 1), 2, 8)     # C = 8, 3-bit indices
    with pytest.raises(ValueError, match="INT8_TABLES needs C = 16"):
        emm.to_bytes(g)
    g.nodes[0].flags = 0
    data = emm.to_bytes(g)
    at = _node_flags_offset(data)
    bad = _patch(data, at, F.NODE_FLAG_INT8_TABLES)
    with pytest.raises(EmmFormatError, match="INT8_TABLES needs C = 16"):
        emm.read_emm(bad)
    with pytest.raises(_runtime.StatusError, match="INT8_TABLES needs C = 16"):
        _runtime.Model(bad)
    # an unknown flag bit: refused by name, as "needs a newer runtime"
    ok = emm.to_bytes(int8_graph(6, 6, 4, 5, (3, 3), (1, 1), (1, 1, 1, 1), 2, 16))
    future = _patch(ok, _node_flags_offset(ok), 0x5)
    with pytest.raises(EmmFormatError, match="unknown node flags 0x00000004"):
        emm.read_emm(future)
    with pytest.raises(_runtime.StatusError, match="unknown node flags 0x00000004"):
        _runtime.Model(future)
    # on a non-LUT op
    g2 = two_task_graph()
    head = next(n for n in g2.nodes if n.op == Op.DENSE)
    head.flags = F.NODE_FLAG_INT8_TABLES
    with pytest.raises(ValueError, match="only defined for LUT ops"):
        emm.to_bytes(g2)


def test_merge_flags_chosen_layers_with_16_codewords():
    sources = {"a": lenet_like("a"), "b": mobile_like("b")}
    result = merge_models(sources, kmeans_inits=1, int8_tables=["c1", "b:e1"])
    flagged = {n.name for n in result.graph.nodes if n.int8_tables}
    assert {"a/c1", "b/e1"} <= flagged
    for n in result.graph.nodes:
        if n.int8_tables:
            assert n.codewords == 16 and result.graph.tensors[n.index].bits == 4
    assert any(n.op in (Op.LUT_CONV2D, Op.LUT_DENSE) and not n.int8_tables for n in result.graph.nodes)
    assert "merge.int8_tables" in result.graph.metadata
    assert any(r.int8_tables for r in result.report)
    model = _runtime.Model(emm.to_bytes(result.graph))
    kernels = {n["name"]: n["kernel"] for n in model.nodes()}
    assert "_i8_" in kernels["a/c1"] or kernels["a/c1"].endswith("_ref")

    light4 = merge_models(sources, preset="light4", kmeans_inits=1)
    luts = [n for n in light4.graph.nodes if n.op in (Op.LUT_CONV2D, Op.LUT_DENSE)]
    assert PRESETS["light4"].int8_tables
    assert luts and all(n.int8_tables == (n.seg_len > 1) for n in luts)
    assert all(n.codewords == 16 for n in luts if n.int8_tables)
    every = merge_models(sources, kmeans_inits=1, int8_tables=["all"])
    assert all(n.int8_tables for n in every.graph.nodes if n.op in (Op.LUT_CONV2D, Op.LUT_DENSE))

    with pytest.raises(EdgemergeError, match="int8 tables need C = 16"):
        merge_models(sources, kmeans_inits=1, int8_tables=["c1"], layer_rc={"c1": (1, 8)})
    with pytest.raises(EdgemergeError, match="no merged layer"):
        merge_models(sources, kmeans_inits=1, int8_tables=["nope"])
    # a blanket rule (preset, "all") yields to an explicit layer_rc with C != 16
    mixed = merge_models(sources, preset="light4", kmeans_inits=1, layer_rc={"c2": (4, 32)})
    c2 = next(n for n in mixed.graph.nodes if n.name == "a/c2")
    assert c2.codewords == 32 and not c2.int8_tables


def test_eval_reports_the_int8_drop(tmp_path):
    from edgemerge.measure.evaluate import evaluate

    g = int8_graph(5, 5, 4, 3, (3, 3), (1, 1), (1, 1, 1, 1), 2, 16, seed=4)
    path = tmp_path / "i8.emm"
    emm.write_emm(g, path)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5, 5, 4)).astype(np.float32)
    y = rng.integers(0, g.tasks[0].classes, size=40)
    np.savez(tmp_path / "t.npz", x=x, y=y)
    result = evaluate(path, {"t": str(tmp_path / "t.npz")}, {})["tasks"]["t"]
    assert {"float_tables_accuracy", "int8_drop"} <= set(result)
    assert result["int8_drop"] == pytest.approx(result["float_tables_accuracy"] - result["accuracy"])
    plain = tmp_path / "f.emm"
    g.nodes[0].flags = 0
    emm.write_emm(g, plain)
    assert "int8_drop" not in evaluate(plain, {"t": str(tmp_path / "t.npz")}, {})["tasks"]["t"]


def test_cli_merge_int8_tables_then_inspect_and_eval(tmp_path, trained_model_paths):
    import subprocess
    import sys

    import model_factory

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "edgemerge.cli", *map(str, args)], capture_output=True,
                              text=True, timeout=600)

    out = tmp_path / "m.emm"
    result = cli("merge", f"fashion={trained_model_paths['fashion']}", f"transposed={trained_model_paths['transposed']}",
                 "-o", out, "--preset", "light", "--int8-tables", "all", "--kmeans-inits", "1")
    assert result.returncode == 0, result.stderr
    info = cli("inspect", out)
    assert info.returncode == 0 and " i8 " in info.stdout, info.stdout
    x, y = model_factory.task_data("fashion", "test")
    np.savez(tmp_path / "f.npz", x=x[:300], y=y[:300])
    ev = cli("eval", out, "--data", f"fashion={tmp_path / 'f.npz'}")
    assert ev.returncode == 0 and "int8 drop" in ev.stdout, ev.stdout + ev.stderr
    bad = cli("merge", f"fashion={trained_model_paths['fashion']}", f"transposed={trained_model_paths['transposed']}",
              "-o", tmp_path / "x.emm", "--int8-tables", "no_such_layer")
    assert bad.returncode != 0 and "no merged layer" in bad.stderr
