"""The .tflite importer: Keras models converted by tf.lite.TFLiteConverter (BatchNorm folded by the converter,
depthwise, same/valid, stride 2, Flatten's shape sub-graph, float16 weights) imported and run by
`forward_numpy` against the TFLite interpreter before the softmax; the errors for quantised models and
unsupported operators; and `edgemerge merge` with .tflite inputs end to end."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

from edgemerge.emm.constants import Act  # noqa: E402
from edgemerge.errors import ModelFormatError, UnsupportedLayerError  # noqa: E402
from edgemerge.executors.numpy_exec import forward_numpy  # noqa: E402
from edgemerge.importers import SUPPORTED_SUFFIXES, load_source_model  # noqa: E402
import model_factory  # noqa: E402
from numeric import max_rel_err  # noqa: E402
from tflite_convert import to_tflite  # noqa: E402
from cli_runner import run_cli as cli  # noqa: E402

L = keras.layers


def interpreter_logits(path: Path, x: np.ndarray) -> np.ndarray:
    """The interpreter's output before the final SOFTMAX (its input tensor), else its output, per sample.
    Run without XNNPACK and with all tensors kept, so that the softmax input can be read."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # "preserve_all_tensors is for debugging"
        it = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    last = it._get_ops_details()[-1]
    tensor = last["inputs"][0] if last["op_name"] == "SOFTMAX" else it.get_output_details()[0]["index"]
    out = []
    for sample in x:
        it.set_tensor(it.get_input_details()[0]["index"], sample[None].astype(np.float32))
        it.invoke()
        out.append(it.get_tensor(tensor).reshape(-1).copy())
    return np.stack(out)


def lenet_like():          # valid 5x5, pooling, stride-2 same conv, Flatten (a shape sub-graph), softmax
    return keras.Sequential([keras.Input((28, 28, 1)), L.Conv2D(6, 5, activation="relu"), L.MaxPooling2D(),
                             L.Conv2D(12, 3, strides=2, padding="same", activation="relu"), L.Flatten(),
                             L.Dense(32, activation="relu"), L.Dense(10, activation="softmax")])


def mobile_like():         # BatchNorm folded by the converter, ReLU6, depthwise M=2 stride 2, 1x1, GAP, no softmax
    return keras.Sequential([keras.Input((16, 16, 3)), L.Conv2D(8, 3, padding="same", use_bias=False),
                             L.BatchNormalization(), L.ReLU(6.0),
                             L.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2, use_bias=False),
                             L.BatchNormalization(), L.ReLU(),
                             L.Conv2D(16, 1, activation="relu6"), L.GlobalAveragePooling2D(), L.Dense(5)])


def pools_like():          # odd sizes, same-padded average and max pooling, stride-2 valid conv, Reshape
    return keras.Sequential([keras.Input((15, 13, 2)), L.Conv2D(4, 3, strides=2, activation="relu"),
                             L.AveragePooling2D(3, strides=2, padding="same"), L.MaxPooling2D(2, padding="same"),
                             L.Reshape((-1,)), L.Dense(7, activation="softmax")])


def functional_like():     # the Functional API, a Dense on a Flatten of a 1x1 map, a stand-alone ReLU
    inputs = keras.Input((12, 12, 1))
    x = L.Conv2D(5, 3, padding="valid")(inputs)
    x = L.MaxPooling2D(2)(x)
    x = L.ReLU()(x)
    x = L.Conv2D(6, 5, padding="valid", activation="relu")(x)
    x = L.Flatten()(x)
    outputs = L.Dense(3)(x)
    return keras.Model(inputs, outputs)


ARCHS = {"lenet": lenet_like, "mobile": mobile_like, "pools": pools_like, "functional": functional_like}


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, tuple[object, Path]]:
    directory = tmp_path_factory.mktemp("tflite")
    out = {}
    for i, (name, build) in enumerate(ARCHS.items()):
        keras.utils.set_random_seed(i)
        model = build()
        model_factory.randomise(model, seed=i)
        out[name] = (model, to_tflite(model, directory / f"{name}.tflite"))
    return out


