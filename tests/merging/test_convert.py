"""`edgemerge convert`: one model -> an .emm with its exact float weights. The C runtime on the converted file
gives the framework's logits (a keras.applications MobileNetV2, a ResNet-8 with projection shortcuts, a
squeeze-and-excite net with the v2 activations; the chain models too) with every kernel set and, for the
emulated boards, the cross-built em_run under qemu gives the host's logits."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import residual_nets  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from edgemerge import _runtime, emm  # noqa: E402
from edgemerge.cli import main as cli_main  # noqa: E402
from edgemerge.emm.constants import Op  # noqa: E402
from edgemerge.importers import load_source_model  # noqa: E402
from edgemerge.merging.convert import convert_model  # noqa: E402
from edgemerge.runtime import Runtime  # noqa: E402

BUILDERS = {
    "mnv2": lambda: residual_nets.mobilenet_v2((64, 64, 3), alpha=0.35, classes=10, seed=3),
    "resnet8": lambda: residual_nets.resnet8((32, 32, 3), classes=10, seed=4),
    "se_net": lambda: residual_nets.se_net((16, 16, 3), classes=5, seed=5),
}


def max_rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(got, np.float64) - want)) / np.max(np.abs(want)))


@pytest.fixture(scope="module")
def residual(tmp_path_factory) -> dict[str, tuple[Path, Path, np.ndarray, np.ndarray]]:
    """name -> (saved .keras, converted .emm by the CLI, input batch, Keras logits)."""
    directory = tmp_path_factory.mktemp("convert")
    out = {}
    for name, build in BUILDERS.items():
        model = build()
        path = directory / f"{name}.keras"
        model.save(path)
        rng = np.random.default_rng(11)
        x = rng.normal(size=(3, *model.input_shape[1:])).astype(np.float32)
        logits = residual_nets.logits_model(model).predict(x, verbose=0).astype(np.float64)
        emm_path = directory / f"{name}.emm"
        result = CliRunner().invoke(cli_main, ["convert", str(path), "-o", str(emm_path)])
        assert result.exit_code == 0, result.output
        assert f"wrote {emm_path}: .emm v2" in result.output
        out[name] = (path, emm_path, x, logits)
    return out


@pytest.mark.parametrize("name", list(BUILDERS))
def test_runtime_gives_the_keras_logits_with_every_kernel_set(residual, name):
    _, emm_path, x, want = residual[name]
    sets = _runtime.kernel_sets()
    assert {"auto", "ref"} <= set(sets)
    for kernels in sets:
        runtime = Runtime(emm_path, kernels=kernels)
        got = runtime.run(runtime.tasks[0].name, x)
        assert got.shape == want.shape
        assert np.array_equal(np.argmax(got, 1), np.argmax(want, 1)), kernels
        assert max_rel_err(got, want) <= 1e-4, f"{name} with kernels {kernels}: {max_rel_err(got, want)}"


def test_converted_graphs_have_the_expected_nodes(residual):
    graph = emm.read_emm(residual["mnv2"][1])
    ops = [node.op for node in graph.nodes]
    # MobileNetV2: 17 depthwise convs, 10 residual adds, ZeroPadding2D folded into the stride-2 depthwise
    assert ops.count(Op.DEPTHWISE_CONV2D) == 17 and ops.count(Op.ADD) == 10 and Op.PAD not in ops
    assert graph.format_version == 2 and graph.tasks[0].classes == 10
    adds = [node for node in graph.nodes if node.op == Op.ADD]
    assert all(len(node.inputs) == 2 for node in adds)
    resnet = emm.read_emm(residual["resnet8"][1])
    names = [node.name for node in resnet.nodes]
    assert "resnet8/s2_proj" in names and "resnet8/s3_proj" in names   # projection shortcuts, BN folded in
    se = emm.read_emm(residual["se_net"][1])
    se_ops = {node.op for node in se.nodes}
    assert {Op.CONCAT, Op.MUL, Op.PAD} <= se_ops      # the pad before the max pool stays a PAD node


def test_converted_weights_are_the_imported_ones_exactly(residual):
    path, emm_path, _, _ = residual["resnet8"]
    source = load_source_model(path)
    graph = emm.read_emm(emm_path)
    by_name = {node.name: node for node in graph.nodes}
    for layer in source.layers:
        node = by_name[f"resnet8/{layer.name}"]
        if layer.weights is not None:
            assert np.array_equal(graph.tensors[node.weight].array, layer.weights)
            assert np.array_equal(graph.tensors[node.bias].array, layer.bias)


def test_chain_models_convert_exactly(trained_model_paths, tmp_path):
    """The LeNet-style chain models of the suite: weights bit for bit, logits as Keras computes them."""
    for task, path in trained_model_paths.items():
        source = load_source_model(path)
        graph = convert_model(source, task)
        assert graph.format_version == 1           # a chain stays a v1 file
        out = tmp_path / f"{task}.emm"
        emm.write_emm(graph, out)
        back = emm.read_emm(out)
        weighted = [layer for layer in source.layers if layer.weights is not None]
        nodes = [node for node in back.nodes if node.weight != 0xFFFFFFFF]
        assert len(weighted) == len(nodes)
        for layer, node in zip(weighted, nodes):
            assert np.array_equal(back.tensors[node.weight].array, layer.weights)
        model = keras.models.load_model(path, compile=False, safe_mode=True)
        residual_nets.logits_model(model)
        x = np.random.default_rng(2).uniform(size=(4, *source.input_shape)).astype(np.float32)
        want = model.predict(x, verbose=0).astype(np.float64)
        got = Runtime(out).run(task, x)
        assert max_rel_err(got, want) <= 1e-5, task


def test_json_summary(residual, tmp_path):
    path = residual["se_net"][0]
    out = tmp_path / "se.emm"
    result = CliRunner().invoke(cli_main, ["convert", str(path), "-o", str(out), "--task", "se", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["task"] == "se" and summary["file_bytes"] == out.stat().st_size
    assert summary["nodes"] == len(emm.read_emm(out).nodes) and summary["ops"]["MUL"] == 2
    assert summary["format_version"] == 2 and summary["input_shape"] == [16, 16, 3]


def test_unsupported_layer_is_one_error_line_and_nothing_written(tmp_path):
    x_in = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(4, 3, name="c")(x_in)
    y = keras.layers.Add(name="sum")([y, keras.layers.Conv2D(4, 3, name="d")(x_in)])
    y = keras.layers.BatchNormalization(name="bn_after_add")(y)
    model = keras.Model(x_in, keras.layers.UpSampling2D(name="up")(y))
    path = tmp_path / "bad.keras"
    model.save(path)
    out = tmp_path / "bad.emm"
    result = CliRunner().invoke(cli_main, ["convert", str(path), "-o", str(out)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: bad.keras: layer '")
    assert "Traceback" not in result.output and not out.exists()
    # the BatchNorm after the Add is named (it cannot fold into a weighted layer)
    model = keras.Model(x_in, y)
    model.save(path)
    result = CliRunner().invoke(cli_main, ["convert", str(path), "-o", str(out)])
    assert result.exit_code == 1 and "layer 'bn_after_add' of type BatchNormalization" in result.output
    assert "cannot be folded: it follows layer 'sum' (add)" in result.output and not out.exists()


def test_bad_targets_are_refused(residual, tmp_path):
    path = residual["se_net"][0]
    result = CliRunner().invoke(cli_main, ["convert", str(path), "-o", str(tmp_path)])
    assert result.exit_code != 0 and "Traceback" not in result.output
    result = CliRunner().invoke(cli_main, ["convert", str(tmp_path / "missing.keras"), "-o", str(tmp_path / "m.emm")])
    assert result.exit_code == 1 and "no such file" in result.output
    result = CliRunner().invoke(cli_main, ["convert", str(path), "-o", str(tmp_path / "t.emm"), "--task", "a b"])
    assert result.exit_code == 1 and "task name 'a b'" in result.output and not (tmp_path / "t.emm").exists()


# -- the emulated boards: the cross-built em_run under qemu gives the host's logits ---------------------------
def _board_helpers():
    """tests/deploy/test_boards.py's fixtures and helpers (edgemerge build per board, em_run under qemu)."""
    spec = importlib.util.spec_from_file_location("_board_helpers", Path(__file__).parents[1] / "deploy" /
                                                  "test_boards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_boards_module = _board_helpers()
boards, built = _boards_module.boards, _boards_module.built     # session fixtures, reused as they are


def _check_board(name, boards, built, residual, tmp_path, models=("mnv2", "resnet8")):
    board = boards[name]
    out, _ = built(name)
    for model in models:
        _, emm_path, x, want = residual[model]
        host = Runtime(emm_path)
        task = host.tasks[0].name
        x_path, y_path = tmp_path / f"{model}.f32", tmp_path / f"{model}.out.f32"
        x[0].astype("<f4").tofile(x_path)
        result = _boards_module.run_on_board(board, out / "em_run", emm_path, "--task", task, "--input", x_path,
                                             "--output", y_path)
        assert result.returncode == 0, result.stderr
        got = np.fromfile(y_path, dtype="<f4")
        host_logits = host.run(task, x[:1])[0]
        assert max_rel_err(got, host_logits) <= 1e-4, f"{model} on {name}"
        assert max_rel_err(got, want[0]) <= 1e-4, f"{model} on {name} vs Keras"


def test_rpi4_aarch64_under_qemu_gives_the_host_logits(boards, built, residual, tmp_path):
    _check_board("rpi4-aarch64", boards, built, residual, tmp_path)


@pytest.mark.slow
def test_rpi3_armhf_under_qemu_gives_the_host_logits(boards, built, residual, tmp_path):
    _check_board("rpi3-armhf", boards, built, residual, tmp_path, models=("mnv2", "resnet8", "se_net"))
