"""`edgemerge merge --budget` end to end (issue 18): never larger than `--preset accu`, a non-zero exit and no
output when nothing meets the budget, the best found with --best-effort, a file within a reachable budget, and
the record of what was tried (<out>.budget.json / .png). On the small trained models of tests/model_factory.py,
with the r/C grid narrowed (in-process CLI, monkeypatched) so that a search takes seconds, not minutes."""
import json

import model_factory
import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("tensorflow")

from edgemerge.cli import main  # noqa: E402
from edgemerge.workflows import budget as budget_module  # noqa: E402

TASKS = ("fashion", "transposed")


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    directory = tmp_path_factory.mktemp("budget_calib")
    out = {}
    for task in TASKS:
        x, y = model_factory.task_data(task, "train")
        out[task] = directory / f"{task}.npz"
        np.savez(out[task], x=x[:1000], y=y[:1000])
    return out


def merge_args(trained_model_paths, calib, output, *extra):
    return ["merge", *[f"{t}={trained_model_paths[t]}" for t in TASKS], "-o", str(output), "--kmeans-inits", "1",
            "--steps", "10", *[a for t in TASKS for a in ("--calib", f"{t}={calib[t]}")], *map(str, extra)]


@pytest.fixture(scope="module")
def accu_bytes(tmp_path_factory, trained_model_paths, calib):
    """What `--preset accu` with the same calibration options writes (calibration adds metadata, not bytes of
    weights, so --steps 0 gives the same size)."""
    out = tmp_path_factory.mktemp("accu") / "accu.emm"
    result = CliRunner().invoke(main, merge_args(trained_model_paths, calib, out, "--preset", "accu")
                                + ["--steps", "0"])
    assert result.exit_code == 0, result.output
    return out.stat().st_size


@pytest.fixture
def coarse_grid(monkeypatch):
    """Only 1-bit codebooks of 8-long segments: far too coarse for a 1-point drop, whatever calibration does."""
    monkeypatch.setattr(budget_module.search_rc, "__kwdefaults__",
                        {**budget_module.search_rc.__kwdefaults__, "r_values": (8,), "c_values": (2,)})


@pytest.fixture
def small_grid(monkeypatch):
    monkeypatch.setattr(budget_module.search_rc, "__kwdefaults__",
                        {**budget_module.search_rc.__kwdefaults__, "r_values": (4, 8), "c_values": (16, 64)})


def test_unreachable_budget_exits_1_and_writes_nothing(tmp_path, trained_model_paths, calib, accu_bytes, coarse_grid):
    out = tmp_path / "m.emm"
    result = CliRunner().invoke(main, merge_args(trained_model_paths, calib, out, "--budget", "max-drop=0.01"))
    assert result.exit_code == 1, result.output
    assert "not met" in result.stdout and "max-drop=0.01" in result.stdout
    assert result.stderr.splitlines()[-1].startswith("error: budget max-drop=0.01 not met: misses max-drop=0.01")
    assert "best found" in result.stderr and "Traceback" not in result.output
    assert not out.exists() or out.stat().st_size <= accu_bytes
    assert not out.exists()
    record = json.loads((tmp_path / "m.emm.budget.json").read_text())
    assert record["within_budget"] is False and record["missed"]
    assert record["table"] and all({"layer_rc", "what"} <= set(row) for row in record["table"])
    tried = [row for row in record["table"] if row.get("file_bytes")]
    assert tried and all(set(row["accuracy"]) == set(TASKS) for row in tried)
    assert any(row.get("finalist") and row.get("calibrated_accuracy") for row in record["table"])
    assert (tmp_path / "m.emm.budget.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_best_effort_writes_the_best_found_and_names_the_bound(tmp_path, trained_model_paths, calib, accu_bytes,
                                                               coarse_grid):
    out = tmp_path / "m.emm"
    result = CliRunner().invoke(main, merge_args(trained_model_paths, calib, out, "--budget", "max-drop=0.01",
                                                 "--best-effort", "--json"))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["search"]["within_budget"] is False
    assert summary["search"]["missed"][0].startswith("max-drop=0.01")
    assert out.stat().st_size == summary["file_bytes"] <= accu_bytes


def test_reachable_budget_writes_a_file_within_it(tmp_path, trained_model_paths, calib, accu_bytes, small_grid):
    out = tmp_path / "m.emm"
    result = CliRunner().invoke(main, merge_args(trained_model_paths, calib, out,
                                                 "--budget", "max-drop=0.5,min-compression=3", "--json"))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    search = summary["search"]
    assert search["within_budget"] and not search["missed"]
    assert out.stat().st_size == summary["file_bytes"] <= accu_bytes
    assert summary["original_bytes"] / out.stat().st_size >= 3
    assert max(search["drop"].values()) <= 0.5
    assert (tmp_path / "m.emm.budget.json").is_file() and (tmp_path / "m.emm.budget.png").is_file()


def test_best_effort_needs_a_budget(tmp_path, trained_model_paths):
    result = CliRunner().invoke(main, ["merge", *[f"{t}={trained_model_paths[t]}" for t in TASKS],
                                       "-o", str(tmp_path / "x.emm"), "--best-effort"])
    assert result.exit_code == 1 and "--budget" in result.stderr
