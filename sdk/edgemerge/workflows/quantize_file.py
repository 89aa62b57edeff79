"""`edgemerge quantize`: int8 activations for the LUT layers of a merged file that already exists (docs/FORMAT.md
"int8 activations"), without merging again.

`merge --int8` measures the input scales on the merged, calibrated model; so does this, on the file's own
graph (the numpy executor, float64, decoded weights: merging/quantize.py). A merge with calibration of the
MobileNetV2 + ResNet-8 pair takes about 25 minutes; flagging its layers takes seconds, so a user can try
`--int8 all` against a few chosen layers and keep the file whose `eval` int8 drop suits them. The file is
read, flagged and written back whole (the writer reproduces a file it read byte for byte, tested), to a
temporary and renamed (emm/files.py), so a failure leaves the output as it was.

`finetune_int8` (`merge --int8-finetune`, `quantize --int8-finetune`): after the scales are measured, calibrate
a few more steps with the int8 activations simulated (training/tf_form.py fake quantisation, sx fixed at the
measured values), then measure the scales again on the trained graph, which is what the file stores."""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from edgemerge.emm.constants import NODE_FLAG_INT8_ACT
from edgemerge.errors import EdgemergeError, EmmFormatError
from edgemerge.text import printable


DEFAULT_FINETUNE_LEARNING_RATE = 1e-4   # a tenth of calibration's: the model is already calibrated


def check_finetune_steps(steps: int | None, int8_names: Sequence[str]) -> None:
    """`--int8-finetune STEPS`: a positive step count, and only with layers to quantise."""
    if steps is None:
        return
    if steps < 1:
        raise EdgemergeError(f"--int8-finetune {steps}: expected a number of calibration steps >= 1")
    if not int8_names:
        raise EdgemergeError("--int8-finetune needs --int8 NAMES: the layers whose int8 activations it simulates")


def finetune_int8(graph, names: Sequence[str], originals: Mapping[str, str | os.PathLike],
                  calib: Mapping[str, object], steps: int, *, learning_rate: float = DEFAULT_FINETUNE_LEARNING_RATE,
                  log: Callable[[str], None] = lambda m: None, **calibrate_options):
    """Flags the layers `names` selects for int8 activations with scales from `calib` (merging/quantize.py),
    calibrates `graph` for `steps` steps with every int8 node of it simulated at those fixed scales
    (training/calibrate.py `fake_quant`; the best held-out checkpoint of the simulated model, step 0 included),
    and measures the scales again on the trained graph. Returns (trained graph, flagged and scaled; report:
    layers, percentile, input_scales as `quantize_graph` reports them, and under "finetune" the steps, the
    learning rate, the scales the simulation used and the calibration report)."""
    from edgemerge.datasets import load_labelled
    from edgemerge.merging.quantize import quantize_graph
    from edgemerge.training.calibrate import calibrate
    from edgemerge.training.tf_form import int8_input_scales

    # each file read once for the three uses below (Fashion-MNIST's training set is 245 MB of float32)
    calib = {task: load_labelled(data) for task, data in calib.items()}
    first = quantize_graph(graph, names, calib)
    scales = int8_input_scales(graph)
    log(f"int8 fine-tune: {steps} steps with simulated int8 activations on "
        f"{', '.join(graph.nodes[i].name for i in sorted(scales))}")
    result = calibrate(graph, originals, calib, steps=steps, learning_rate=learning_rate, progress=log,
                       fake_quant=scales, **calibrate_options)
    trained = result.graph
    final = quantize_graph(trained, names, calib)   # the trained graph's own ranges: what the file stores
    return trained, {**final, "finetune": {"steps": int(steps), "learning_rate": float(learning_rate),
                                           "simulated_input_scales": first.get("input_scales", {}),
                                           "calibration": result.report}}


def quantize_file(model: str | os.PathLike, output: str | os.PathLike, names: Sequence[str],
                  calib: Mapping[str, str | os.PathLike], log: Callable[[str], None] = lambda m: None, *,
                  finetune_steps: int | None = None, originals: Mapping[str, str | os.PathLike] | None = None,
                  seed: int = 0) -> dict:
    """Flags the LUT layers `names` selects ("all", node names, TASK:LAYER) of `model` for int8 activations,
    with scales from `calib` (task -> .npz with x in the task's NHWC input shape), and writes `output`.
    With `finetune_steps`, calibrates that many steps with the int8 activations simulated first
    (`finetune_int8`; needs the `originals` of every task, TASK -> model file, and `calib` for every task).
    Returns a summary: the layers flagged, their input scales, the file sizes (and the fine-tune's report)."""
    from edgemerge import emm
    from edgemerge.emm.files import check_output_target
    from edgemerge.merging.quantize import INT8_ACT_SAMPLES, quantize_graph

    check_output_target(output)
    if not names:
        raise EdgemergeError("--int8: name the layers to quantise (NAME, TASK:LAYER or 'all')")
    if not calib:
        raise EdgemergeError("quantize needs --calib TASK=NPZ: the input scales come from calibration data")
    check_finetune_steps(finetune_steps, names)
    if finetune_steps and not originals:
        raise EdgemergeError("--int8-finetune needs the original models (--reference TASK=MODEL for every task): "
                             "calibration's L1 terms compare the merged layers with them")
    if originals and not finetune_steps:
        raise EdgemergeError("--reference goes with --int8-finetune (quantize reads no original model otherwise)")
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
    if finetune_steps:
        graph, report = finetune_int8(graph, names, originals, calib, finetune_steps, log=log, seed=seed)
    else:
        report = quantize_graph(graph, names, calib)   # loads each file once and checks its samples' shape
    file_bytes = emm.write_emm(graph, output)
    summary = {"model": str(Path(model)), "output": str(Path(output)), "file_bytes": file_bytes,
               "layers": report["layers"], "input_scales": report.get("input_scales", {}),
               "percentile": report["percentile"], "samples_per_task": INT8_ACT_SAMPLES,
               "int8_layers_before": before,
               "int8_layers_after": sum(1 for n in graph.nodes if n.flags & NODE_FLAG_INT8_ACT)}
    if "finetune" in report:
        summary["int8_finetune"] = report["finetune"]
    return summary
