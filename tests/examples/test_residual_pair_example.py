"""The residual-pair example (examples/residual_pair/run.py, issue 15's merge claims) end to end, shortened: the
data built from scratch, a keras.applications MobileNetV2 (64x64 RGB garments) and a ResNet-8 (spoken words)
trained one epoch each, exported to float and int8 .tflite, merged at accu and light from the .keras files and
from the float .tflite files with a few calibration steps, evaluated against the originals and benchmarked
against LiteRT float and int8; the light files again with int8 activations (`edgemerge quantize`). Slow (data, two trainings, four calibrations): the quick paths of the same code
are tests/merging/test_clustered_depthwise.py and tests/merging/test_shared_codebooks.py. The size claims do
not depend on training and are asserted; the accuracy claims need the example's full training and
calibration and are only recorded here; no timing is asserted."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from example_run import ROOT, example_env, require_fashion_mnist

from edgemerge import emm

pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")


@pytest.mark.slow
def test_residual_pair_example_end_to_end(tmp_path):
    require_fashion_mnist()
    env = example_env()
    r = subprocess.run([sys.executable, "-m", "examples.residual_pair.run", "--data", str(tmp_path / "data"),
                        "--out", str(tmp_path / "out"), "--epochs-garment", "1", "--epochs-words", "1",
                        "--steps", "20", "--bench-runs", "10"], cwd=ROOT, env=env, timeout=5400,
                       capture_output=True, text=True)
    summary_path = tmp_path / "out" / "residual_pair_summary.json"
    assert summary_path.is_file(), r.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    claims = summary["claims"]
    assert r.returncode == (0 if all(claims.values()) else 1), r.stderr[-3000:]
    for fmt in ("keras", "tflite"):
        assert claims[f"{fmt} accu: >= 4x smaller than the float32 originals"], summary["merged"][fmt]["accu"]
        assert claims[f"{fmt} accu: smaller than both int8 .tflite files together"]
        assert claims[f"{fmt} light: >= 8x smaller than the float32 originals"], summary["merged"][fmt]["light"]
        for preset in ("accu", "light"):
            record = summary["merged"][fmt][preset]
            assert record["steps"] == 20 and set(record["tasks"]) == {"garment", "words"}
            assert record["bytes"] == (tmp_path / "out" / record["file"]).stat().st_size
            for task in record["tasks"].values():
                assert 0 <= task["accuracy"] <= 1 and task["drop"] is not None
            bench = record["bench"]
            assert bench["merged_median_ms"] > 0 and bench["threads"] == 1
            assert bench["tflite_float"]["median_ms"] > 0 and bench["tflite_int8"]["median_ms"] > 0
        # issue 17: the light file with int8 activations on every merged layer (edgemerge quantize)
        int8 = summary["merged"][fmt]["light_int8"]
        flagged = [n for n in emm.read_emm(tmp_path / "out" / int8["file"]).nodes if n.int8_act]
        assert int8["layers"] == len(flagged) > 0
        assert int8["bytes"] == (tmp_path / "out" / int8["file"]).stat().st_size
        for task in int8["tasks"].values():   # eval's comparison with the same file in float math
            assert 0 <= task["float_tables_accuracy"] <= 1 and task["int8_drop"] is not None
        assert f"{fmt} light, int8 activations: <= 1 point int8 drop per task" in claims
        assert int8["bench"]["merged_median_ms"] > 0 and int8["bench"]["tflite_int8"]["median_ms"] > 0
    assert summary["int8_tflite_bytes"] > 0
    # sizes and bench, each: 2 formats x (accu, light, light with int8 activations)
    assert (tmp_path / "out" / "residual_pair_summary.md").read_text().count("\n| .") == 12
