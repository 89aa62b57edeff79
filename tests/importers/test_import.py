"""The Keras importer: numerics against Keras, BatchNorm folding, TensorFlow 'same' padding, fused
activations, and the errors for everything it does not support."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import model_factory  # noqa: E402
from model_factory import keras_logits  # noqa: E402

from edgemerge.emm.constants import Act  # noqa: E402
from edgemerge.errors import EdgemergeError, ModelFormatError  # noqa: E402
from edgemerge.executors.numpy_exec import forward_numpy  # noqa: E402
from edgemerge.importers import load_source_model, same_padding  # noqa: E402
from numeric import max_rel_err  # noqa: E402

L = keras.layers


def save(model, directory: Path, name: str, suffix: str = ".keras") -> Path:
    path = directory / f"{name}{suffix}"
    model.save(path)
    return path


# -- trained models ------------------------------------------------------------------------------
@pytest.mark.parametrize("task", list(model_factory.TASKS))
def test_import_matches_keras_before_softmax(trained_model_paths, source_models, task):
    model = keras.models.load_model(trained_model_paths[task], compile=False)
    x, _ = model_factory.task_data(task)
    x = x[:300]
    expected = keras_logits(model, x)
    got = forward_numpy(source_models[task], x)
    assert got.shape == expected.shape
    assert max_rel_err(got, expected) <= 1e-4


def test_lenet_sequential_layers(trained_model_paths, source_models):
    sm = source_models["fashion"]
    model = keras.models.load_model(trained_model_paths["fashion"], compile=False)
    assert sm.name == trained_model_paths["fashion"].stem
    assert sm.input_shape == (28, 28, 1)
    assert sm.param_bytes == 4 * model.count_params()
    assert sm.head_activation == "softmax"
    assert [(l.name, l.kind) for l in sm.layers] == [
        ("conv1", "conv"), ("pool1", "max_pool"), ("conv2", "conv"), ("pool2", "max_pool"),
        ("flatten", "flatten"), ("fc1", "dense"), ("fc2", "dense")]      # Dropout dropped
    conv2 = sm.layer("conv2")
    assert conv2.fused == ("bn2", "relu2") and conv2.activation == Act.RELU
    assert conv2.bias is not None                      # the bias-free conv gets BatchNorm's bias
    assert conv2.match_output == "relu2"
    assert sm.layer("fc2").match_output == ""          # its Keras output is after the softmax
    assert sm.layer("fc2").activation == Act.NONE
    for before, after in zip(sm.layers, sm.layers[1:]):
        assert before.out_shape == after.in_shape
    assert sm.layer("flatten").out_shape == (1, 1, 256)
    assert sm.layer("fc1").weights.shape == (256, 64) and sm.layer("fc1").weights.dtype == np.float32


def test_mobile_functional_h5_layers(trained_model_paths, source_models):
    sm = source_models["flipped"]
    assert trained_model_paths["flipped"].suffix == ".h5"
    assert sm.head_activation == "softmax"
    c1, dw1 = sm.layer("c1"), sm.layer("dw1")
    assert c1.stride == (2, 2) and c1.pads == (0, 0, 1, 1) and c1.out_shape == (14, 14, 12)
    assert c1.activation == Act.RELU6 and c1.fused == ("c1_bn", "c1_relu6")
    assert dw1.kind == "depthwise" and dw1.weights.shape == (3, 3, 12, 2) and dw1.out_shape == (14, 14, 24)
    assert dw1.activation == Act.RELU6 and dw1.fused == ("dw1_bn", "dw1_relu6")
    assert sm.layer("avg1").pads == (0, 0, 1, 1) and sm.layer("avg1").out_shape == (7, 7, 24)
    assert sm.layer("max2").pads == (0, 0, 1, 1) and sm.layer("max2").out_shape == (4, 4, 32)
    assert sm.layer("gap").out_shape == (1, 1, 32)
    assert "probs" not in [l.name for l in sm.layers]
    assert sm.layer("d2").match_output == "d2"         # the softmax was a layer of its own


def test_valid_sequential_standalone_activation(source_models):
    sm = source_models["transposed"]
    assert sm.head_activation == "linear"
    assert [l.kind for l in sm.layers] == ["conv", "conv", "avg_pool", "activation", "flatten", "dense",
                                           "dense", "dense"]
    assert sm.layer("a2_relu").activation == Act.RELU     # after a pool: its own layer
    assert sm.layer("a2_flat").out_shape == (1, 1, 300)   # Reshape((-1,)) is a flatten
    assert sm.layer("a3").activation == Act.RELU6


# -- padding and odd shapes -------------------------------------------------------------------------
@pytest.mark.parametrize("size,kernel,stride,expected", [
    (28, 3, 2, (0, 1)), (28, 3, 1, (1, 1)), (11, 4, 2, (1, 2)), (10, 4, 1, (1, 2)), (7, 2, 2, (0, 1)),
    (8, 2, 2, (0, 0)), (5, 1, 3, (0, 0)), (9, 5, 3, (1, 1)), (9, 4, 3, (0, 1)),
])
def test_same_padding_is_tensorflows(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected
    # and TensorFlow agrees: 'same' equals explicit zero padding + 'valid'
    rng = np.random.default_rng(size * 100 + kernel * 10 + stride)
    x = rng.normal(size=(1, size, size, 2)).astype(np.float32)
    w = rng.normal(size=(kernel, kernel, 2, 3)).astype(np.float32)
    same = keras.ops.conv(x, w, strides=stride, padding="same")
    a, b = expected
    valid = keras.ops.conv(np.pad(x, ((0, 0), (a, b), (a, b), (0, 0))), w, strides=stride, padding="valid")
    np.testing.assert_allclose(np.asarray(same), np.asarray(valid), rtol=1e-5, atol=1e-5)


def odd_shapes_model():
    inputs = keras.Input((11, 10, 3))
    x = L.Conv2D(5, (4, 3), strides=(2, 1), padding="same", activation="relu", name="conv_a")(inputs)
    x = L.ReLU(max_value=6, name="conv_a_relu6")(x)                # relu then relu6 -> relu6
    x = L.MaxPooling2D(3, strides=2, padding="same", name="max_a")(x)
    x = L.AveragePooling2D((2, 3), strides=(1, 2), padding="same", name="avg_a")(x)
    x = L.DepthwiseConv2D((3, 2), strides=2, padding="same", depth_multiplier=3, use_bias=False, name="dw_a")(x)
    x = L.BatchNormalization(name="dw_a_bn")(x)
    x = L.Activation("linear", name="noop")(x)
    x = L.Conv2D(4, 1, use_bias=False, name="conv_b")(x)
    x = L.BatchNormalization(center=False, name="conv_b_bn")(x)    # no beta
    x = L.Flatten(name="flat")(x)
    x = L.Dense(6, name="fc_a")(x)
    x = L.BatchNormalization(scale=False, name="fc_a_bn")(x)       # no gamma
    x = L.Activation("relu", name="fc_a_relu")(x)
    x = L.Dense(4, activation="softmax", name="head")(x)
    model = keras.Model(inputs, x)
    model_factory.randomise(model, biases=False)
    return model


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_odd_shapes_match_keras(tmp_path, suffix):
    keras.utils.set_random_seed(1)
    model = odd_shapes_model()
    sm = load_source_model(save(model, tmp_path, "odd", suffix))
    conv_a = sm.layer("conv_a")
    assert conv_a.pads == (1, 1, 2, 1) and conv_a.out_shape == (6, 10, 5)
    assert conv_a.activation == Act.RELU6 and conv_a.fused == ("conv_a_relu6",)
    dw = sm.layer("dw_a")
    assert dw.weights.shape == (3, 2, 5, 3) and dw.bias is not None and dw.out_shape[2] == 15
    assert [l.name for l in sm.layers] == ["conv_a", "max_a", "avg_a", "dw_a", "conv_b", "flat", "fc_a", "head"]
    assert sm.layer("fc_a").activation == Act.RELU and sm.layer("fc_a").match_output == "fc_a_relu"
    x = np.random.default_rng(2).normal(size=(16, 11, 10, 3)).astype(np.float32)
    assert max_rel_err(forward_numpy(sm, x), keras_logits(model, x)) <= 1e-4


def test_sequential_h5_with_softmax_layer(tmp_path):
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((10, 9, 2)), L.Conv2D(4, 3, strides=2, padding="same", name="c"),
                              L.ReLU(max_value=6.0, name="r6"), L.Flatten(name="f"), L.Dense(3, name="d"),
                              L.Dropout(0.5, name="drop"), L.Softmax(name="sm")])
    sm = load_source_model(save(model, tmp_path, "seq", ".h5"))
    assert [l.name for l in sm.layers] == ["c", "f", "d"] and sm.head_activation == "softmax"
    assert sm.layer("c").activation == Act.RELU6 and sm.layer("c").pads == (0, 1, 1, 1)   # h 10, w 9
    x = np.random.default_rng(3).normal(size=(6, 10, 9, 2)).astype(np.float32)
    assert max_rel_err(forward_numpy(sm, x), keras_logits(keras.Model(model.inputs, model.layers[-3].output), x)) <= 1e-4


# -- BatchNorm folding ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["conv", "depthwise", "dense"])
def test_batch_norm_folding_formula(tmp_path, kind):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((6, 6, 4))
    if kind == "conv":
        layer = L.Conv2D(5, 3, name="w")
    elif kind == "depthwise":
        layer = L.DepthwiseConv2D(3, depth_multiplier=2, name="w")
    else:
        layer = L.Dense(5, name="w")
    x = layer(L.Flatten()(inputs) if kind == "dense" else inputs)
    x = L.BatchNormalization(epsilon=0.01, name="bn")(x)
    model = keras.Model(inputs, x)
    model_factory.randomise(model, seed=4, biases=False)
    w, b = [np.asarray(v, np.float64) for v in layer.get_weights()]
    gamma, beta, mean, var = [np.asarray(v, np.float64) for v in model.get_layer("bn").get_weights()]
    scale = gamma / np.sqrt(var + 0.01)
    expected_w = w * (scale.reshape(w.shape[2], w.shape[3]) if kind == "depthwise" else scale)
    expected_b = (b - mean) * scale + beta

    sm = load_source_model(save(model, tmp_path, f"bn_{kind}"))
    folded = sm.layer("w")
    assert folded.fused == ("bn",) and folded.match_output == "bn"
    np.testing.assert_allclose(folded.weights, expected_w, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(folded.bias, expected_b, rtol=1e-6, atol=1e-7)
    x = np.random.default_rng(5).normal(size=(8, 6, 6, 4)).astype(np.float32)
    assert max_rel_err(forward_numpy(sm, x), keras_logits(model, x)) <= 1e-4


# -- unsupported layers ---------------------------------------------------------------------------
def _chain(*layers_, shape=(12, 12, 2)):
    return keras.Sequential([keras.Input(shape), *layers_])


UNSUPPORTED = {
    # case: (model builder, expected fragment of the message)
    "leaky_relu": (lambda: _chain(L.Conv2D(3, 3), L.LeakyReLU(name="leaky")),
                   "layer 'leaky' of type LeakyReLU is not supported (supported: Conv2D, DepthwiseConv2D"),
    "separable": (lambda: _chain(L.SeparableConv2D(3, 3, name="sep")),
                  "layer 'sep' of type SeparableConv2D is not supported"),
    "global_max": (lambda: _chain(L.Conv2D(3, 3), L.GlobalMaxPooling2D(name="gmp"), L.Dense(2)),
                   "layer 'gmp' of type GlobalMaxPooling2D is not supported"),
    "upsampling": (lambda: _chain(L.UpSampling2D(name="up")), "layer 'up' of type UpSampling2D is not supported"),
    "tanh": (lambda: _chain(L.Conv2D(3, 3, activation="tanh", name="c")),
             "layer 'c' of type Conv2D: activation 'tanh' is not supported"),
    # sigmoid became supported with format v2 (issue 15); elu stands in for an unsupported activation layer
    "elu_layer": (lambda: _chain(L.Conv2D(3, 3), L.Activation("elu", name="act")),
                  "layer 'act' of type Activation: activation 'elu' is not supported"),
    "dilation": (lambda: _chain(L.Conv2D(3, 3, dilation_rate=2, name="c")),
                 "layer 'c' of type Conv2D: dilation_rate (2, 2) is not supported"),
    "groups": (lambda: _chain(L.Conv2D(4, 3, groups=2, name="c")), "layer 'c' of type Conv2D: groups=2"),
    "leaky_relu_layer": (lambda: _chain(L.Conv2D(3, 3), L.ReLU(negative_slope=0.1, name="r")),
                         "layer 'r' of type ReLU: negative_slope=0.1"),
    "relu_max3": (lambda: _chain(L.Conv2D(3, 3), L.ReLU(max_value=3.0, name="r")),
                  "layer 'r' of type ReLU: max_value=3.0 is not supported"),
    "bn_first": (lambda: _chain(L.BatchNormalization(name="bn"), L.Conv2D(3, 3)),
                 "layer 'bn' of type BatchNormalization: cannot be folded: it follows the model input"),
    "bn_after_relu": (lambda: _chain(L.Conv2D(3, 3, activation="relu", name="c"), L.BatchNormalization(name="bn")),
                      "layer 'bn' of type BatchNormalization: cannot be folded: it follows layer 'c' (conv)"),
    "bn_after_pool": (lambda: _chain(L.Conv2D(3, 3), L.MaxPooling2D(name="p"), L.BatchNormalization(name="bn")),
                      "cannot be folded: it follows layer 'p' (max_pool)"),
    "softmax_middle": (lambda: _chain(L.Conv2D(3, 3, activation="softmax", name="c"), L.Conv2D(2, 1)),
                       "layer 'c' of type Conv2D: softmax is only supported as the model's last operation"),
    "softmax_layer_middle": (lambda: _chain(L.Conv2D(3, 3), L.Softmax(name="sm"), L.Conv2D(2, 1)),
                             "layer 'sm' of type Softmax: softmax is only supported as the model's last operation"),
    "dense_on_image": (lambda: _chain(L.Dense(3, name="d")),
                       "layer 'd' of type Dense: Dense on a non-flat (12, 12, 2) input is not supported"),
    "reshape_image": (lambda: _chain(L.Reshape((6, 24, 2), name="rs")),
                      "layer 'rs' of type Reshape: Reshape to (6, 24, 2) is not supported"),
    "channels_first": (lambda: _chain(L.Conv2D(3, 3, data_format="channels_first", name="c"), shape=(2, 12, 12)),
                       "layer 'c' of type Conv2D: data_format 'channels_first' is not supported"),
}


@pytest.mark.parametrize("case", list(UNSUPPORTED))
def test_unsupported_layers_are_named(tmp_path, case):
    build, fragment = UNSUPPORTED[case]
    assert isinstance(model_factory.refused_on_import(build(), tmp_path, case, fragment), EdgemergeError)


# -- model structure and files -----------------------------------------------------------------------
def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(ModelFormatError, match="no such file"):
        load_source_model(tmp_path / "nope.keras")
    other = tmp_path / "model.pt"          # .onnx, the earlier example here, is read now (onnx_import)
    other.write_bytes(b"\0")
    with pytest.raises(ModelFormatError, match=r"unsupported file type '\.pt' \(supported: \.keras, \.h5"):
        load_source_model(other)
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip file")
    with pytest.raises(ModelFormatError, match="cannot load as a Keras model"):
        load_source_model(broken)


def test_structure_errors(tmp_path):
    a, b = keras.Input((8, 8, 1)), keras.Input((8, 8, 1))
    two_inputs = keras.Model([a, b], L.Add()([L.Conv2D(2, 3)(a), L.Conv2D(2, 3)(b)]))
    with pytest.raises(ModelFormatError, match="2 inputs"):
        load_source_model(save(two_inputs, tmp_path, "two_inputs"))

    x = L.Conv2D(2, 3, name="trunk")(a)
    two_outputs = keras.Model(a, [L.Conv2D(2, 1)(x), L.Conv2D(3, 1)(x)])
    with pytest.raises(ModelFormatError, match="2 outputs"):
        load_source_model(save(two_outputs, tmp_path, "two_outputs"))

    # a residual join was refused while only chains were supported (issue 15 part 3): it now imports as a DAG
    x = L.Conv2D(1, 3, padding="same", name="trunk")(a)
    residual = keras.Model(a, L.Add(name="add")([x, L.Conv2D(1, 3, padding="same", name="side")(x)]))
    imported = load_source_model(save(residual, tmp_path, "residual"))
    assert [layer.kind for layer in imported.layers] == ["conv", "conv", "add"]
    assert imported.layers[-1].inputs == ("trunk", "side") and not imported.is_chain

    shared = L.Conv2D(1, 3, padding="same", name="shared")
    twice = keras.Model(a, shared(shared(a)))
    with pytest.raises(ModelFormatError, match="'shared' is called 2 times"):
        load_source_model(save(twice, tmp_path, "twice"))
