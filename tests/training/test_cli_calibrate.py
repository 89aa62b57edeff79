"""`edgemerge merge --calib` end to end on small models trained by tests/model_factory.py: the calibrated
file is smaller than the originals by the same factor, loses less accuracy than the uncalibrated merge, and
the C runtime runs exactly the trained model (logits equal to the TF form)."""
import json
from functools import partial

import model_factory
import numpy as np
import pytest
from cli_runner import run_cli


cli = partial(run_cli, timeout=900)


@pytest.fixture(scope="module")
def calib_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("calib")
    out = {}
    for task in ("fashion", "transposed"):
        for split in ("train", "test"):
            x, y = model_factory.task_data(task, split)
            out[(task, split)] = directory / f"{task}_{split}.npz"
            np.savez(out[(task, split)], x=x, y=y)
    return out


def eval_json(model, calib_files, trained_model_paths):
    result = cli("eval", model, *[a for t in ("fashion", "transposed") for a in
                                  ("--data", f"{t}={calib_files[(t, 'test')]}",
                                   "--reference", f"{t}={trained_model_paths[t]}")], "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["tasks"]


def test_merge_with_calibration_recovers_accuracy(tmp_path, calib_files, trained_model_paths):
    models = [f"fashion={trained_model_paths['fashion']}", f"transposed={trained_model_paths['transposed']}"]
    plain, calibrated = tmp_path / "plain.emm", tmp_path / "calibrated.emm"
    assert cli("merge", *models, "-o", plain, "--preset", "accu").returncode == 0
    result = cli("merge", *models, "-o", calibrated, "--preset", "accu",
                 "--calib", f"fashion={calib_files[('fashion', 'train')]}",
                 "--calib", f"transposed={calib_files[('transposed', 'train')]}", "--steps", "150", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["calibration"]["steps"] == 150
    assert set(summary["calibration"]["tasks"]) == {"fashion", "transposed"}
    assert "fashion" in result.stderr  # progress lines a person can follow

    before = eval_json(plain, calib_files, trained_model_paths)
    after = eval_json(calibrated, calib_files, trained_model_paths)
    for task in ("fashion", "transposed"):
        assert after[task]["drop"] < before[task]["drop"], (task, before[task], after[task])
    # the worst task recovers most of what merging cost it
    worst = max(before, key=lambda t: before[t]["drop"])
    assert after[worst]["drop"] < 0.5 * before[worst]["drop"], (before[worst], after[worst])
    # calibration changes values, not structure: same size
    assert abs(calibrated.stat().st_size - plain.stat().st_size) < 1024


def test_calibrated_file_runs_in_c_exactly_like_the_tf_form(tmp_path, calib_files, trained_model_paths):
    from edgemerge.emm import read_emm
    from edgemerge.runtime import Runtime
    from edgemerge.training.calibrate import tf_forward
    out = tmp_path / "m.emm"
    result = cli("merge", f"fashion={trained_model_paths['fashion']}",
                 f"transposed={trained_model_paths['transposed']}", "-o", out, "--preset", "light",
                 "--calib", f"fashion={calib_files[('fashion', 'train')]}",
                 "--calib", f"transposed={calib_files[('transposed', 'train')]}", "--steps", "20")
    assert result.returncode == 0, result.stderr
    graph, rt = read_emm(out), Runtime(out)
    for task in ("fashion", "transposed"):
        x, _ = model_factory.task_data(task, "test")
        got, want = rt.run(task, x[:64]), tf_forward(graph, task, x[:64])
        assert np.max(np.abs(got - want)) / np.max(np.abs(want)) <= 1e-4


def test_budget_and_steps_need_calibration_data(tmp_path, trained_model_paths):
    models = [f"fashion={trained_model_paths['fashion']}", f"transposed={trained_model_paths['transposed']}"]
    for extra in (["--budget", "max-drop=0.01"], ["--steps", "10"]):
        result = cli("merge", *models, "-o", tmp_path / "x.emm", *extra)
        assert result.returncode == 1 and "--calib" in result.stderr, result.stderr
        assert not (tmp_path / "x.emm").exists()
