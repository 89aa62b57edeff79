"""Kernel sets of the C runtime seen from Python: every set this CPU runs gives the reference's logits
(within float rounding), the choice is visible, and an unknown or unavailable set is refused."""
import numpy as np
import pytest
from graphs import lut_conv_graph, two_task_graph

from edgemerge import _runtime, emm
from numeric import max_rel_err


def test_every_kernel_set_matches_the_reference_kernels():
    data = emm.to_bytes(two_task_graph(seed=5))
    ref = _runtime.Model(data, kernels="ref")
    assert ref.kernels == "ref"
    assert all(n["kernel"].endswith("_ref") for n in ref.nodes())
    rng = np.random.default_rng(2)
    inputs = []
    for i in range(1 + max(t["input_index"] for t in ref.tasks())):
        shape = next(t["input_shape"] for t in ref.tasks() if t["input_index"] == i)
        inputs.append(rng.normal(size=(3, *shape)).astype(np.float32))
    want, _ = ref.run_all(inputs)
    sets = _runtime.kernel_sets()
    assert {"auto", "ref", "generic"} <= set(sets)
    for name in sets:
        model = _runtime.Model(data, kernels=name)
        assert model.kernels != "auto"
        got, runs = model.run_all(inputs)
        assert all(r == 3 for r in runs)
        for g, w in zip(got, want):
            assert max_rel_err(g, w) <= 1e-5, name
        if name not in ("ref", "auto"):
            assert model.kernels == name
            assert not any(n["kernel"].endswith("_ref") for n in model.nodes())


def test_fast_kernels_plan_less_memory_and_profile_lut_phases():
    # the reference keeps the whole table (64·64 pixels × 2 segments × 64 codewords = 2 MiB); the fast
    # kernel builds it a band of rows at a time. r = 16 and 24 output channels: tables beat decoded weights
    data = emm.to_bytes(lut_conv_graph(64, 64, 32, 24, (3, 3), (1, 1), (1, 1, 1, 1), 16, 64, seed=1))
    ref, fast = _runtime.Model(data, kernels="ref"), _runtime.Model(data)
    assert "decoded" not in fast.nodes()[0]["kernel"]
    assert fast.context_bytes < ref.context_bytes / 2
    x = [np.random.default_rng(0).normal(size=(1, 64, 64, 32)).astype(np.float32)]
    profile = fast.profile_all(x, 1, 3)
    assert profile[0]["runs"] == 3
    assert profile[0]["table_ns"] > 0 and profile[0]["accumulate_ns"] > 0
    assert profile[0]["table_ns"] + profile[0]["accumulate_ns"] <= profile[0]["total_ns"]


def test_narrow_lut_conv_with_many_codewords_runs_decoded_and_matches_the_reference():
    # r = 4, C = 128, 12 output channels: the table would cost more than the convolution, so the runtime
    # expands the codebook once at load (em_ops.c lut_conv2d_prefers_decoded); the file is the same
    data = emm.to_bytes(lut_conv_graph(16, 16, 16, 12, (3, 3), (1, 1), (1, 1, 1, 1), 4, 128, seed=3))
    ref, fast = _runtime.Model(data, kernels="ref"), _runtime.Model(data)
    if fast.kernels == "ref":
        pytest.skip("no fast kernel set on this CPU")
    assert "lut_conv2d_f32_decoded" in fast.nodes()[0]["kernel"]
    x = [np.random.default_rng(4).normal(size=(2, 16, 16, 16)).astype(np.float32)]
    (want,), _ = ref.run_all(x)
    (got,), _ = fast.run_all(x)
    assert max_rel_err(got, want) <= 1e-5


def test_unknown_or_unavailable_kernel_sets_are_refused():
    data = emm.to_bytes(two_task_graph(seed=5))
    with pytest.raises(ValueError, match="unknown kernel set"):
        _runtime.Model(data, kernels="avx1024")
    missing = [k for k in ("sse2", "avx2", "avx512", "neon") if k not in _runtime.kernel_sets()]
    for name in missing:
        with pytest.raises(_runtime.StatusError, match="not available"):
            _runtime.Model(data, kernels=name)
