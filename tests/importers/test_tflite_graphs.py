"""The .tflite importer on graphs with branches: a keras.applications MobileNetV2 and a ResNet-8 with projection
shortcuts (ADD, PAD folded into the depthwise, MEAN, fused RELU/RELU6), and a squeeze-and-excite net (MUL,
CONCATENATION, LOGISTIC / HARD_SWISH), converted to float .tflite: the imported graph run by forward_numpy gives
the TFLite interpreter's logits, and `edgemerge convert` of the .tflite gives them in the C runtime."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

import residual_nets  # noqa: E402
from numeric import max_rel_err  # noqa: E402
from test_tflite_import import interpreter_logits  # noqa: E402
from tflite_convert import to_tflite  # noqa: E402

from edgemerge.errors import UnsupportedLayerError  # noqa: E402
from edgemerge.executors.numpy_exec import forward_numpy  # noqa: E402
from edgemerge.importers import load_source_model  # noqa: E402

BUILDERS = {
    "mnv2": lambda: residual_nets.mobilenet_v2((64, 64, 3), alpha=0.35, classes=10, seed=6),
    "resnet8": lambda: residual_nets.resnet8((32, 32, 3), classes=10, seed=7),
    "se_net": lambda: residual_nets.se_net((16, 16, 3), classes=5, seed=8, gate="sigmoid"),
}


@pytest.fixture(scope="module")
def tflite_files(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("tflite_graphs")
    return {name: to_tflite(build(), directory / f"{name}.tflite") for name, build in BUILDERS.items()}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_graph_import_matches_the_interpreter(tflite_files, name):
    source = load_source_model(tflite_files[name])
    assert not source.is_chain
    x = np.random.default_rng(3).normal(size=(3, *source.input_shape)).astype(np.float32)
    err = max_rel_err(forward_numpy(source, x), interpreter_logits(tflite_files[name], x))
    assert err <= 1e-4, f"{name}: {err}"


def test_mobilenet_v2_structure(tflite_files):
    source = load_source_model(tflite_files["mnv2"])
    kinds = [layer.kind for layer in source.layers]
    assert kinds.count("add") == 10 and kinds.count("depthwise") == 17 and "pad" not in kinds
    assert source.head_activation == "softmax"


def test_convert_of_a_tflite_graph_runs_in_the_runtime(tflite_files, tmp_path):
    from click.testing import CliRunner

    from edgemerge.cli import main as cli_main
    from edgemerge.runtime import Runtime

    out = tmp_path / "resnet8.emm"
    result = CliRunner().invoke(cli_main, ["convert", str(tflite_files["resnet8"]), "-o", str(out)])
    assert result.exit_code == 0, result.output
    runtime = Runtime(out)
    x = np.random.default_rng(4).normal(size=(2, 32, 32, 3)).astype(np.float32)
    err = max_rel_err(runtime.run(runtime.tasks[0].name, x), interpreter_logits(tflite_files["resnet8"], x))
    assert err <= 1e-4


def test_arithmetic_with_a_constant_is_refused_naming_the_operator(tmp_path):
    x_in = keras.Input((8, 8, 2))
    y = keras.layers.Conv2D(3, 3, activation="relu", name="c")(x_in)
    y = keras.layers.Rescaling(2.0, offset=-1.0, name="affine")(y)    # MUL / ADD by constants in the .tflite
    y = keras.layers.MaxPooling2D(name="pool")(y)                      # (nothing to fold them into)
    y = keras.layers.Dense(2)(keras.layers.Flatten()(y))
    path = to_tflite(keras.Model(x_in, y), tmp_path / "scaled.tflite")
    with pytest.raises(UnsupportedLayerError, match=r"scaled\.tflite: op \d+ (MUL|ADD) .*constant"):
        load_source_model(path)
