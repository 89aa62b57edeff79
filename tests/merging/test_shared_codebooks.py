"""Layer-shared codebooks (docs/FORMAT.md "Layer-shared codebooks"): one codebook [1, C, r] for every segment of
a one-tap group, from k-means over all its segment vectors pooled; decoded, executed (numpy, C runtime, the TF
calibration form) and written like per-segment codebooks."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from numeric import max_rel_err
from synthetic_models import chain_model, conv, dense, flatten, gap

from edgemerge.emm.constants import Act, Keys
from edgemerge.emm.graph import decoded_weights
from edgemerge.errors import EdgemergeError
from edgemerge.executors.numpy_exec import execute_graph
from edgemerge.merging import merge
from edgemerge.merging.encode import GroupSpec, encode_groups, pooled_codebook


def manual_decode(codebook, index, depth):
    """W[ky, kx, s·r + j, co] = codebook[0, index[ky, kx, s, co], j], one element at a time."""
    kh, kw, s_count, cout = index.shape
    r = codebook.shape[2]
    w = np.zeros((kh, kw, depth, cout), np.float32)
    for ky, kx, s, co in np.ndindex(kh, kw, s_count, cout):
        for j in range(r):
            if s * r + j < depth:
                w[ky, kx, s * r + j, co] = codebook[0, index[ky, kx, s, co], j]
    return w


def test_shared_group_has_one_codebook_for_every_segment():
    rng = np.random.default_rng(0)
    weights = {"a": rng.normal(size=(1, 1, 30, 17)).astype(np.float32),     # 8 segments, the last short
               "b": rng.normal(size=(1, 1, 22, 9)).astype(np.float32)}
    shared, per_segment = encode_groups([GroupSpec(weights, 4, 16, shared=True), GroupSpec(weights, 4, 16)])
    assert shared.codebook.shape == (1, 16, 4) and per_segment.codebook.shape == (8, 16, 4)
    assert len(shared.segments) == 1 and len(shared.segments[0].labels) == 8 * 17 + 6 * 9
    for name, w in weights.items():
        index = shared.layers[name].index
        assert index.shape == (1, 1, -(-w.shape[2] // 4), w.shape[3]) and int(index.max()) < 16
        np.testing.assert_array_equal(shared.decode(name, w.shape[2]), manual_decode(shared.codebook, index, w.shape[2]))
        # 16 codewords for all segments fit worse than 16 per segment, but still approximate
        assert per_segment.layers[name].relative_error < shared.layers[name].relative_error < 0.9


def test_shared_group_is_exact_with_few_distinct_vectors():
    rng = np.random.default_rng(1)
    words = rng.normal(size=(5, 3)).astype(np.float32)
    # every segment vector is one of 5 words, the last (cut to 2 channels, zero-padded) one of 5 others
    w = words[rng.integers(0, 5, size=(4, 7))].transpose(0, 2, 1).reshape(12, 7)
    w = np.ascontiguousarray(w[:11])
    (group,) = encode_groups([GroupSpec({"fc": w}, 3, 10, shared=True)])
    assert group.layers["fc"].relative_error == 0.0
    np.testing.assert_array_equal(group.decode("fc", 11), w)


def test_pooled_fit_on_a_seeded_sample_assigns_every_vector_its_nearest_codeword():
    vectors = np.random.default_rng(2).normal(size=(600, 4))
    first = pooled_codebook(vectors, 16, (5, 6), max_fit=100)
    again = pooled_codebook(vectors, 16, (5, 6), max_fit=100)
    np.testing.assert_array_equal(first.labels, again.labels)
    np.testing.assert_array_equal(first.codewords, again.codewords)
    distances = ((vectors[:, None, :] - first.codewords[None].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_array_equal(first.labels, distances.argmin(1))
    assert first.inertia == pytest.approx(float(distances.min(1).sum()))
    other = pooled_codebook(vectors, 16, (7, 6), max_fit=100)        # another sample, another fit
    assert not np.array_equal(other.codewords, first.codewords)


def mobilenet_like(task="m", seed=3):
    """A MobileNetV2-ish chain: narrow 1x1 project convs (Cout 16, 12) after wide expand convs, a small 1x1
    (tiny), a dense layer and the head."""
    return chain_model(task, (6, 6, 3), [
        conv("stem", 16, kernel=3, stride=2, act=Act.RELU6), conv("expand", 192, kernel=1, act=Act.RELU6),
        conv("project", 16, kernel=1, act=Act.NONE), conv("expand2", 96, kernel=1, act=Act.RELU6),
        conv("project2", 12, kernel=1, act=Act.NONE), conv("tiny", 8, kernel=1, act=Act.NONE), gap(), flatten(),
        dense("fc", 40), dense("head", 5, act=Act.NONE)], seed=seed)


def test_accu_shares_codebooks_of_pointwise_groups_that_cost_more_than_an_eighth():
    model = mobilenet_like()
    result = merge.merge_models({"m": model}, preset="accu", kmeans_inits=1)
    report = {r.members[0].split(":")[1]: r for r in result.report}
    shared = {name for name, r in report.items() if r.shared_codebook}
    # project convs (Cout 16, 12): a per-segment codebook of min(C, Cout) codewords costs about the weights;
    # expand (Cin 16 -> 192) and expand2 more than an eighth. Not shared: the stem (3x3), `tiny` (a 1 KiB
    # per-segment codebook: under ONE_TAP_SHARED_FROM_BYTES), fc (dense: accu shares 1x1 convs only)
    assert shared == {"expand", "project", "expand2", "project2"}
    for name in shared:
        r = report[name]
        assert (r.seg_len, r.codebook_bytes) == (4, 4 * 4 * r.codewords)
        assert r.codewords == min(256, model.layer(name).weights.size // 4)   # C clipped to the pooled vectors
    assert result.graph.metadata[Keys.Merge.SHARED_CODEBOOKS].split(",") == [
        g.name for g, r in zip(result.groups, result.report) if r.shared_codebook]
    for node in result.graph.nodes:
        if node.name.split("/")[1] in shared:
            codebook = result.graph.tensors[node.weight].array
            assert codebook.shape == (1, node.codewords, node.seg_len)
            index = result.graph.tensors[node.index].array
            depth = result.graph.value_shape(node.input)[2]
            want = manual_decode(codebook, index if index.ndim == 4 else index[None, None], depth)
            np.testing.assert_array_equal(decoded_weights(result.graph, node), want.reshape(decoded_weights(
                result.graph, node).shape))


def test_dense_groups_are_shared_only_with_one_tap_shared_dense(monkeypatch):
    # In 256 -> 40: a 40 KiB per-segment codebook (16 segments x 40 codewords x 16) for 40 KiB of weights
    model = chain_model("d", (4, 4, 16), [flatten(), dense("fc", 40), dense("head", 3, act=Act.NONE)])
    monkeypatch.setitem(merge.PRESETS, "test-dense", dataclasses.replace(merge.PRESETS["accu"],
                                                                         one_tap_shared_dense=True))
    (accu,) = merge.merge_models({"d": model}, preset="accu", kmeans_inits=1).report
    (dense_too,) = merge.merge_models({"d": model}, preset="test-dense", kmeans_inits=1).report
    assert (accu.seg_len, accu.codewords, accu.shared_codebook) == (16, 40, False)
    assert (dense_too.seg_len, dense_too.codewords, dense_too.shared_codebook) == (4, 256, True)
    assert dense_too.codebook_bytes == 4 * 256 * 4 < accu.codebook_bytes


def test_without_the_preset_field_nothing_is_shared():
    assert merge.PRESETS["light4"].one_tap_shared is None            # int8 tables with sharing: not measured
    result = merge.merge_models({"m": mobilenet_like()}, preset="light4", kmeans_inits=1)
    assert not any(r.shared_codebook for r in result.report)
    assert Keys.Merge.SHARED_CODEBOOKS not in result.graph.metadata
    assert all(result.graph.tensors[n.weight].array.shape[0] >= 1 for n in result.graph.nodes if n.codewords)


@pytest.mark.parametrize("kernel_model", ["dense", "pointwise"])
def test_capped_one_tap_codebooks_are_not_shared(kernel_model, monkeypatch):
    # the bundled words model's dense layer (1024 -> 256), and a 1x1 conv of that size: the capped
    # per-segment codebook is exactly an eighth of the weights, so even a preset sharing dense groups leaves
    # them (and the bundled example's merge) as they were
    monkeypatch.setitem(merge.PRESETS, "test-dense", dataclasses.replace(merge.PRESETS["accu"],
                                                                         one_tap_shared_dense=True))
    layers = ([flatten(), dense("fc", 256)] if kernel_model == "dense" else
              [conv("fc", 256, kernel=1), gap(), flatten()])
    shape = (4, 4, 64) if kernel_model == "dense" else (2, 2, 1024)
    model = chain_model("w", shape, layers + [dense("head", 3, act=Act.NONE)])
    result = merge.merge_models({"w": model}, preset="test-dense", kmeans_inits=1)
    fc = next(r for r in result.report if r.members == ["w:fc"])
    assert (fc.codewords, fc.shared_codebook) == (32, False) and fc.codebook_bytes == fc.original_bytes // 8


def test_layer_rc_chooses_a_shared_codebook():
    result = merge.merge_models({"m": mobilenet_like()}, layer_rc={"project": (4, 32, True), "fc": (8, 16)},
                                kmeans_inits=1)
    report = {r.members[0].split(":")[1]: r for r in result.report}
    assert (report["project"].seg_len, report["project"].codewords, report["project"].shared_codebook) == (4, 32, True)
    assert (report["fc"].seg_len, report["fc"].codewords, report["fc"].shared_codebook) == (8, 16, False)
    with pytest.raises(EdgemergeError, match="expected \\(r, C\\) or \\(r, C, shared\\)"):
        merge.merge_models({"m": mobilenet_like()}, layer_rc={"project": (4, 32, "yes")}, kmeans_inits=1)


def test_shared_codebooks_run_alike_in_numpy_c_runtime_and_tf(tmp_path):
    runtime = pytest.importorskip("edgemerge.runtime")
    if runtime._runtime is None:
        pytest.skip("the C runtime module is not built")
    from edgemerge import emm

    model = mobilenet_like()
    result = merge.merge_models({"m": model}, preset="accu", kmeans_inits=1)
    assert any(r.shared_codebook for r in result.report)
    path = tmp_path / "m.emm"
    emm.write_emm(result.graph, path)
    back = emm.read_emm(path.read_bytes())
    x = np.random.default_rng(4).normal(size=(4, *model.input_shape)).astype(np.float32)
    want = execute_graph(result.graph, "m", x)
    np.testing.assert_array_equal(execute_graph(back, "m", x), want)
    assert max_rel_err(runtime.Runtime(path).run("m", x), want) < 1e-4

    # inspect tells layer-shared codebooks from per-segment ones, in JSON and in the table ("L")
    from cli_runner import run_cli

    from edgemerge.measure.inspect_model import describe
    layers = {layer["name"]: layer for layer in describe(path)["layers"]}
    shared_names = {f"m/{r.name}" for r in result.report if r.shared_codebook}
    lut_names = {name for name, layer in layers.items() if "r" in layer}
    assert shared_names and lut_names - shared_names
    assert {name for name in lut_names if layers[name]["layer_shared_codebook"]} == shared_names
    table = run_cli("inspect", path)
    assert table.returncode == 0, table.stderr
    marked = {line.split()[1] for line in table.stdout.splitlines() if " L " in line and "LUT_" in line}
    assert marked == shared_names
    assert f"layer-shared codebooks (L: one [1, C, r] codebook for all segments of the layer): {len(shared_names)}" \
        in table.stdout

    pytest.importorskip("tensorflow")
    from edgemerge.training.tf_form import TFMergedGraph

    form = TFMergedGraph(result.graph)
    for i, node in enumerate(result.graph.nodes):
        if node.codewords and result.graph.tensors[node.weight].array.shape[0] == 1:
            np.testing.assert_allclose(form.weights(i).numpy(), decoded_weights(result.graph, node), rtol=0, atol=0)


def test_cli_layer_rc_shared_syntax(tmp_path):
    import tflite_craft
    from cli_runner import run_cli

    models = []
    for task in ("a", "b"):
        path = tmp_path / f"{task}.tflite"
        path.write_bytes(tflite_craft.dense_model())
        models.append(f"{task}={path}")
    bad = run_cli("merge", *models, "-o", tmp_path / "m.emm", "--layer-rc", "x=4/64/sharde")
    assert bad.returncode == 1 and "expected NAME=r/C or NAME=r/C/shared" in bad.stderr
    # accepted and handed to the merger, which looks the name up
    good_syntax = run_cli("merge", *models, "-o", tmp_path / "m.emm", "--layer-rc", "zz=4/64/shared")
    assert good_syntax.returncode == 1 and "layer_rc 'zz': no merged layer" in good_syntax.stderr, good_syntax.stderr
    assert not (tmp_path / "m.emm").exists()


# -- light's rules for MobileNetV2-size graphs (issue 15): shared codebooks wherever smaller, encoded big heads --
def test_light_shares_one_tap_groups_wherever_that_takes_fewer_bytes():
    preset = merge.PRESETS["light"]
    assert preset.one_tap_shared_when_smaller and preset.one_tap_shared == (4, 64)
    model = mobilenet_like()
    result = merge.merge_models({"m": model}, preset="light", kmeans_inits=1)
    report = {r.members[0].split(":")[1]: r for r in result.report}
    for name, r in report.items():
        layer = model.layer(name)
        one_tap = layer.weights.ndim == 2 or layer.weights.shape[:2] == (1, 1)
        if not one_tap or layer.kind == "dense":
            assert not r.shared_codebook, name          # the 3x3 stem, the dense layer and the head
            continue
        # the setting written is the smaller of the two, counting codebook and index bytes
        vectors = layer.weights.size // layer.depth
        shared = 4 * 4 * 64 + (vectors * -(-layer.depth // 4) * 6 + 7) // 8
        rc = merge.preset_rc(preset, result.groups[list(report).index(name)], {"m": model})
        per_segment = 4 * -(-layer.depth // rc[0]) * rc[1] * rc[0] + (
            vectors * -(-layer.depth // rc[0]) * merge.index_bits(rc[1]) + 7) // 8
        assert r.shared_codebook == (shared < per_segment), (name, shared, per_segment)
        assert r.bytes == (shared if r.shared_codebook else per_segment)


@pytest.mark.parametrize("inputs, encoded", [(1280, True), (1024, False)])
def test_light_encodes_heads_of_at_least_48_kib(tmp_path, inputs, encoded):
    model = chain_model("h", (1, 1, inputs), [flatten(), dense("head", 10, act=Act.NONE)])
    result = merge.merge_models({"h": model}, preset="light", kmeans_inits=1)
    head = next(n for n in result.graph.nodes if n.name == "h/head")
    assert (head.op == merge.Op.LUT_DENSE) == encoded and (4 * inputs * 10 >= merge.HEAD_ENCODE_FROM_BYTES) == encoded
    if not encoded:
        assert not result.report
        return
    (group,) = result.report
    assert (group.name, group.kind, group.seg_len, group.codewords, group.shared_codebook) == ("h:head", "dense", 4, 64,
                                                                                            True)
    assert result.graph.tensors[head.weight].array.shape == (1, 64, 4)
    assert group.bytes == 4 * 64 * 4 + 320 * 10 * 6 // 8 < group.original_bytes // 8
    runtime = pytest.importorskip("edgemerge.runtime")
    if runtime._runtime is None:
        pytest.skip("the C runtime module is not built")
    from edgemerge import emm

    emm.write_emm(result.graph, tmp_path / "h.emm")
    x = np.random.default_rng(5).normal(size=(3, 1, 1, inputs)).astype(np.float32)
    assert max_rel_err(runtime.Runtime(tmp_path / "h.emm").run("h", x), execute_graph(result.graph, "h", x)) < 1e-4


def test_the_new_light_rules_leave_a_model_without_pointwise_depthwise_or_big_head_alone(monkeypatch):
    """The bundled LeNet + words pair has only 3x3/5x5 convs, dense layers and heads under 48 KiB: light gives
    the same bytes with and without the rules added for MobileNetV2 (shared when smaller, depthwise, head)."""
    from synthetic_models import lenet_like

    from edgemerge.emm.writer import to_bytes

    monkeypatch.setitem(merge.PRESETS, "light-before", dataclasses.replace(
        merge.PRESETS["light"], one_tap_shared=(4, 256), one_tap_shared_when_smaller=False, depthwise=None, head=None))
    sources = {"a": lenet_like("a"), "b": lenet_like("b", seed=3, classes=6)}
    now = merge.merge_models(sources, preset="light", kmeans_inits=1)
    before = merge.merge_models(sources, preset="light-before", kmeans_inits=1)
    now.graph.metadata.pop(Keys.Merge.PRESET)
    before.graph.metadata.pop(Keys.Merge.PRESET)
    assert to_bytes(now.graph) == to_bytes(before.graph)
