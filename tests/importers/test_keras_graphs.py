"""The Keras importer on functional graphs: keras.applications MobileNetV2 (alpha and input size varied), a
ResNet-8 with projection shortcuts and a squeeze-and-excite net import as they are and compute what Keras
computes; BatchNorm / ZeroPadding2D / activations fold only where the graph allows; what cannot be imported is
named with its layer and type."""
from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import model_factory  # noqa: E402
import residual_nets  # noqa: E402
from keras import layers as L  # noqa: E402

from edgemerge import emm  # noqa: E402
from edgemerge.emm.constants import Act  # noqa: E402
from edgemerge.errors import ModelFormatError, UnsupportedLayerError  # noqa: E402
from edgemerge.executors.keras_reference import build_source_keras  # noqa: E402
from edgemerge.executors.numpy_exec import forward_numpy  # noqa: E402
from edgemerge.importers import load_source_model  # noqa: E402
from edgemerge.importers.source_model import MODEL_INPUT  # noqa: E402
from edgemerge.merging.convert import convert_model  # noqa: E402
from edgemerge.runtime import Runtime  # noqa: E402


def max_rel_err(got, want) -> float:
    return float(np.max(np.abs(np.asarray(got, np.float64) - want)) / np.max(np.abs(want)))


def save(model, tmp_path, name="m"):
    path = tmp_path / f"{name}.keras"
    model.save(path)
    return path


def samples(shape, n=2, seed=1):
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32)


@pytest.mark.parametrize("size, alpha", [(32, 1.0), (75, 0.35), pytest.param(224, 1.0, marks=pytest.mark.slow)])
def test_mobilenet_v2_of_any_size_imports_and_runs(tmp_path, size, alpha):
    model = residual_nets.mobilenet_v2((size, size, 3), alpha=alpha, classes=7, seed=size)
    source = load_source_model(save(model, tmp_path))
    kinds = [layer.kind for layer in source.layers]
    assert kinds.count("add") == 10 and kinds.count("depthwise") == 17
    assert "pad" not in kinds                         # every ZeroPadding2D folded into its stride-2 depthwise
    assert source.head_activation == "softmax" and source.output_shape == (1, 1, 7)
    x = samples((size, size, 3))
    want = residual_nets.logits_model(model).predict(x, verbose=0)
    path = tmp_path / "m.emm"
    emm.write_emm(convert_model(source), path)        # the C runtime: fast enough for 224 px
    runtime = Runtime(path)
    assert max_rel_err(runtime.run(runtime.tasks[0].name, x), want) <= 1e-4


def test_resnet8_structure_and_numerics(tmp_path):
    model = residual_nets.resnet8()
    source = load_source_model(save(model, tmp_path))
    assert sorted(layer.name for layer in source.layers if layer.kind == "conv") == sorted([
        "stem_conv", "s1_conv1", "s1_conv2", "s2_conv1", "s2_conv2", "s2_proj", "s3_conv1", "s3_conv2", "s3_proj"])
    assert not [layer for layer in source.layers if layer.kind not in ("conv", "add", "global_avg_pool", "dense")]
    proj = source.layer("s2_proj")
    assert proj.stride == (2, 2) and proj.kernel == (1, 1) and proj.fused == ("s2_proj_bn",)
    assert proj.match_output == "s2_proj_bn"
    add = source.layer("s2_add")
    assert add.activation == Act.RELU and add.fused == ("s2_out",) and add.match_output == "s2_out"
    assert set(add.inputs) == {"s2_proj", "s2_conv2"}
    assert source.layer("s1_add").inputs == ("stem_conv", "s1_conv2")   # the identity shortcut
    assert source.layer("stem_conv").activation == Act.RELU
    x = samples((32, 32, 3), n=3)
    want = residual_nets.logits_model(model).predict(x, verbose=0)
    assert max_rel_err(forward_numpy(source, x), want) <= 1e-5


def test_se_net_joins_activations_and_pads(tmp_path):
    model = residual_nets.se_net()
    source = load_source_model(save(model, tmp_path))
    kinds = {layer.name: layer.kind for layer in source.layers}
    assert kinds["cat"] == "concat" and kinds["excite"] == "mul" and kinds["gate"] == "mul"
    assert kinds["pad_pool"] == "pad"                 # before a max pool: an explicit PAD
    assert "pad_conv" not in kinds and source.layer("conv1").pads == (1, 1, 0, 0)
    assert source.layer("conv1").activation == Act.HARD_SWISH          # BN folded, hard-swish fused
    assert source.layer("se_expand").activation == Act.HARD_SIGMOID
    assert source.layer("branch_a").activation == Act.SWISH
    assert source.layer("gate").inputs == ("excite", "gate_dense")     # map first, (1, 1, C) gate second
    x = samples((16, 16, 3), n=3)
    assert max_rel_err(forward_numpy(source, x), model.predict(x, verbose=0)) <= 1e-5


@pytest.mark.parametrize("build", [residual_nets.resnet8, residual_nets.se_net])
def test_build_source_keras_rebuilds_the_graph(tmp_path, build):
    model = build()
    source = load_source_model(save(model, tmp_path))
    rebuilt, outputs = build_source_keras(source)
    x = samples(source.input_shape, n=3)
    assert max_rel_err(rebuilt.predict(x, verbose=0), model.predict(x, verbose=0)) <= 1e-5
    name = source.layers[2].match_output
    probe = keras.Model(rebuilt.inputs, outputs[name])
    original = keras.Model(model.inputs, model.get_layer(name).output)
    assert max_rel_err(probe.predict(x, verbose=0), original.predict(x, verbose=0)) <= 1e-5


