"""The C runtime against independent references: each LUT layer against a plain convolution with the
decoded weights, and whole graphs against a Keras model rebuilt with decoded weights."""
import numpy as np
import pytest
from graphs import lut_conv_graph, numpy_conv2d, two_task_graph

from edgemerge import emm
from edgemerge.emm.constants import Act
from edgemerge.emm.graph import decoded_weights
from edgemerge.executors.keras_reference import reference_logits
from edgemerge.runtime import Runtime
from numeric import max_rel_err


CONV_CASES = [
    # h, w, cin, cout, kernel, stride, pads, r, C
    (9, 7, 5, 6, (3, 3), (1, 1), (1, 1, 1, 1), 2, 5),      # r does not divide cin, C not a power of 2
    (8, 8, 1, 4, (5, 5), (1, 1), (0, 0, 0, 0), 1, 64),     # LeNet-style first layer, valid
    (11, 10, 7, 3, (3, 3), (2, 2), (0, 0, 1, 1), 4, 16),   # stride 2, TF 'same' (extra pad bottom/right)
    (6, 5, 16, 9, (1, 1), (1, 1), (0, 0, 0, 0), 8, 3),     # point-wise
    (12, 12, 9, 8, (5, 3), (2, 1), (2, 1, 2, 1), 3, 7),    # non-square kernel, mixed strides
    (5, 5, 3, 2, (3, 3), (1, 1), (1, 1, 1, 1), 16, 4),     # r larger than cin (one zero-padded segment)
]


@pytest.mark.parametrize("case", CONV_CASES, ids=[f"case{i}" for i in range(len(CONV_CASES))])
def test_lut_conv2d_matches_plain_convolution_with_decoded_weights(case):
    h, w, cin, cout, k, stride, pads, r, c = case
    graph = lut_conv_graph(h, w, cin, cout, k, stride, pads, r, c, act=Act.NONE, seed=len(str(case)))
    rt = Runtime(emm.to_bytes(graph))
    node = graph.nodes[0]
    weights = decoded_weights(graph, node)
    bias = graph.tensors[node.bias].array
    x = np.random.default_rng(1).normal(size=(3, h, w, cin)).astype(np.float32)
    got = rt.run("t", x)
    for i in range(3):
        want = numpy_conv2d(x[i].astype(np.float64), weights.astype(np.float64), stride, pads) + bias
        assert max_rel_err(got[i], want.reshape(-1)) <= 1e-5


def test_whole_graph_matches_keras_reference_with_decoded_weights():
    pytest.importorskip("keras")
    graph = two_task_graph(seed=3)
    rt = Runtime(emm.to_bytes(graph))
    rng = np.random.default_rng(0)
    for task in ("a", "b"):
        x = rng.normal(size=(16, *graph.task_input_shape(task))).astype(np.float32)
        got = rt.run(task, x)
        want = reference_logits(graph, task, x)
        assert got.shape == want.shape
        assert max_rel_err(got, want) <= 1e-4


def test_run_all_equals_per_task_runs_and_runs_each_node_once():
    graph = two_task_graph(seed=4)
    rt = Runtime(emm.to_bytes(graph))
    rng = np.random.default_rng(1)
    xs = {t: rng.normal(size=(4, *graph.task_input_shape(t))).astype(np.float32) for t in ("a", "b")}
    outputs, node_runs = rt.run_all(xs)
    for task, x in xs.items():
        np.testing.assert_allclose(outputs[task], rt.run(task, x), rtol=0, atol=0)
    assert node_runs == [4] * len(graph.nodes)


def test_wrong_input_shape_is_a_clear_error():
    rt = Runtime(emm.to_bytes(two_task_graph()))
    with pytest.raises(Exception, match=r"expects input of shape \(N, 8, 8, 3\)"):
        rt.run("a", np.zeros((2, 8, 8, 4), np.float32))
    with pytest.raises(Exception, match="no task named"):
        rt.run("zzz", np.zeros((1, 8, 8, 3), np.float32))


def test_runtime_is_safe_to_call_from_threads():
    from concurrent.futures import ThreadPoolExecutor
    graph = two_task_graph(seed=5)
    rt = Runtime(emm.to_bytes(graph))
    x = np.random.default_rng(2).normal(size=(32, 8, 8, 3)).astype(np.float32)
    serial = rt.run("a", x)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: rt.run("a", x), range(16)))
    for r in results:
        np.testing.assert_array_equal(r, serial)
