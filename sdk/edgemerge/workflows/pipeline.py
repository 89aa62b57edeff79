"""File-level entry points shared by the CLI and Python users: model files in, an `.emm` file out."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

from edgemerge import emm
from edgemerge.emm.constants import Keys
from edgemerge.errors import EdgemergeError


def merge_files(sources: dict[str, str | os.PathLike], output: str | os.PathLike, *, preset: str = "accu",
                layer_rc: dict[str, tuple[int, int]] | None = None, alignment: list[str] | None = None,
                seed: int = 0, kmeans_inits: int = 4, calib: dict[str, str | os.PathLike] | None = None,
                steps: int | None = None, calib_fraction: float = 1.0, budget: str | None = None,
                strategy="default", calibrate_options: dict | None = None, int8_tables: list[str] | None = None,
                log: Callable[[str], None] | None = None) -> dict:
    """Imports every TASK=model file, merges them (NeuralMerger encoding), optionally calibrates the merged
    model end to end on `calib` data (TASK -> .npz) or searches r/C per layer under `budget`, and writes
    `output` atomically. Returns a summary with file bytes, original bytes, compression, one entry per merged
    layer group, and the calibration / search report when they ran."""
    from edgemerge.importers import load_source_model
    from edgemerge.merging.align import parse_alignment
    from edgemerge.merging.merge import merge_models

    from edgemerge.emm.files import check_output_target, test_pause_point

    log = log or (lambda message: None)
    started = time.perf_counter()
    check_output_target(output)   # a folder, device or FIFO as -o is refused before the work, not after
    models = {}
    for task, path in sources.items():
        models[task] = load_source_model(path)
        log(f"imported {task}: {path} ({len(models[task].layers)} layers, "
            f"{models[task].param_bytes} parameter bytes)")
    test_pause_point("merge")   # test-only (emm/files.py): kill tests stop a merge here, deterministically
    groups = parse_alignment(alignment) if alignment else None
    if budget and not calib:
        raise EdgemergeError("--budget needs calibration data (--calib TASK=NPZ for every task)")
    calibration = search = None
    calibrate_kwargs = {"steps": steps, "calib_fraction": calib_fraction, "strategy": strategy, "seed": seed,
                        "progress": log, **(calibrate_options or {})}
    if budget:
        from edgemerge.training.calibrate import search_rc
        found = search_rc(None, sources, calib, budget,
                          merge_fn=lambda rc: merge_models(models, preset=preset, layer_rc={**(layer_rc or {}), **rc},
                                                           alignment=groups, seed=seed,
                                                           kmeans_inits=kmeans_inits,
                                                           int8_tables=int8_tables).graph,
                          seed=seed, calibrate_kwargs=calibrate_kwargs, progress=log)
        graph, report = found.graph, []
        search = {"layer_rc": {k: f"{r}/{c}" for k, (r, c) in found.layer_rc.items()}, "table": found.table,
                  **found.report}
    else:
        result = merge_models(models, preset=preset, layer_rc=layer_rc, alignment=groups, seed=seed,
                              kmeans_inits=kmeans_inits, int8_tables=int8_tables)
        graph, report = result.graph, result.report
        if calib:
            from edgemerge.training.calibrate import calibrate
            log(f"calibrating on {', '.join(calib)}")
            calibrated = calibrate(graph, sources, calib, **calibrate_kwargs)
            graph, calibration = calibrated.graph, calibrated.report
    file_bytes = emm.write_emm(graph, output)
    original = int(graph.metadata[Keys.General.ORIGINAL_BYTES])
    summary = {
        "output": str(Path(output)),
        "file_bytes": file_bytes,
        "original_bytes": original,
        "compression": original / file_bytes,
        "preset": preset,
        "seconds": round(time.perf_counter() - started, 2),
        "groups": [g.to_dict() if hasattr(g, "to_dict") else dict(g) for g in report],
    }
    if calibration is not None:
        summary["calibration"] = calibration
    if search is not None:
        summary["search"] = search
    log(f"merged {len(models)} models in {summary['seconds']} s")
    return summary
