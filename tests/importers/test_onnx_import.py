"""The ONNX importer on PyTorch exports (tests/fixtures/onnx, made by tools/make_onnx_fixtures.py): every
fixture imported and run by `forward_numpy` equals ONNX Runtime within 1e-5 relative; BatchNorm folded, the
flatten row order, depthwise, squeeze-and-excite; hand-built graphs for the op variants PyTorch's exports do
not show (Clip attributes, HardSigmoid alpha, Pad, MatMul+Add, count_include_pad); and the errors (unsupported
op, truncated file, dynamic size, ambiguous layout) as one `error:` line through the CLI."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgemerge.emm.constants import Act  # noqa: E402
from edgemerge.errors import ModelFormatError  # noqa: E402
from edgemerge.executors.numpy_exec import forward_numpy  # noqa: E402
from edgemerge.importers import SUPPORTED_SUFFIXES, load_source_model  # noqa: E402
from edgemerge.importers.onnx_import import nchw_to_nhwc, to_nhwc  # noqa: E402
from numeric import max_rel_err  # noqa: E402
from cli_runner import run_cli as cli  # noqa: E402

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "onnx"
MODELS = {"plain_cnn": "x1", "resnet_bn": "x3", "mobilenet_se": "x3"}


def ort_run(path, x_nchw):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: np.asarray(x_nchw, np.float32)})[0]


@pytest.fixture(scope="module")
def data():
    return dict(np.load(FIXTURES / "data.npz"))


def test_onnx_suffix_is_registered():
    assert ".onnx" in SUPPORTED_SUFFIXES


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fixture_matches_onnx_runtime(name, data):
    model = load_source_model(FIXTURES / f"{name}.onnx")
    x = data[MODELS[name]]
    expected = ort_run(FIXTURES / f"{name}.onnx", x)
    # the committed reference logits are what ONNX Runtime gives (the fixture and its data belong together)
    assert max_rel_err(expected, data[f"{name}_logits"]) < 1e-5
    assert np.std(expected) > 0.1                      # trained: logits are not trivial
    got = forward_numpy(model, nchw_to_nhwc(x))
    assert got.shape == expected.shape
    assert max_rel_err(got, expected) < 1e-5
    assert model.input_shape == (32, 32, x.shape[1])
    model.check_topology()


def test_structure_of_residual_and_mobilenet():
    res = load_source_model(FIXTURES / "resnet_bn.onnx")
    kinds = [layer.kind for layer in res.layers]
    assert "add" in kinds and not res.is_chain
    # every BatchNormalization folded into its conv: none is left as a layer of its own
    bns = [n.name for n in onnx.load(str(FIXTURES / "resnet_bn.onnx")).graph.node if n.op_type == "BatchNormalization"]
    assert len(bns) == 6
    assert sorted(f for layer in res.layers if layer.kind == "conv" for f in layer.fused if f in bns) == sorted(bns)
    assert kinds.count("depthwise") == 0
    # the projection shortcut is a 1x1 stride-2 conv read beside the main branch
    assert any(layer.kind == "conv" and layer.kernel == (1, 1) and layer.stride == (2, 2) for layer in res.layers)
    mob = load_source_model(FIXTURES / "mobilenet_se.onnx")
    acts = {layer.activation for layer in mob.layers}
    assert {Act.HARD_SWISH, Act.RELU6, Act.HARD_SIGMOID} <= acts
    assert any(layer.kind == "mul" for layer in mob.layers)
    assert sum(layer.kind == "depthwise" for layer in mob.layers) == 3
    mul = next(layer for layer in mob.layers if layer.kind == "mul")
    gate = mob.layer(mul.inputs[1])
    assert gate.out_shape[:2] == (1, 1)                 # the (H, W, C) value first, the gate second


def test_flatten_rows_are_reordered_for_hwc():
    cnn = load_source_model(FIXTURES / "plain_cnn.onnx")
    flat = next(i for i, layer in enumerate(cnn.layers) if layer.kind == "flatten")
    assert cnn.layers[flat].in_shape == (7, 7, 16)
    assert cnn.layers[flat + 1].kind == "dense" and cnn.layers[flat + 1].weights.shape == (784, 32)
    assert cnn.head_activation == "linear"


# ---- hand-built graphs ---------------------------------------------------------------------------
def _save(tmp_path, nodes, inits, in_shape, out_shape, opset=13, name="m.onnx"):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                              [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _check_against_ort(path, shape, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3, *shape)).astype(np.float32)
    model = load_source_model(path)
    got = forward_numpy(model, nchw_to_nhwc(x))
    want = ort_run(path, x).reshape(3, -1)
    assert max_rel_err(got, want) < 1e-5, max_rel_err(got, want)
    return model


def test_pad_clip_hardsigmoid_matmul_add_avgpool(tmp_path):
    rng = np.random.default_rng(1)
    inits = {"w": rng.normal(size=(4, 2, 3, 3)), "b": rng.normal(size=4), "pads": np.array([0, 0, 1, 2, 0, 0, 1, 0]),
             "lo": np.array(0.0), "hi": np.array(6.0), "mw": rng.normal(size=(4 * 3 * 3, 5)), "mb": rng.normal(size=5)}
    inits["pads"] = inits["pads"]
    nodes = [
        helper.make_node("Pad", ["x", "pads_i"], ["p"], name="pad"),
        helper.make_node("Conv", ["p", "w", "b"], ["c"], name="conv", strides=[2, 2]),
        helper.make_node("Clip", ["c", "lo", "hi"], ["r6"], name="relu6"),
        helper.make_node("AveragePool", ["r6"], ["ap"], name="avg", kernel_shape=[2, 2], strides=[1, 1],
                         pads=[1, 1, 0, 0], count_include_pad=1),
        helper.make_node("HardSigmoid", ["ap"], ["hs"], name="hsig", alpha=1 / 6, beta=0.5),
        helper.make_node("Flatten", ["hs"], ["f"], name="flat"),
        helper.make_node("MatMul", ["f", "mw"], ["mm"], name="mm"),
        helper.make_node("Add", ["mm", "mb"], ["y"], name="bias"),
    ]
    pads = numpy_helper.from_array(np.array([0, 0, 1, 2, 0, 0, 1, 0], np.int64), "pads_i")
    del inits["pads"]
    path = _save(tmp_path, nodes, inits, [None, 2, 6, 5], [None, 5])
    m = onnx.load(str(path))
    m.graph.initializer.append(pads)
    onnx.save(m, str(path))
    model = _check_against_ort(path, (2, 6, 5))
    kinds = [layer.kind for layer in model.layers]
    assert kinds == ["pad", "conv", "pad", "avg_pool", "activation", "flatten", "dense"]
    assert model.layers[1].activation == Act.RELU6
    assert model.layers[-1].match_output == "y"          # MatMul + Add: one dense layer, the Add is its bias


def test_clip_attributes_and_standalone_batchnorm(tmp_path):
    rng = np.random.default_rng(2)
    inits = {"s": rng.uniform(0.5, 2, 3), "t": rng.normal(size=3), "m": rng.normal(size=3), "v": rng.uniform(0.5, 2, 3),
             "w": rng.normal(size=(6, 1, 3, 3)), "gw": rng.normal(size=(6, 4)), "gb": rng.normal(size=4)}
    nodes = [
        helper.make_node("BatchNormalization", ["x", "s", "t", "m", "v"], ["bn"], name="bn"),
        helper.make_node("Conv", ["bn", "w"], ["dw"], name="dw", group=3, pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["dw"], ["r"], name="clip", min=0.0, max=6.0),
        helper.make_node("MaxPool", ["r"], ["mp"], name="mp", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["mp"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "gw", "gb"], ["y"], name="fc", alpha=0.5, beta=2.0),
    ]
    path = _save(tmp_path, nodes, inits, [None, 3, 4, 4], [None, 4], opset=10)
    with pytest.raises(ModelFormatError, match="opset 10 is not supported"):
        load_source_model(path)
    m = onnx.load(str(path))
    m.opset_import[0].version = 11
    nodes[2] = helper.make_node("Relu", ["dw"], ["r"], name="relu")   # Clip attributes are opset < 11 only
    m.graph.ClearField("node")
    m.graph.node.extend(nodes)
    onnx.save(m, str(path))
    model = _check_against_ort(path, (3, 4, 4))
    assert model.layers[0].kind == "depthwise" and model.layers[0].kernel == (1, 1)   # lone BN: 1x1 depthwise
    assert model.layers[1].kind == "depthwise" and model.layers[1].weights.shape == (3, 3, 3, 2)


@pytest.mark.parametrize("node, message", [
    (helper.make_node("HardSigmoid", ["x"], ["y"], name="hs", alpha=0.2, beta=0.5), "only PyTorch's hard-sigmoid"),
    (helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="clip"), r"Clip\(min=-1.0, max=1.0\)"),
    (helper.make_node("LeakyRelu", ["x"], ["y"], name="leaky"), "op type not supported"),
])
def test_refused_variants_name_node_op_and_opset(tmp_path, node, message):
    path = _save(tmp_path, [node], {"lo": np.array(-1.0), "hi": np.array(1.0)}, [1, 2, 3, 3], [1, 2, 3, 3])
    with pytest.raises(ModelFormatError, match=message) as info:
        load_source_model(path)
    assert f"({node.op_type}, opset 13)" in str(info.value) and repr(node.name)[1:-1] in str(info.value)


def test_layout_conversion_and_ambiguity():
    x = np.arange(2 * 3 * 5 * 7, dtype=np.float32).reshape(2, 3, 5, 7)      # NCHW of a 5x7x3 model
    assert to_nhwc(x, (5, 7, 3), "data").shape == (2, 5, 7, 3)
    np.testing.assert_array_equal(to_nhwc(x, (5, 7, 3), "data")[:, :, :, 1], x[:, 1])
    nhwc = np.zeros((2, 5, 7, 3), np.float32)
    assert to_nhwc(nhwc, (5, 7, 3), "data") is nhwc
    with pytest.raises(ModelFormatError, match="could be NHWC or NCHW"):
        to_nhwc(np.zeros((1, 4, 4, 4), np.float32), (4, 4, 4), "data file d.npz")


# ---- errors through the CLI: one `error:` line, exit 1 ---------------------------------------------
def _one_error_line(result):
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def keras_chain(tmp_path_factory):
    keras = pytest.importorskip("keras")
    path = tmp_path_factory.mktemp("k") / "small.keras"
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(3)])
    model.save(path)
    return path


def test_cli_unsupported_op(tmp_path, keras_chain):
    line = _one_error_line(cli("merge", f"a={FIXTURES / 'bad_op.onnx'}", f"b={keras_chain}", "-o", tmp_path / "o.emm"))
    assert "LeakyRelu" in line and "opset 17" in line and "node" in line
    assert not (tmp_path / "o.emm").exists()


def test_cli_truncated_file(tmp_path, keras_chain):
    data = (FIXTURES / "resnet_bn.onnx").read_bytes()
    bad = tmp_path / "trunc.onnx"
    bad.write_bytes(data[: len(data) // 2])
    line = _one_error_line(cli("merge", f"a={bad}", f"b={keras_chain}", "-o", tmp_path / "o.emm"))
    assert "trunc.onnx" in line and ("truncated" in line or "not a valid ONNX model" in line)
    with pytest.raises(ModelFormatError):
        load_source_model(bad)
    assert not (tmp_path / "o.emm").exists()


def test_cli_dynamic_spatial_size(tmp_path, keras_chain):
    line = _one_error_line(cli("merge", f"a={FIXTURES / 'dynamic_hw.onnx'}", f"b={keras_chain}", "-o",
                               tmp_path / "o.emm"))
    assert "dynamic height" in line and "fixed size" in line


def test_dynamic_batch_is_accepted():
    onnx_model = onnx.load(str(FIXTURES / "resnet_bn.onnx"))
    assert onnx_model.graph.input[0].type.tensor_type.shape.dim[0].dim_param   # exported with a dynamic batch
    assert load_source_model(FIXTURES / "resnet_bn.onnx").input_shape == (32, 32, 3)


def test_c_runtime_matches_onnx_runtime(tmp_path, data):
    """convert (merging/convert.py) -> C runtime logits = ONNX Runtime within 1e-4."""
    from edgemerge import emm
    from edgemerge.merging import convert
    from edgemerge.runtime import Runtime

    for name, key in MODELS.items():
        graph = convert.convert_model(load_source_model(FIXTURES / f"{name}.onnx"))
        out = tmp_path / f"{name}.emm"
        out.write_bytes(emm.to_bytes(graph))
        rt = Runtime(out)
        task = rt.task_names[0]
        got = rt.run(task, nchw_to_nhwc(data[key]))
        assert max_rel_err(got, data[f"{name}_logits"]) < 1e-4
