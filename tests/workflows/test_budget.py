"""The budget search (sdk/edgemerge/workflows/budget.py): r/C per merged-layer group under an accuracy and/or
size budget, on the tiny pair of tests/tiny_pair.py (its fixture and `merge_tiny` encoding)."""
import json

import pytest

pytest.importorskip("tensorflow")

from tiny_pair import _real_merge, merge_tiny  # noqa: E402 - the tiny pair (fixture `tiny`: tests/conftest.py)

from edgemerge.errors import EdgemergeError  # noqa: E402
from edgemerge.workflows.budget import Budget, parse_budget, search_rc  # noqa: E402


# ------------------------------------------------------------------------------------------------
# r/C search
# ------------------------------------------------------------------------------------------------
def test_parse_budget():
    assert parse_budget("max-drop=0.02") == Budget(0.02, None)
    assert parse_budget("max-drop=1.5%") == Budget(0.015, None)
    assert parse_budget("min-compression=20x") == Budget(None, 20.0)
    assert parse_budget("max-drop=0.05,min-compression=8") == Budget(0.05, 8.0)
    for bad in ("max-drop", "max-drop=2", "min-compression=-1", "speed=3", "max-drop=abc"):
        with pytest.raises(EdgemergeError, match="budget"):
            parse_budget(bad)


def _tiny_merge_fn(models, calls):
    def merge_fn(layer_rc):
        calls.append(dict(layer_rc))
        conv = layer_rc.get("a:conv1", (2, 8))
        fc = layer_rc.get("a:fc1", (4, 16))
        return merge_tiny(models, conv, fc)
    return merge_fn


@pytest.mark.parametrize("budget", ["max-drop=0.03", pytest.param("min-compression=1.5", marks=pytest.mark.slow)])
def test_search_rc_meets_the_budget_cheaply(tiny, budget):
    calls = []
    result = search_rc(None, tiny["originals"], tiny["calib"], budget, merge_fn=_tiny_merge_fn(tiny["models"], calls),
                       r_values=(1, 2, 4), c_values=(2, 4, 16), proxy_samples=100,
                       calibrate_kwargs={"steps": 60, "eval_every": 20})
    assert set(result.layer_rc) == {"a:conv1", "a:fc1"}
    assert all(rc in [(r, c) for r in (1, 2, 4) for c in (2, 4, 16)] for rc in result.layer_rc.values())
    rep = result.report
    assert rep["within_budget"], rep
    assert rep["calibrated"] and rep["calibration"]["steps"] == 60
    if budget.startswith("min-compression"):
        assert rep["compression"] >= 1.5
        # compression came at a price the search had to pay: not the least compressive setting
        assert result.layer_rc != {"a:conv1": (1, 16), "a:fc1": (1, 16)}
    else:
        assert max(rep["drop"].values()) <= 0.03
    assert len(calls) <= 25, f"{len(calls)} merges for a 2-group, 9-setting grid"
    assert {"what", "layer_rc", "file_bytes", "compression", "accuracy", "drop"} <= set(result.table[1])
    json.dumps({"table": result.table, "report": result.report})
    assert result.graph.metadata["calibrate.steps"] == 60




@pytest.mark.slow
def test_search_rc_with_the_default_merge(tiny):
    _real_merge()
    result = search_rc(tiny["originals"], tiny["originals"], tiny["calib"], "max-drop=0.05",
                       merge_options={"kmeans_inits": 1}, r_values=(2, 4, 8), c_values=(4, 16, 64),
                       calibrate_kwargs={"steps": 60})
    assert set(result.layer_rc) == {"a:conv1", "a:fc1"}
    assert result.report["within_budget"], result.report


