"""The r/C budget search on merged DAGs (tests/dag_models.py pair, functional Keras originals): the ceiling
holds for graphs too, so the search never returns a file larger than the `accu` preset's merge."""
from __future__ import annotations

import pytest

pytest.importorskip("tensorflow")

from dag_models import dag_pair_files  # noqa: E402

from edgemerge import emm  # noqa: E402
from edgemerge.merging.merge import merge_models  # noqa: E402
from edgemerge.workflows.budget import search_rc  # noqa: E402


def test_search_on_a_dag_pair_never_exceeds_the_accu_file(tmp_path):
    sources, originals, calib = dag_pair_files(tmp_path, samples=256)
    merge = lambda preset: lambda layer_rc: merge_models(sources, preset, layer_rc=layer_rc,  # noqa: E731
                                                         kmeans_inits=1, n_jobs=1).graph
    ceiling = merge("accu")({})
    # min-compression far past what any candidate reaches: the search climbs its whole ladder, and what it
    # returns must still be no larger than the accu file (the bug the install/UX issue saw on chains)
    result = search_rc(None, originals, calib, "min-compression=1000", merge_fn=merge("light"), ceiling=ceiling,
                       r_values=(4, 8, 32), c_values=(16, 64, 256), proxy_samples=128, calibrate_final=False)
    assert len(emm.to_bytes(result.graph)) <= len(emm.to_bytes(ceiling))
    assert result.report["ceiling_bytes"] == len(emm.to_bytes(ceiling))
    assert result.graph.format_version == 2
