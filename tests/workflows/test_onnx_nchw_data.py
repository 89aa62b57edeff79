"""`merge --calib TASK=NPZ` for a task whose original is an ONNX model takes the data in PyTorch's NCHW layout
as well as NHWC (importers/onnx_import.onnx_task_samples, the rule of `eval --reference X.onnx`): the committed
residual fixture (tests/fixtures/onnx/resnet_bn.onnx, BatchNorm and a projection shortcut) merged with a Keras
chain and calibrated on NCHW data writes the same file as on the same samples in NHWC, and `eval --reference`
reads the NCHW test data; a shape that is neither layout, and one that reads both ways, each give one `error:`
line. Torch-free: the .onnx files are committed (tools/make_onnx_fixtures.py) or built here with onnx.helper."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")

from cli_runner import run_cli  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "onnx"
RESNET = FIXTURES / "resnet_bn.onnx"
STEPS = "4"


cli = functools.partial(run_cli, timeout=900)


def one_error_line(r, *needles):
    assert r.returncode == 1, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()      # merge's progress lines ("imported ...") come first
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in r.stderr, r.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx_nchw")
    keras.utils.set_random_seed(0)
    k = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
                          keras.layers.MaxPooling2D(4), keras.layers.Flatten(), keras.layers.Dense(4)])
    k.save(d / "k.keras")
    data = np.load(FIXTURES / "data.npz")
    x3, y3 = data["x3"], data["y3"]                      # NCHW [8, 3, 32, 32], as PyTorch users have it
    np.savez(d / "vision_nchw.npz", x=x3, y=y3)
    np.savez(d / "vision_nhwc.npz", x=np.ascontiguousarray(x3.transpose(0, 2, 3, 1)), y=y3)
    rng = np.random.default_rng(0)
    np.savez(d / "k.npz", x=rng.random((8, 32, 32, 3), dtype=np.float32), y=rng.integers(0, 4, 8))
    return d, data


def merge(d, vision_calib, out):
    return cli("merge", f"vision={RESNET}", f"k={d / 'k.keras'}", "-o", out, "--calib", f"vision={vision_calib}",
               "--calib", f"k={d / 'k.npz'}", "--steps", STEPS, "--json")


def test_merge_calib_nchw_equals_nhwc_and_eval_reads_nchw(files):
    d, data = files
    r_nchw = merge(d, d / "vision_nchw.npz", d / "nchw.emm")
    assert r_nchw.returncode == 0, r_nchw.stderr
    r_nhwc = merge(d, d / "vision_nhwc.npz", d / "nhwc.emm")
    assert r_nhwc.returncode == 0, r_nhwc.stderr
    cal_nchw, cal_nhwc = (json.loads(r.stdout)["calibration"]["tasks"]["vision"] for r in (r_nchw, r_nhwc))
    # the same samples in either layout: the merged model's held-out accuracy and loss before training, ONNX
    # Runtime's accuracy on them and the L1 scales (mean |original activation| over the calibration samples,
    # from ONNX Runtime) are equal, i.e. the NCHW file was read as these NHWC samples
    for field in ("accuracy_before", "val_ce_before", "reference_accuracy", "l1_scales", "n_train", "n_val"):
        assert cal_nchw[field] == cal_nhwc[field], (field, cal_nchw[field], cal_nhwc[field])
    assert len(cal_nchw["l1_scales"]) >= 5 and (d / "nchw.emm").read_bytes() == (d / "nhwc.emm").read_bytes()
    original = float(np.mean(np.argmax(data["resnet_bn_logits"], -1) == data["y3"]))
    r = cli("eval", d / "nchw.emm", "--data", f"vision={d / 'vision_nchw.npz'}", "--reference",
            f"vision={RESNET}", "--json")
    assert r.returncode == 0, r.stderr
    vision = json.loads(r.stdout)["tasks"]["vision"]
    assert vision["n"] == 8 and vision["reference_accuracy"] == pytest.approx(original)


def test_merge_int8_scales_come_from_nchw_calibration_data(files):
    # --int8 measures input scales on the calibration data: an ONNX task's NCHW file is read in NHWC there too
    d, _ = files
    runs = {}
    for layout in ("nchw", "nhwc"):
        r = cli("merge", f"vision={RESNET}", f"k={d / 'k.keras'}", "-o", d / f"int8_{layout}.emm", "--calib",
                f"vision={d / f'vision_{layout}.npz'}", "--calib", f"k={d / 'k.npz'}", "--steps", STEPS,
                "--int8", "all", "--json")
        assert r.returncode == 0, r.stderr
        runs[layout] = json.loads(r.stdout)["int8_act"]
    assert runs["nchw"]["layers"] and runs["nchw"] == runs["nhwc"]
    assert (d / "int8_nchw.emm").read_bytes() == (d / "int8_nhwc.emm").read_bytes()


def test_merge_calib_wrong_layout_is_one_error_line(files, tmp_path):
    d, data = files
    np.savez(tmp_path / "bad.npz", x=np.ascontiguousarray(data["x3"].transpose(0, 2, 1, 3)), y=data["y3"])
    r = merge(d, tmp_path / "bad.npz", tmp_path / "m.emm")
    one_error_line(r, "bad.npz", "NCHW", "(32, 3, 32)")
    assert not (tmp_path / "m.emm").exists()


def _cube_onnx(path: Path) -> None:
    """A 3x3x3-input ONNX model (Conv 3x3 valid -> Flatten -> Gemm): its NHWC and NCHW sample shapes are equal."""
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    fw = numpy_helper.from_array(rng.standard_normal((2, 4)).astype(np.float32), "fw")
    fb = numpy_helper.from_array(np.zeros(2, np.float32), "fb")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", kernel_shape=[3, 3]),
         helper.make_node("Relu", ["c"], ["r"], name="relu"),
         helper.make_node("Flatten", ["r"], ["f"], name="flat"),
         helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="fc", transB=1)],
        "cube", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])], [w, b, fw, fb])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_merge_calib_ambiguous_shape_is_one_error_line(tmp_path):
    _cube_onnx(tmp_path / "cube.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "cube.npz", x=rng.random((4, 3, 3, 3), dtype=np.float32), y=np.array([0, 1, 0, 1]))
    r = cli("merge", f"a={tmp_path / 'cube.onnx'}", f"b={tmp_path / 'cube.onnx'}", "-o", tmp_path / "m.emm",
            "--calib", f"a={tmp_path / 'cube.npz'}", "--calib", f"b={tmp_path / 'cube.npz'}", "--steps", "1")
    one_error_line(r, "cube.npz", "could be NHWC or NCHW")
    assert not (tmp_path / "m.emm").exists()
