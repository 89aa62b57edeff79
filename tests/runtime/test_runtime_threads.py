"""The runtime's own threads (`Runtime(..., threads=N)`): em_run_all runs every task's own nodes (its lane)
on a pool, or splits large nodes over it; outputs must have the same bits for 1, 2 and 4 threads on every
kernel set of this CPU. No timing here: speed is `edgemerge bench --threads N`'s business."""
import numpy as np
import pytest
from graphs import lut_conv_graph, two_task_graph

from edgemerge import _runtime, emm
from edgemerge.emm.constants import Act
from edgemerge.runtime import Runtime


@pytest.mark.parametrize("kernels", _runtime.kernel_sets())
def test_run_all_bits_equal_for_1_2_and_4_threads(kernels):
    data = emm.to_bytes(two_task_graph(seed=5))
    rng = np.random.default_rng(2)
    graph = two_task_graph(seed=5)
    xs = {t: rng.normal(size=(6, *graph.task_input_shape(t))).astype(np.float32) for t in ("a", "b")}
    serial = Runtime(data, kernels=kernels)
    want, _ = serial.run_all(xs)
    assert serial.threads == 1 and serial.task_lanes == 0
    for threads in (1, 2, 4):
        rt = Runtime(data, kernels=kernels, threads=threads)
        assert rt.threads == threads
        assert rt.task_lanes == (2 if threads > 1 else 0)
        got, node_runs = rt.run_all(xs)
        assert node_runs == [6] * len(graph.nodes)
        for task in xs:
            assert got[task].tobytes() == want[task].tobytes(), (kernels, threads, task)
            assert rt.run(task, xs[task]).tobytes() == want[task].tobytes()


def test_threads_out_of_range_is_a_clear_error():
    data = emm.to_bytes(two_task_graph())
    for bad in (0, 65, 1.5, True):
        with pytest.raises(ValueError, match="threads must be"):
            Runtime(data, threads=bad)


@pytest.mark.parametrize("kernels", _runtime.kernel_sets())
@pytest.mark.parametrize("layer", [dict(r=8, c=16), dict(r=1, c=8), dict(r=6, c=20, stride=(2, 2), pads=(1, 1, 0, 0))],
                         ids=["tables", "decoded", "stride2"])
def test_split_node_bits_equal_for_1_2_and_4_threads(kernels, layer):
    """One LUT convolution large enough to be split over the pool (planar tables, decoded r = 1, a strided
    table): run_all and run give the bits of threads=1. 24x24 inputs: every case costs over EM_SPLIT_MIN_COST
    (1,048,576 units of em_select.c's cost model; the strided one about 1.3 M)."""
    graph = lut_conv_graph(h=24, w=24, cin=24, cout=32, act=Act.RELU, seed=7, **layer)
    data = emm.to_bytes(graph)
    xs = {"t": np.random.default_rng(3).normal(size=(3, 24, 24, 24)).astype(np.float32)}
    want, _ = Runtime(data, kernels=kernels).run_all(xs)
    for threads in (1, 2, 4):
        rt = Runtime(data, kernels=kernels, threads=threads)
        got, _ = rt.run_all(xs)
        assert got["t"].tobytes() == want["t"].tobytes(), (kernels, threads)
        assert rt.run("t", xs["t"]).tobytes() == want["t"].tobytes(), (kernels, threads)
