"""Fake quantisation in the TF form (training/tf_form.py): the simulated int8 activations are the runtime's
values (docs/FORMAT.md "int8 activations": round half to even of x·f32(1/sx), clamp at ±127; the codebook at
m/127 with m over the node's own segments, all zero when m = 0), their gradients are straight-through, and a
graph run with them gives the C runtime's logits for the flagged file."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from edgemerge import emm  # noqa: E402
from edgemerge.errors import EdgemergeError  # noqa: E402
from edgemerge.merging.quantize import apply_int8_act, input_ranges, select_int8_act  # noqa: E402
from edgemerge.training.tf_form import (  # noqa: E402
    TFMergedGraph,
    fake_quant_codebook,
    fake_quant_input,
    int8_input_scales,
)
from tests.graphs import two_task_graph  # noqa: E402


def spec_input(x, sx):
    """FORMAT.md: qx = clamp(round_half_even(x · f32(1 / sx)), ±127), as float32 qx·sx (np.rint: half to even)."""
    sx = np.float32(sx)
    q = np.clip(np.rint(np.asarray(x, np.float32) * np.float32(np.float32(1) / sx)), -127, 127)
    return (q.astype(np.float32) * sx).astype(np.float32)


def spec_codebook(cb):
    cb = np.asarray(cb, np.float32)
    m = np.float32(np.abs(cb).max())
    if m == 0:
        return np.zeros_like(cb)
    q = np.clip(np.rint(cb * np.float32(np.float32(127) / m)), -127, 127)
    return (q.astype(np.float32) * np.float32(m / np.float32(127))).astype(np.float32)


def test_input_ties_round_half_to_even_and_clamp_at_127():
    sx = 1 / 128                    # a power of two: x·(1/sx) is exact, so k + 0.5 is an exact tie
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5, 127.4, 127.5, 300, -1e30, 0.0, -0.0],
                 np.float32) * np.float32(sx)
    got = fake_quant_input(tf.constant(x), sx).numpy()
    assert (got / np.float32(sx)).tolist() == [0, 2, 2, 0, -2, -2, 126, -126, 127, 127, 127, -127, 0, 0]
    np.testing.assert_array_equal(got, spec_input(x, sx))


def test_input_equals_the_spec_next_to_every_rounding_boundary():
    rng = np.random.default_rng(0)
    for sx in rng.uniform(1e-3, 0.2, size=20).astype(np.float32):
        ties = ((rng.integers(-140, 140, size=500) + 0.5) * sx).astype(np.float32)
        x = np.concatenate([ties, np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(-np.inf)),
                            rng.normal(scale=60 * sx, size=500).astype(np.float32)])
        np.testing.assert_array_equal(fake_quant_input(tf.constant(x), float(sx)).numpy(), spec_input(x, sx))


def test_tf_fake_quant_op_would_not_match_the_runtime():
    """Why tf_form does not use tf.quantization.fake_quant_with_min_max_vars: at exact ties it rounds half up."""
    sx = 1 / 128
    x = np.array([0.5, 2.5, -1.5], np.float32) * np.float32(sx)
    theirs = tf.quantization.fake_quant_with_min_max_vars(tf.constant(x), -127 * sx, 127 * sx, narrow_range=True)
    assert not np.array_equal(theirs.numpy(), spec_input(x, sx))
    np.testing.assert_array_equal(fake_quant_input(tf.constant(x), sx).numpy(), spec_input(x, sx))


def test_codebook_image_levels_ties_and_zero():
    cb = np.array([[[1.0, -1.0, 0.5 / 127, 1.5 / 127], [2.5 / 127, -0.25, 0.0, 1e-9]]], np.float32)
    got = fake_quant_codebook(tf.constant(cb)).numpy()
    np.testing.assert_array_equal(got, spec_codebook(cb))
    assert got[0, 0, 0] == 1.0 and got[0, 0, 1] == -1.0          # m itself is level ±127
    assert np.round(got * 127).ravel().tolist()[:6] == [127, -127, 0, 2, 2, -32]   # ties to even: 0.5 -> 0
    rng = np.random.default_rng(1)
    for _ in range(10):
        cb = rng.normal(scale=rng.uniform(1e-3, 5), size=(3, 8, 4)).astype(np.float32)
        np.testing.assert_array_equal(fake_quant_codebook(tf.constant(cb)).numpy(), spec_codebook(cb))
    zero = np.zeros((2, 4, 3), np.float32)
    np.testing.assert_array_equal(fake_quant_codebook(tf.constant(zero)).numpy(), zero)


def test_gradients_are_straight_through():
    sx = 0.1
    x = tf.Variable([0.03, -5.0, 12.6, 20.0, -13.0], dtype=tf.float32)   # 127·sx = 12.7: the last two saturate
    cb = tf.Variable(np.array([[[0.3, -0.7], [0.0, 0.01]]], np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(fake_quant_input(x, sx) * [1., 2., 3., 4., 5.]) + tf.reduce_sum(
            fake_quant_codebook(cb) * 3.0)
    gx, gcb = tape.gradient(loss, [x, cb])
    np.testing.assert_array_equal(gx.numpy(), [1, 2, 3, 0, 0])     # clipped STE: no gradient once saturated
    np.testing.assert_array_equal(gcb.numpy(), np.full((1, 2, 2), 3.0, np.float32))
    zero = tf.Variable(np.zeros((1, 2, 2), np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(fake_quant_codebook(zero))
    assert np.isfinite(tape.gradient(loss, zero).numpy()).all()   # m = 0 gives no NaN gradient


def _flagged_graph():
    """two_task_graph with every LUT node flagged; the fc codebook's segments past task a's 16 made large, so a
    scale taken over the whole codebook instead of the node's own segments would show."""
    g = two_task_graph()
    fc = next(n for n in g.nodes if n.name == "a/fc1")
    g.tensors[fc.weight].array[20:] *= 8
    rng = np.random.default_rng(4)
    samples = {t.name: rng.normal(size=(16, *g.inputs[t.input])).astype(np.float32) for t in g.tasks}
    apply_int8_act(g, input_ranges(g, samples, select_int8_act(g, ["all"])))
    return g, samples


def test_tf_form_with_fake_quant_gives_the_runtime_logits():
    from edgemerge.runtime import Runtime
    g, samples = _flagged_graph()
    runtime = Runtime(emm.to_bytes(g))
    scales = int8_input_scales(g)
    assert len(scales) == 4
    with tf.device("/CPU:0"):
        quant, plain = TFMergedGraph(g, fake_quant=scales), TFMergedGraph(g)
    for task, x in samples.items():
        want = np.stack([runtime.run(task, s) for s in x]).reshape(len(x), -1)
        got = quant.logits(task, x).numpy()
        flt = plain.logits(task, x).numpy()
        size = np.abs(want).max()
        # same products, float32 sums in another order than the runtime's exact int32 sum
        assert np.abs(got - want).max() <= 1e-5 * size, task
        assert np.abs(flt - want).max() > 100 * np.abs(got - want).max(), task   # the simulation is what matches


def test_fake_quant_refuses_nodes_and_scales_it_cannot_simulate():
    g = two_task_graph()
    pool = next(i for i, n in enumerate(g.nodes) if n.name == "a/pool")
    with pytest.raises(EdgemergeError, match="not a LUT"):
        TFMergedGraph(g, fake_quant={pool: 0.1})
    with pytest.raises(EdgemergeError, match="input scale"):
        TFMergedGraph(g, fake_quant={0: 0.0})
