"""File-level entry points shared by the CLI and Python users: model files in, an `.emm` file out."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

from . import emm


def merge_files(sources: dict[str, str | os.PathLike], output: str | os.PathLike, *, preset: str = "accu",
                layer_rc: dict[str, tuple[int, int]] | None = None, alignment: list[str] | None = None,
                seed: int = 0, kmeans_inits: int = 4, log: Callable[[str], None] | None = None) -> dict:
    """Imports every TASK=model file, merges them (NeuralMerger encoding) and writes `output` atomically.
    Returns a summary with file bytes, original bytes, compression and one entry per merged layer group."""
    from .align import parse_alignment
    from .importers import load_source_model
    from .merge import merge_models

    log = log or (lambda message: None)
    started = time.perf_counter()
    models = {}
    for task, path in sources.items():
        models[task] = load_source_model(path)
        log(f"imported {task}: {path} ({len(models[task].layers)} layers, "
            f"{models[task].param_bytes} parameter bytes)")
    groups = parse_alignment(alignment) if alignment else None
    result = merge_models(models, preset=preset, layer_rc=layer_rc, alignment=groups, seed=seed,
                          kmeans_inits=kmeans_inits)
    file_bytes = emm.write_emm(result.graph, output)
    original = int(result.graph.metadata["edgemerge.original_bytes"])
    summary = {
        "output": str(Path(output)),
        "file_bytes": file_bytes,
        "original_bytes": original,
        "compression": original / file_bytes,
        "preset": preset,
        "seconds": round(time.perf_counter() - started, 2),
        "groups": [g.to_dict() if hasattr(g, "to_dict") else dict(g) for g in result.report],
    }
    log(f"merged {len(models)} models in {summary['seconds']} s")
    return summary
