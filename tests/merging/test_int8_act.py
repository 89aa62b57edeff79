"""int8 activations (docs/FORMAT.md "int8 activations"): merge-side selection and scales, the file round trip of
the input scale, the C runtime running the flagged file close to the float file, and the readers' rules."""
import struct

import numpy as np
import pytest

from edgemerge import emm
from edgemerge.emm import constants as F
from edgemerge.errors import EdgemergeError, EmmFormatError
from edgemerge.executors.numpy_exec import execute_graph
from edgemerge.merging.quantize import apply_int8_act, input_ranges, select_int8_act
from tests.graphs import two_task_graph


def _samples(graph, n=40, seed=1):
    rng = np.random.default_rng(seed)
    return {t.name: rng.normal(size=(n, *graph.inputs[t.input])).astype(np.float32) for t in graph.tasks}


def test_select_all_and_by_name():
    g = two_task_graph()
    lut = [i for i, n in enumerate(g.nodes) if n.op in (F.Op.LUT_CONV2D, F.Op.LUT_DENSE)]
    assert select_int8_act(g, ["all"]) == lut
    assert select_int8_act(g, ["a:conv1"]) == [next(i for i, n in enumerate(g.nodes) if n.name == "a/conv1")]
    with pytest.raises(EdgemergeError, match="no merged"):
        select_int8_act(g, ["nope"])


def test_scales_round_trip_and_runtime_close_to_float():
    from edgemerge.runtime import Runtime
    g = two_task_graph()
    samples = _samples(g)
    nodes = select_int8_act(g, ["all"])
    ranges = input_ranges(g, samples, nodes)
    # the first conv reads the input itself: its range is the percentile of |x|
    first = next(i for i in nodes if g.nodes[i].name == "a/conv1")
    assert ranges[first] == pytest.approx(np.percentile(np.abs(samples["a"]), 99.99))
    float_bytes = emm.to_bytes(g)
    apply_int8_act(g, ranges)
    data = emm.to_bytes(g)
    back = emm.read_emm(data)
    for i in nodes:
        assert back.nodes[i].int8_act
        assert back.nodes[i].input_scale == np.float32(ranges[i] / 127.0)
    flt, q = Runtime(float_bytes), Runtime(data)
    for task, x in samples.items():
        yf = np.stack([flt.run(task, s) for s in x[:8]])
        yq = np.stack([q.run(task, s) for s in x[:8]])
        assert np.abs(yq - yf).max() <= 0.08 * np.abs(yf).max() + 1e-3
        assert not np.array_equal(yq, yf)   # the flag changed the math
        ref = execute_graph(g, task, x[:8])
        assert np.abs(ref - yf.reshape(ref.shape)).max() < 1e-3


def test_reader_and_writer_rules():
    g = two_task_graph()
    node = g.nodes[0]
    node.flags = F.NODE_FLAG_INT8_ACT
    node.input_scale = 0.0
    with pytest.raises(ValueError, match="input scale"):
        emm.to_bytes(g)
    node.input_scale = 0.02
    data = bytearray(emm.to_bytes(g))
    # clear the flag by hand: the scale word must then be 0 (reserved)
    graph_bytes = bytes(data)
    back = emm.read_emm(graph_bytes)
    assert back.nodes[0].input_scale == pytest.approx(0.02)
    node.flags = F.NODE_FLAG_INT8_ACT | F.NODE_FLAG_INT8_TABLES
    with pytest.raises(ValueError, match="exclude"):
        emm.to_bytes(g)
    pool = next(n for n in g.nodes if n.op == F.Op.MAX_POOL)
    node.flags = 0
    pool.flags = F.NODE_FLAG_INT8_ACT
    pool.input_scale = 0.1
    with pytest.raises(ValueError, match="only defined for LUT ops"):
        emm.to_bytes(g)


def test_float_twin_clears_the_flag(tmp_path):
    from edgemerge.measure.evaluate import _float_tables_twin
    g = two_task_graph()
    apply_int8_act(g, input_ranges(g, _samples(g), select_int8_act(g, ["a:conv1"])))
    path = tmp_path / "m.emm"
    emm.write_emm(g, path)
    twin, tasks = _float_tables_twin(path)
    assert twin is not None and tasks == {"a"}
