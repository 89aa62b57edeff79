"""File-level entry points shared by the CLI and Python users: model files in, an `.emm` file out."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Sequence

from edgemerge import emm
from edgemerge.emm.constants import Keys
from edgemerge.errors import EdgemergeError


def merge_files(sources: dict[str, str | os.PathLike], output: str | os.PathLike, *, preset: str = "accu",
                layer_rc: dict[str, tuple[int, int]] | None = None, alignment: list[str] | None = None,
                seed: int = 0, kmeans_inits: int = 4, calib: dict[str, str | os.PathLike] | None = None,
                steps: int | None = None, calib_fraction: float = 1.0, budget: str | None = None,
                strategy="default", calibrate_options: dict | None = None, int8_tables: list[str] | None = None,
                best_effort: bool = False, int8_act: Sequence[str] = (), int8_finetune: int | None = None,
                log: Callable[[str], None] | None = None) -> dict:
    """Imports every TASK=model file, merges them (NeuralMerger encoding), optionally calibrates the merged
    model end to end on `calib` data (TASK -> .npz) or searches r/C per layer under `budget`, flags the
    `int8_act` layers for int8 activations (scales from `calib`, merging/quantize.py), and writes `output`
    atomically. With `int8_finetune` (steps), the model is calibrated that many more steps with those layers'
    int8 activations simulated before their scales are measured again (workflows/quantize_file.finetune_int8).
    Returns a summary with file bytes, original bytes, compression, one entry per merged
    layer group, and the calibration / search report when they ran.

    With `budget`, what the search tried is written next to `output` (`<output>.budget.json` and `.png`),
    and the file is never larger than the `accu` preset's merge. When nothing tried meets the budget,
    `output` is not written and `BudgetNotMet` (an EdgemergeError carrying the summary) is raised, unless
    `best_effort`: then the best found is written and summary["search"]["missed"] names the bounds missed."""
    from edgemerge.emm.files import check_output_target, test_pause_point
    from edgemerge.importers import load_source_model
    from edgemerge.merging.align import parse_alignment
    from edgemerge.merging.merge import merge_models

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
    from edgemerge.workflows.quantize_file import check_finetune_steps
    check_finetune_steps(int8_finetune, int8_act)
    if int8_act and not calib:
        raise EdgemergeError("--int8 needs --calib TASK=NPZ: the input scales come from calibration data")
    calib = _nhwc_calibration(sources, models, calib)
    calibration = search = None
    calibrate_kwargs = {"steps": steps, "calib_fraction": calib_fraction, "strategy": strategy, "seed": seed,
                        "progress": log, **(calibrate_options or {})}
    if budget:
        graph, search = _search_budget(models, sources, calib, budget, output, preset=preset, layer_rc=layer_rc,
                                       groups=groups, seed=seed, kmeans_inits=kmeans_inits, int8_tables=int8_tables,
                                       calibrate_kwargs=calibrate_kwargs, best_effort=best_effort, log=log,
                                       started=started)
        report = []
    else:
        result = merge_models(models, preset=preset, layer_rc=layer_rc, alignment=groups, seed=seed,
                              kmeans_inits=kmeans_inits, int8_tables=int8_tables)
        graph, report = result.graph, result.report
        if calib:
            from edgemerge.training.calibrate import calibrate
            log(f"calibrating on {', '.join(calib)}")
            calibrated = calibrate(graph, sources, calib, **calibrate_kwargs)
            graph, calibration = calibrated.graph, calibrated.report
    int8_report = None
    if int8_act and int8_finetune:   # calibrated again with the int8 activations simulated, then scales measured
        from edgemerge.workflows.quantize_file import finetune_int8
        options = {k: v for k, v in calibrate_kwargs.items() if k not in ("steps", "progress", "learning_rate")}
        graph, int8_report = finetune_int8(graph, int8_act, sources, calib, int8_finetune, log=log, **options)
    elif int8_act:   # docs/FORMAT.md "int8 activations": scales measured on the merged, calibrated model
        from edgemerge.merging.quantize import quantize_graph
        int8_report = quantize_graph(graph, int8_act, calib)
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
    if int8_report is not None:
        summary["int8_act"] = int8_report
    log(f"merged {len(models)} models in {summary['seconds']} s")
    return summary


def _nhwc_calibration(sources, models, calib):
    """`calib` with the files of tasks whose original is an ONNX model loaded now and put in the runtime's NHWC
    layout (importers/onnx_import.onnx_task_samples: NHWC taken as is, NCHW, the layout PyTorch users have,
    transposed, a shape that reads both ways refused); calibration and the budget search read the loaded data
    (datasets.load_labelled takes it as it is). Other tasks' files stay paths, loaded where they are used."""
    if not calib:
        return calib
    from edgemerge.datasets import LabelledData, load_labelled
    from edgemerge.importers.onnx_import import onnx_task_samples

    out = dict(calib)
    for task, path in calib.items():
        if task in sources and Path(sources[task]).suffix.lower() == ".onnx":
            data = load_labelled(path)
            x = onnx_task_samples(data.x, models[task].input_shape, f"calibration data {data}")
            out[task] = LabelledData(x, data.y, data.path)
    return out


def _search_budget(models, sources, calib, budget, output, *, preset, layer_rc, groups, seed, kmeans_inits,
                   int8_tables, calibrate_kwargs, best_effort, log, started):
    """Runs the budget search, writes its record next to `output`; raises BudgetNotMet (nothing written) when
    nothing meets the budget and not `best_effort`. Returns (graph to write, search summary)."""
    from edgemerge.merging.merge import merge_models
    from edgemerge.workflows.budget import BudgetNotMet, search_rc
    from edgemerge.workflows.budget_record import write_record

    def merge_with(rc, preset_name=preset):
        return merge_models(models, preset=preset_name, layer_rc={**(layer_rc or {}), **rc}, alignment=groups,
                            seed=seed, kmeans_inits=kmeans_inits, int8_tables=int8_tables).graph

    # The ceiling is what `--preset accu` (with the same options) would write: the search never goes above it.
    ceiling = None if preset == "accu" else merge_with({}, "accu")
    found = search_rc(None, sources, calib, budget, merge_fn=merge_with, ceiling=ceiling, seed=seed,
                      calibrate_kwargs=calibrate_kwargs, progress=log)
    search = {"table": found.table, **found.report,
              "layer_rc": {k: f"{r}/{c}" for k, (r, c) in found.layer_rc.items()}}
    json_path, png_path = write_record(output, search)
    search["record"] = {"json": str(json_path), "plot": str(png_path)}
    log(f"budget search: what was tried is in {json_path} and {png_path}")
    if not search["within_budget"] and not best_effort:
        best = ", ".join(f"{k}={v}" for k, v in search["layer_rc"].items())
        compression = f", {search['compression']:.2f}x" if search["compression"] else ""
        summary = {"output": None, "written": False, "file_bytes": search["file_bytes"],
                   "original_bytes": search["original_bytes"], "compression": search["compression"],
                   "preset": preset, "seconds": round(time.perf_counter() - started, 2), "search": search}
        raise BudgetNotMet(f"budget {budget} not met: misses {'; '.join(search['missed'])}; the best found "
                           f"({best}: {search['file_bytes']} bytes{compression}) is not written. See {json_path}, "
                           "or pass --best-effort to write it", summary)
    return found.graph, search
