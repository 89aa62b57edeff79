"""`convert_file`: one model file in (Keras, TFLite; any format `importers.load_source_model` knows), one `.emm`
file out with the model's exact float32 weights (no codebooks). Shared by `edgemerge convert` and Python users."""
from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

from edgemerge import emm


def convert_file(model: str | os.PathLike, output: str | os.PathLike, *, task: str | None = None) -> dict:
    """Imports `model`, writes it to `output` atomically (format v2 when a node has several inputs, else v1)
    and returns a summary: output, task, nodes, ops per kind, format version, file bytes, original bytes."""
    from edgemerge.emm.files import check_output_target
    from edgemerge.importers import load_source_model
    from edgemerge.merging.convert import check_task_name, convert_model

    started = time.perf_counter()
    if task is not None:
        check_task_name(task)
    check_output_target(output)    # a folder, device or FIFO as -o is refused before the work, not after
    source = load_source_model(model)
    graph = convert_model(source, task)
    file_bytes = emm.write_emm(graph, output)
    return {
        "output": str(Path(output)),
        "model": str(Path(model)),
        "task": graph.tasks[0].name,
        "input_shape": list(graph.inputs[0]),
        "classes": graph.tasks[0].classes,
        "nodes": len(graph.nodes),
        "ops": dict(Counter(node.op.name for node in graph.nodes)),
        "format_version": graph.format_version,
        "file_bytes": file_bytes,
        "original_bytes": source.param_bytes,
        "head_activation": source.head_activation,
        "seconds": round(time.perf_counter() - started, 2),
    }
