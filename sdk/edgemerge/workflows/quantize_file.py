"""`edgemerge quantize`: int8 activations for the LUT layers of a merged file that already exists (docs/FORMAT.md
"int8 activations"), without merging again.

`merge --int8` measures the input scales on the merged, calibrated model; so does this, on the file's own
graph (the numpy executor, float64, decoded weights: merging/quantize.py). A merge with calibration of the
MobileNetV2 + ResNet-8 pair takes about 25 minutes; flagging its layers takes seconds, so a user can try
`--int8 all` against a few chosen layers and keep the file whose `eval` int8 drop suits them. The file is
read, flagged and written back whole (the writer reproduces a file it read byte for byte, tested), to a
temporary and renamed (emm/files.py), so a failure leaves the output as it was."""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from edgemerge.emm.constants import NODE_FLAG_INT8_ACT
from edgemerge.errors import EdgemergeError, EmmFormatError
from edgemerge.text import printable


def quantize_file(model: str | os.PathLike, output: str | os.PathLike, names: Sequence[str],
                  calib: Mapping[str, str | os.PathLike], log: Callable[[str], None] = lambda m: None) -> dict:
    """Flags the LUT layers `names` selects ("all", node names, TASK:LAYER) of `model` for int8 activations,
    with scales from `calib` (task -> .npz with x in the task's NHWC input shape), and writes `output`.
    Returns a summary: the layers flagged, their input scales, the file sizes."""
    from edgemerge import emm
    from edgemerge.emm.files import check_output_target
    from edgemerge.merging.quantize import INT8_ACT_SAMPLES, quantize_graph

    check_output_target(output)
    if not names:
        raise EdgemergeError("--int8: name the layers to quantise (NAME, TASK:LAYER or 'all')")
    if not calib:
        raise EdgemergeError("quantize needs --calib TASK=NPZ: the input scales come from calibration data")
    try:
        graph = emm.read_emm(model)
    except EmmFormatError as e:   # the reader names the section; say which file too
        raise EmmFormatError(str(e) if str(e).startswith(str(model)) else f"{printable(str(model))}: {e}") from None
    tasks = [t.name for t in graph.tasks]
    for task in calib:
        if task not in tasks:
            raise EdgemergeError(f"--calib {printable(task)}: {printable(str(model))} has no task of that name "
                                 f"(tasks: {', '.join(tasks)})")
    before = sum(1 for n in graph.nodes if n.flags & NODE_FLAG_INT8_ACT)
    log(f"measuring the input ranges of the selected layers on {', '.join(calib)}")
    report = quantize_graph(graph, names, calib)   # loads each file once and checks its samples' shape
    file_bytes = emm.write_emm(graph, output)
    return {"model": str(Path(model)), "output": str(Path(output)), "file_bytes": file_bytes,
            "layers": report["layers"], "input_scales": report.get("input_scales", {}),
            "percentile": report["percentile"], "samples_per_task": INT8_ACT_SAMPLES,
            "int8_layers_before": before,
            "int8_layers_after": sum(1 for n in graph.nodes if n.flags & NODE_FLAG_INT8_ACT)}
