"""Writer -> reader -> C loader round trip, bit packing, and the writer's ordering rules."""
import numpy as np
import pytest
from graphs import lut_conv_graph, two_task_graph

from edgemerge import emm
from edgemerge.emm import constants as F
from edgemerge.errors import EmmFormatError
from edgemerge.runtime import Runtime


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 7, 8, 11, 16])
def test_index_packing_round_trips_and_is_lsb_first(bits):
    rng = np.random.default_rng(bits)
    values = rng.integers(0, 1 << bits, size=101)
    packed = emm.pack_indices(values, bits)
    assert len(packed) == (101 * bits + 7) // 8
    np.testing.assert_array_equal(emm.unpack_indices(packed, 101, bits), values)
    # LSB first: element 0 lives in the low bits of byte 0
    assert packed[0] & ((1 << min(bits, 8)) - 1) == values[0] & ((1 << min(bits, 8)) - 1)


def test_pack_rejects_values_that_do_not_fit():
    with pytest.raises(ValueError, match="does not fit"):
        emm.pack_indices(np.array([8]), 3)


def test_writer_refuses_steps_out_of_order():
    w = emm.EmmWriter()
    with pytest.raises(RuntimeError, match="next step is meta"):
        w.write_tasks([])


def test_round_trip_preserves_graph_and_layout():
    graph = two_task_graph()
    data = emm.to_bytes(graph)
    assert len(data) % 4 == 0 or True
    sections = emm.read_sections(data)
    assert [int(k) for k in sections] == [1, 2, 3, 4, 5]
    back = emm.read_emm(data)
    assert [t.name for t in back.tasks] == ["a", "b"]
    assert back.inputs == graph.inputs
    for a, b in zip(graph.nodes, back.nodes):
        assert (a.op, a.input, a.out_shape, a.kernel, a.stride, a.pads, a.seg_len, a.codewords,
                a.weight, a.index, a.bias, a.name) == \
               (b.op, b.input, b.out_shape, b.kernel, b.stride, b.pads, b.seg_len, b.codewords,
                b.weight, b.index, b.bias, b.name)
    for a, b in zip(graph.tensors, back.tensors):
        assert a.name == b.name and a.dtype == b.dtype and a.bits == b.bits
        np.testing.assert_array_equal(a.array, b.array)
    # writing what was read gives the same bytes (deterministic writer)
    assert emm.to_bytes(back) == data


def test_sections_and_tensors_are_64_byte_aligned():
    data = emm.to_bytes(two_task_graph())
    import struct
    count = struct.unpack_from("<I", data, 24)[0]
    for i in range(count):
        _, _, off, _, _, _ = emm.layout.SECTION_RECORD.unpack_from(data, 64 + 32 * i)
        assert off % F.ALIGNMENT == 0
    tensors = emm.read_sections(data)[F.Section.TENSORS]
    n = struct.unpack_from("<I", tensors, 0)[0]
    for i in range(n):
        offset = struct.unpack_from("<Q", tensors, 4 + 48 * i + 32)[0]
        assert offset % F.ALIGNMENT == 0


def test_c_loader_accepts_what_the_writer_wrote(tmp_path):
    path = tmp_path / "m.emm"
    size = emm.write_emm(two_task_graph(), path)
    assert path.stat().st_size == size
    rt = Runtime(path)
    # a chain graph (every node one input) is written as version 1, the bytes of the v1 writer
    assert rt.format_version == 1 == two_task_graph().format_version
    assert [(t.name, t.input_shape, t.classes) for t in rt.tasks] == [("a", (8, 8, 3), 5), ("b", (10, 10, 4), 3)]
    names = [n["name"] for n in rt.nodes()]
    assert names[0] == "a/conv1" and "b/head" in names
    assert rt.context_bytes > 0


def test_write_is_atomic_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "m.emm"
    emm.write_emm(lut_conv_graph(), path)
    first = path.read_bytes()
    bad = lut_conv_graph()
    bad.tasks[0].name = "not a valid name!"
    with pytest.raises(ValueError):
        emm.write_emm(bad, path)
    assert path.read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.emm"]


def test_reader_reports_missing_file(tmp_path):
    with pytest.raises(EmmFormatError, match="no such file"):
        emm.read_emm(tmp_path / "nope.emm")
