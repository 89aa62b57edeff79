"""The PyTorch example (examples/pytorch_fashion/demo.py, `make pytorch-demo`) end to end, shortened: a residual
CNN trained in PyTorch on Fashion-MNIST and exported to ONNX, converted and run by the C runtime on the host and
by em_run for rpi4-aarch64 under qemu (logits within 1e-4 relative of ONNX Runtime), merged at `accu` with the
bundled example's Keras words model on NCHW calibration data, evaluated against both originals, sized against
int8 files of both, benchmarked against ONNX Runtime + LiteRT. Slow (data, two trainings, a calibration): the
quick path of the same code is tests/workflows/test_onnx_nchw_data.py. With 60 calibration steps the accuracy
claim (<= 1 point at the example's 1000 steps) is not asserted here, only that every step ran and its figures
are recorded; no timing is asserted."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from example_run import ROOT, example_env, require_fashion_mnist

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")


@pytest.mark.slow
def test_pytorch_example_end_to_end(tmp_path):
    from edgemerge.deploy.boards import get_board, missing_tools
    require_fashion_mnist()
    if missing_tools(get_board("rpi4-aarch64"), emulator=True):
        pytest.skip("no cross compiler / qemu for rpi4-aarch64 (tools/setup.sh)")
    env = example_env()
    r = subprocess.run([sys.executable, "-m", "examples.pytorch_fashion.demo", "--out", str(tmp_path), "--steps", "60",
                        "--qemu-samples", "20", "--bench-runs", "10"], cwd=ROOT, env=env, timeout=3600,
                       capture_output=True, text=True)
    summary = json.loads((tmp_path / "pytorch_demo_summary.json").read_text())
    claims = summary["claims"]
    for claim in ("convert: C runtime vs ONNX Runtime within 1e-4 relative on the host",
                  "convert: em_run (rpi4-aarch64, qemu) vs ONNX Runtime within 1e-4 relative",
                  "bench ran ONNX Runtime and LiteRT as peers"):
        assert claims[claim], (claim, summary["convert"], r.stdout[-3000:])
    assert r.returncode == (0 if all(claims.values()) else 1), r.stderr[-3000:]
    conv = summary["convert"]
    assert conv["host"]["samples"] == 10000 and conv["rpi4_qemu"]["samples"] == 20
    merged = summary["merged"]
    assert set(merged["tasks"]) == {"vision", "words"} and merged["steps"] == 60
    for task in merged["tasks"].values():
        assert task["reference_accuracy"] > 0.5 and task["drop"] is not None
    assert summary["resnet_pt"]["onnx_test_accuracy"] > 0.8
    assert summary["int8"]["vision"]["bytes"] > 0 and summary["int8"]["words"]["bytes"] > 0
    assert summary["merged"]["bytes"] == (tmp_path / "merged.emm").stat().st_size