def test_a_pad_that_cannot_fold_stays_a_pad_layer(tmp_path):
    x_in = keras.Input((6, 6, 2))
    y = L.ZeroPadding2D(1, name="zp")(x_in)
    y = L.Conv2D(3, 1, name="pointwise")(y)            # pads 1 >= kernel 1: not foldable -> 8x8x3
    a = L.ZeroPadding2D(1, name="shared_pad")(x_in)
    b = L.Conv2D(3, 3, name="c1")(a)
    c = L.Conv2D(3, 3, name="c2")(a)                   # the pad has two readers: not foldable
    z = L.ZeroPadding2D(1, name="pad_sum")(L.Add(name="sum")([b, c]))    # read by a concat -> 8x8x3
    y = L.Concatenate(name="cat")([y, z])
    model = keras.Model(x_in, L.Dense(2, name="d")(L.Flatten(name="f")(y)))
    source = load_source_model(save(model, tmp_path))
    kinds = {layer.name: layer.kind for layer in source.layers}
    assert kinds["zp"] == "pad" and kinds["shared_pad"] == "pad" and kinds["pad_sum"] == "pad"
    x = samples((6, 6, 2))
    assert max_rel_err(forward_numpy(source, x), model.predict(x, verbose=0)) <= 1e-5


def _residual(tail):
    x_in = keras.Input((8, 8, 3))
    a = L.Conv2D(4, 3, padding="same", name="a")(x_in)
    b = L.Conv2D(4, 3, padding="same", name="b")(x_in)
    return keras.Model(x_in, tail(a, b))


REFUSED = {
    "bn_after_add": (lambda: _residual(lambda a, b: L.BatchNormalization(name="bn")(L.Add(name="sum")([a, b]))),
                     "layer 'bn' of type BatchNormalization: cannot be folded: it follows layer 'sum' (add)"),
    "bn_on_shared_conv": (lambda: _residual(lambda a, b: L.Add(name="sum")([L.BatchNormalization(name="bn")(a), a])),
                          "layer 'bn' of type BatchNormalization: cannot be folded: the output of 'a' also feeds sum"),
    "concat_axis": (lambda: _residual(lambda a, b: L.Concatenate(axis=1, name="cat")([a, b])),
                    "layer 'cat' of type Concatenate: concatenation over axis 1"),
    "mul_broadcast": (lambda: _residual(lambda a, b: L.Multiply(name="m")([a, L.Conv2D(1, 1, name="one")(b)])),
                      "layer 'm' of type Multiply: multiplies inputs of shapes (8, 8, 4) and (8, 8, 1)"),
    "rescaling": (lambda: _residual(lambda a, b: L.Rescaling(0.5, name="r")(L.Add(name="sum")([a, b]))),
                  "layer 'r' of type Rescaling: scale 0.5"),
    "upsampling": (lambda: _residual(lambda a, b: L.UpSampling2D(name="up")(L.Add(name="sum")([a, b]))),
                   "layer 'up' of type UpSampling2D is not supported (supported: Conv2D"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_what_cannot_be_imported_is_named(tmp_path, case):
    build, fragment = REFUSED[case]
    model_factory.refused_on_import(build(), tmp_path, case, fragment)


def test_identity_rescaling_and_dropout_are_nothing(tmp_path):
    model = _residual(lambda a, b: L.Dense(2, name="d")(L.Flatten(name="f")(L.Dropout(0.5)(
        L.Rescaling(1.0, name="r")(L.Add(name="sum")([a, b]))))))
    source = load_source_model(save(model, tmp_path))
    assert [layer.kind for layer in source.layers] == ["conv", "conv", "add", "flatten", "dense"]
    assert source.layers[0].inputs == () and source.layer("b").inputs == (MODEL_INPUT,)


def test_nested_models_are_refused_by_type(tmp_path):
    inner_in = keras.Input((8, 8, 3))
    inner = keras.Model(inner_in, L.Conv2D(2, 3, name="ic")(inner_in), name="backbone")
    x_in = keras.Input((8, 8, 3))
    model = keras.Model(x_in, L.Dense(2)(L.Flatten()(inner(x_in))))
    with pytest.raises((UnsupportedLayerError, ModelFormatError), match="backbone"):
        load_source_model(save(model, tmp_path))


def test_residual_keras_models_of_different_architectures_merge_and_run(tmp_path):
    """merge_files on two functional Keras files (ResNet-8 with projection shortcuts, MobileNetV2): the merged
    DAG runs in the C runtime and equals the numpy executor of the same graph."""
    from edgemerge import emm
    from edgemerge.executors.numpy_exec import execute_graph
    from edgemerge.runtime import Runtime
    from edgemerge.workflows.pipeline import merge_files

    a = save(residual_nets.resnet8(), tmp_path, "resnet8")
    b = save(residual_nets.mobilenet_v2(), tmp_path, "mnv2")
    out = tmp_path / "m.emm"
    merge_files({"a": a, "b": b}, out, preset="light")
    graph = emm.read_emm(out)
    assert {n.op.name for n in graph.nodes} >= {"ADD", "LUT_CONV2D"}
    rt = Runtime(out)
    for task in ("a", "b"):
        x = np.random.default_rng(3).random((2, *rt.task(task).input_shape), dtype=np.float32)
        ref = execute_graph(graph, task, x)
        got = rt.run(task, x)
        assert np.max(np.abs(got - ref)) <= 1e-4 * max(1.0, float(np.max(np.abs(ref))))