def samples(shape, n=6, seed=1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_import_matches_the_interpreter_before_softmax(converted, arch):
    model, path = converted[arch]
    source = load_source_model(path)
    assert source.input_shape == tuple(model.input_shape[1:])
    x = samples(source.input_shape)
    assert max_rel_err(forward_numpy(source, x), interpreter_logits(path, x)) <= 1e-4


@pytest.mark.parametrize("arch", list(ARCHS))
def test_import_agrees_with_the_keras_import(converted, arch, tmp_path):
    """Same computation as the Keras file of the same model, layer for layer where the kinds agree."""
    model, path = converted[arch]
    model.save(tmp_path / "m.keras")
    from_keras, from_tflite = load_source_model(tmp_path / "m.keras"), load_source_model(path)
    x = samples(from_tflite.input_shape)
    assert max_rel_err(forward_numpy(from_tflite, x), forward_numpy(from_keras, x)) <= 1e-4
    assert from_tflite.head_activation == from_keras.head_activation
    weighted = [(layer.kind, layer.weights.shape) for layer in from_tflite.layers if layer.weights is not None]
    assert weighted == [(layer.kind, layer.weights.shape) for layer in from_keras.layers if layer.weights is not None]


def test_layer_kinds_names_and_parameter_bytes(converted):
    source = load_source_model(converted["mobile"][1])
    assert [layer.kind for layer in source.layers] == ["conv", "depthwise", "conv", "global_avg_pool", "dense"]
    assert [layer.activation for layer in source.layers] == [Act.RELU6, Act.RELU, Act.RELU6, Act.NONE, Act.NONE]
    conv, depthwise = source.layers[0], source.layers[1]
    assert conv.weights.shape == (3, 3, 3, 8) and conv.bias is not None      # BatchNorm folded into a bias
    assert depthwise.weights.shape == (3, 3, 8, 2) and depthwise.stride == (2, 2)
    assert depthwise.pads == (0, 0, 1, 1)                  # "same" on 16 with stride 2: the extra cell after
    names = [layer.name for layer in source.layers]
    assert len(set(names)) == len(names)
    assert all(name and "/" not in name and ";" not in name and ":" not in name for name in names)
    assert names[0].startswith("conv2d") and names[1].startswith("depthwise")
    floats = sum(int(a.size) for layer in source.layers for a in (layer.weights, layer.bias) if a is not None)
    assert source.param_bytes == 4 * floats
    assert source.head_activation == "linear"
    assert all(layer.match_output for layer in source.layers)

    lenet = load_source_model(converted["lenet"][1])
    assert [layer.kind for layer in lenet.layers] == ["conv", "max_pool", "conv", "flatten", "dense", "dense"]
    assert lenet.head_activation == "softmax"
    assert lenet.layers[0].weights.shape == (5, 5, 1, 6)      # [Cout, KH, KW, Cin] -> [KH, KW, Cin, Cout]
    assert lenet.layers[4].weights.shape == (6 * 6 * 12, 32)  # [Out, In] -> [In, Out]


def test_float16_weights_are_widened(converted, tmp_path):
    model, _ = converted["mobile"]
    path = to_tflite(model, tmp_path / "half.tflite", optimise="float16")
    source = load_source_model(path)
    x = samples(source.input_shape)
    assert max_rel_err(forward_numpy(source, x), interpreter_logits(path, x)) <= 1e-4


@pytest.mark.filterwarnings("ignore:Statistics for quantized inputs:UserWarning")
@pytest.mark.parametrize("optimise, op", [("int8", "op 0 QUANTIZE"), ("int8-io", "op 0 CONV_2D"),
                                          ("dynamic", "FULLY_CONNECTED")])
def test_quantised_models_are_refused_naming_the_op(converted, tmp_path, optimise, op):
    model, _ = converted["lenet"]
    path = to_tflite(model, tmp_path / f"{optimise}.tflite", optimise=optimise, sample_shape=(28, 28, 1))
    with pytest.raises(UnsupportedLayerError, match="quantised") as info:
        load_source_model(path)
    assert op in str(info.value) and path.name in str(info.value)


@pytest.mark.parametrize("layer, op", [(lambda: L.Activation("tanh"), "TANH"),
                                       (lambda: L.LeakyReLU(0.1), "LEAKY_RELU")])
def test_unsupported_operator_is_named_with_its_index(tmp_path, layer, op):
    model = keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(4, 3), layer(), L.Flatten(), L.Dense(3)])
    path = to_tflite(model, tmp_path / "bad.tflite")
    with pytest.raises(UnsupportedLayerError) as info:
        load_source_model(path)
    message = str(info.value)
    assert f"op 1 {op}" in message and "bad.tflite" in message and "supported" in message


def test_branching_model_imports(tmp_path):
    """Refused while only chains were supported; since issue 15 part 3 the ADD joins two values of the DAG."""
    inputs = keras.Input((8, 8, 2))
    a = L.Conv2D(2, 3, padding="same")(inputs)
    outputs = L.Dense(3)(L.Flatten()(L.Add()([a, inputs])))
    path = to_tflite(keras.Model(inputs, outputs), tmp_path / "residual.tflite")
    source = load_source_model(path)
    assert "add" in [layer.kind for layer in source.layers] and not source.is_chain
    x = samples(source.input_shape)
    assert max_rel_err(forward_numpy(source, x), interpreter_logits(path, x)) <= 1e-4


def test_not_a_flatbuffer(tmp_path):
    assert ".tflite" in SUPPORTED_SUFFIXES
    path = tmp_path / "junk.tflite"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFormatError, match="junk.tflite.*TFL3"):
        load_source_model(path)


def test_merge_of_tflite_models_end_to_end(converted, tmp_path):
    from edgemerge.runtime import Runtime
    out = tmp_path / "m.emm"
    result = cli("merge", f"a={converted['lenet'][1]}", f"b={converted['functional'][1]}", "-o", out, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    expected = sum(load_source_model(converted[k][1]).param_bytes for k in ("lenet", "functional"))
    assert summary["original_bytes"] == expected
    rt = Runtime(out)
    assert rt.task_names == ["a", "b"] and rt.task("a").input_shape == (28, 28, 1) and rt.task("a").classes == 10
    logits = rt.run("b", samples((12, 12, 1), n=3))
    assert logits.shape == (3, 3) and np.all(np.isfinite(logits))


def test_merge_of_keras_and_tflite_models(converted, tmp_path):
    from edgemerge.runtime import Runtime
    model, _ = converted["pools"]
    model.save(tmp_path / "pools.keras")
    out = tmp_path / "mixed.emm"
    result = cli("merge", f"k={tmp_path / 'pools.keras'}", f"t={converted['mobile'][1]}", "-o", out)
    assert result.returncode == 0, result.stderr
    rt = Runtime(out)
    assert [(t.name, t.input_shape, t.classes) for t in rt.tasks] == [("k", (15, 13, 2), 7), ("t", (16, 16, 3), 5)]
