"""The runtime's own threads (`Runtime(..., threads=N)`): em_run_all runs every task's own nodes (its lane)
on a pool; outputs must have the same bits for 1, 2 and 4 threads on every kernel set of this CPU. No
timing here: speed is `edgemerge bench --threads N`'s business."""
import numpy as np
import pytest
from graphs import two_task_graph

from edgemerge import _runtime, emm
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
