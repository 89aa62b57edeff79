"""Calibration training of a merged model (NeuralMerger, Chou et al. 2018, Sec. 3.3): the public entry.

After k-means encoding, every merged layer computes with weights rebuilt from a shared codebook and a per-task
index map. Calibration keeps the index maps fixed and trains what is stored as floats, with all tasks stepped
together, so a codebook shared by two tasks is pulled by both of their losses.

The differentiable form is `tf_form.TFMergedGraph` (every float tensor one trainable variable, index maps
fixed, shared codebooks one variable); targets of the L1 terms: `targets.py`; the split of the data:
`data_split.py`; Adam and the schedule: `optimizer.py`; the loop: `trainer.Trainer`.

Nodes flagged for int8 tables (docs/FORMAT.md "int8 tables") are trained as float LUT layers: the int8
quantisation is not simulated (its effect is small for r > 1, see README) and the flag is kept in the
written file; `edgemerge eval` measures the accuracy the runtime really gets, and the part of the drop that
the int8 quantisation alone causes.

int8 activations (docs/FORMAT.md "int8 activations") can be simulated: `fake_quant` (node index -> input scale
sx, fixed) makes the forward pass of those LUT nodes compute with the runtime's int8 images of their input and
codebook (`tf_form.fake_quant_input` / `fake_quant_codebook`, straight-through gradients), so the loss, the
gradients and the held-out checkpoint choice all see the quantised model (`merge --int8-finetune`,
`quantize --int8-finetune`). Its steps are recorded under `calibrate.int8_finetune_*`, leaving the float
calibration's `calibrate.steps` / `best_step` as they were.

`to_graph()` writes the trained values into a copy of the graph, so the `.emm` written from it is exactly the
model that was trained and evaluated (same float32 values; the runtime agrees with `tf_forward`).

Loss, per step (one batch of every task, losses summed over tasks):

    L = Σ_task [ CE(logits, labels) + λ · mean_{LUT nodes n of the task with match_output}
                                             mean|out_n − orig_n| / scale_n ]

`orig_n` is the output of the layer named by `node.match_output` ("task:layer") in that task's original
model, computed on the same batch (a Keras file is run by Keras; a .tflite file is rebuilt in Keras from what
the importer read, `reference.build_source_keras`). `scale_n` is the mean |orig_n| over (up to) 512 calibration samples, so
each L1 term is a *relative* mismatch (about 0.05–0.5 right after encoding) whatever the activation
magnitudes of a model are; averaging over a task's nodes makes λ independent of depth, so tasks of
different depth and scale are balanced. With that normalisation λ = 1 (`DEFAULT_L1_WEIGHT`) puts the
feature term on the same footing as a cross-entropy of about 0.1–1: large enough to keep the features
close to the originals (which is what protects against over-fitting a small calibration set, the paper's
point), small enough that the labels still drive the last layers.

Schedule: Adam (β = 0.9, 0.999), learning rate warmed up linearly over the first 5 % of the steps, then a
cosine decay to 5 % of its peak. Batch 64 per task. A held-out part of the calibration data (10 %) is
evaluated periodically; the checkpoint with the best mean accuracy over tasks (ties: lower held-out
cross-entropy) is kept. Step 0 — the model as it came from the encoder — is a candidate too, so calibration
never returns a model worse on the held-out part than the one it was given.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Callable, Mapping

from edgemerge.emm.constants import Keys
from edgemerge.emm.graph import MergedGraph
from edgemerge.errors import EdgemergeError
from edgemerge.training.data_split import TaskData, load_task_data, split_calibration  # noqa: F401 - public names
from edgemerge.training.optimizer import Adam, make_strategy, warmup_cosine
from edgemerge.training.targets import SCALE_SAMPLES, load_targets, measure_scales, target_outputs  # noqa: F401
from edgemerge.training.tf_form import EVAL_BATCH, TFMergedGraph, tf_forward  # noqa: F401 - public names
from edgemerge.training.trainer import Trainer

DEFAULT_L1_WEIGHT = 1.0
DEFAULT_BATCH_SIZE = 64
DEFAULT_LEARNING_RATE = 1e-3
MIN_DEFAULT_STEPS = 100
MAX_DEFAULT_STEPS = 2000

# the names these helpers had when they lived in this module (tests and callers of the old layout)
_load_targets, _target_outputs = load_targets, target_outputs


@dataclass
class CalibrationResult:
    graph: MergedGraph          # a copy of the input graph holding the trained (best-checkpoint) values
    report: dict


def default_steps(n_train: Mapping[str, int], batch_size: int) -> int:
    """About two epochs of the smallest task's training part, clipped to [100, 2000] steps."""
    smallest = min(n_train.values())
    return int(min(MAX_DEFAULT_STEPS, max(MIN_DEFAULT_STEPS, math.ceil(2 * smallest / batch_size))))


def _batch_sizes(data: Mapping[str, TaskData], batch_size: int, replicas: int) -> dict[str, int]:
    """Per task: the largest batch <= batch_size that the training part fills and the replicas split evenly."""
    batch = {}
    for task, d in data.items():
        b = min(batch_size, len(d.y_train))
        b -= b % replicas
        if b < replicas:
            raise EdgemergeError(f"task {task!r}: {len(d.y_train)} training sample(s) cannot fill "
                                 f"one batch on {replicas} replicas")
        batch[task] = b
    return batch


def _report(data, batch, reference, targets, skipped_l1, run, *, steps, seconds, batch_size, learning_rate,
            l1_weight, calib_fraction, val_fraction, seed, strat) -> dict:
    """The report `calibrate` returns (its docstring lists the keys)."""
    before, best_eval, last, best_step = run.history[0]["tasks"], run.best_eval, run.last, run.best_step
    per_task = {}
    for t in data:
        per_task[t] = {
            "n_train": int(len(data[t].y_train)), "n_val": int(len(data[t].y_val)),
            "held_out": data[t].held_out, "batch_size": batch[t],
            "reference_accuracy": reference[t],
            "accuracy_before": before[t]["accuracy"], "accuracy_after": best_eval[t]["accuracy"],
            "val_ce_before": before[t]["ce"], "val_ce_after": best_eval[t]["ce"],
            "final_loss": last[t]["loss"], "final_ce": last[t]["ce"], "final_l1": last[t]["l1"],
            "l1_layers": list(targets[t].layers), "l1_skipped_nodes": list(skipped_l1[t]),
            "l1_scales": [round(s, 6) for s in targets[t].scales],
            "steps": int(steps), "best_step": int(best_step), "seconds": seconds,
        }
    return {
        "tasks": per_task, "steps": int(steps), "best_step": int(best_step), "seconds": seconds,
        "train_seconds": round(run.train_seconds, 2), "batch_size": int(batch_size),
        "learning_rate": float(learning_rate), "l1_weight": l1_weight, "calib_fraction": float(calib_fraction),
        "val_fraction": float(val_fraction), "seed": int(seed),
        "strategy": {"name": type(strat).__name__, "replicas": int(strat.num_replicas_in_sync)},
        "history": run.history,
    }


def calibrate(graph: MergedGraph, originals: Mapping[str, str | os.PathLike],
              calib: Mapping[str, str | os.PathLike], *, steps: int | None = None,
              batch_size: int = DEFAULT_BATCH_SIZE, learning_rate: float = DEFAULT_LEARNING_RATE,
              l1_weight: float = DEFAULT_L1_WEIGHT, calib_fraction: float = 1.0, val_fraction: float = 0.1,
              strategy="default", seed: int = 0, eval_every: int | None = None,
              progress: Callable[[str], None] | None = None,
              l1_targets: Mapping[str, list[tuple[int, str]]] | None = None,
              fake_quant: Mapping[int, float] | None = None) -> CalibrationResult:
    """Trains the codebooks and float tensors of `graph` on every task at once (index maps fixed).

    originals: task -> original model file, .keras/.h5 or .tflite (targets of the L1 terms, and the reference
               accuracy).
    calib:     task -> .npz with `x` (NHWC float32) and `y` (labels); every task of the graph needs one.
    steps:     optimiser steps (each takes one batch of every task); default `default_steps`.
    l1_weight: λ of the feature-matching term (relative L1, see the module docstring); 0 = cross-entropy only.
    calib_fraction / val_fraction / seed: see `split_calibration`.
    strategy:  "default", "mirrored" (MirroredStrategy: local GPUs or the CPU), "multi-worker"
               (MultiWorkerMirroredStrategy from TF_CONFIG), or a tf.distribute.Strategy instance.
    progress:  called with a line of text at every evaluation (per-task loss and accuracy); a progress bar
               is drawn on stderr as well when it is a terminal. None: silent.
    l1_targets: task -> [(node index, layer name of the task's original model)]: the L1 terms of that task
               compare exactly these node outputs with these layers' outputs, whatever the nodes' ops (e.g.
               the plain conv layers that zippered models share, `edgemerge.zipper`); a node shared by two
               tasks may be listed for both. Tasks not listed keep the default: their LUT nodes with a
               match_output.
    fake_quant: node index -> input scale sx: these LUT nodes run with simulated int8 activations (the module
               docstring); None or empty: every node in float, as before.

    Returns the trained copy of the graph (values of the best held-out checkpoint; index maps, nodes and
    tensor order unchanged; metadata gains `calibrate.*` keys) and a report:
      tasks.<task>: n_train, n_val, held_out, batch_size, reference_accuracy (original model),
                    accuracy_before, accuracy_after, val_ce_before, val_ce_after (held-out part),
                    final_loss, final_ce, final_l1 (training loss over the last evaluation interval),
                    l1_layers, l1_skipped_nodes, l1_scales, steps, best_step, seconds
      steps, best_step, seconds, train_seconds, batch_size, learning_rate, l1_weight, calib_fraction,
      val_fraction, seed, strategy {name, replicas}, history [{step, lr, tasks: {accuracy, ce, train}}]
    """
    started = time.perf_counter()
    say = progress or (lambda message: None)
    tasks = [t.name for t in graph.tasks]
    for what, given in (("calibration data", calib), ("original model", originals)):
        missing = [t for t in tasks if t not in given]
        if missing:
            raise EdgemergeError(f"no {what} for task(s) {', '.join(missing)}")
        unknown = [t for t in given if t not in tasks]
        if unknown:
            raise EdgemergeError(f"{what} given for task(s) {', '.join(unknown)} not in the merged model "
                                 f"(tasks: {', '.join(tasks)})")
    if batch_size < 1:
        raise EdgemergeError(f"batch_size must be positive, got {batch_size}")
    if steps is not None and steps < 0:
        raise EdgemergeError(f"steps must be >= 0, got {steps}")
    if l1_weight < 0:
        raise EdgemergeError(f"l1_weight must be >= 0, got {l1_weight}")

    data = load_task_data(graph, {t: calib[t] for t in tasks}, seed=seed, calib_fraction=calib_fraction,
                          val_fraction=val_fraction)
    strat = make_strategy(strategy)
    replicas = int(strat.num_replicas_in_sync)
    batch = _batch_sizes(data, batch_size, replicas)
    steps = default_steps({t: len(d.y_train) for t, d in data.items()}, batch_size) if steps is None else steps
    eval_every = eval_every or max(1, steps // 10)

    with strat.scope():
        model = TFMergedGraph(graph, fake_quant=fake_quant)
        targets, skipped_l1 = load_targets(graph, {t: originals[t] for t in tasks}, tasks, l1_targets)
        optimiser = Adam(model.trainable_variables, warmup_cosine(learning_rate, max(1, steps)))
    for task in tasks:
        measure_scales(targets[task], data[task].x_train)
        if skipped_l1[task]:
            say(f"calibrate: task {task}: no match_output for LUT node(s) {', '.join(skipped_l1[task])}; "
                "their L1 terms are left out")
    lam = float(l1_weight)
    trainer = Trainer(model, targets, data, batch, strat, optimiser, l1_weight=lam, seed=seed)
    reference = trainer.reference_accuracy()
    before = trainer.evaluate()
    say(f"calibrate: {len(tasks)} task(s), {steps} steps, batch {', '.join(f'{t} {batch[t]}' for t in tasks)}, "
        f"lr {learning_rate:g}, l1 weight {lam:g}, {replicas} replica(s); before: " +
        ", ".join(f"{t} acc {before[t]['accuracy']:.4f} (original {reference[t]:.4f})" for t in tasks))
    run = trainer.run(steps, eval_every, before, say, show_progress=progress is not None)
    best_step, best_values = run.best_step, run.best_values

    model.assign(best_values)
    trained = model.to_graph(best_values)
    if fake_quant:   # a fine-tune of a calibrated model: the float calibration's record stays
        trained.metadata.update({Keys.Calibrate.INT8_FINETUNE_STEPS: int(steps),
                                 Keys.Calibrate.INT8_FINETUNE_BEST_STEP: int(best_step)})
    else:
        trained.metadata.update({Keys.Calibrate.STEPS: int(steps), Keys.Calibrate.BEST_STEP: int(best_step),
                                 Keys.Calibrate.SEED: int(seed), Keys.Calibrate.CALIB_FRACTION: float(calib_fraction),
                                 "calibrate.l1_weight": lam})
    seconds = round(time.perf_counter() - started, 2)
    report = _report(data, batch, reference, targets, skipped_l1, run, steps=steps, seconds=seconds,
                     batch_size=batch_size, learning_rate=learning_rate, l1_weight=lam,
                     calib_fraction=calib_fraction, val_fraction=val_fraction, seed=seed, strat=strat)
    if fake_quant:
        report["fake_quant"] = {graph.nodes[i].name: float(sx) for i, sx in sorted(fake_quant.items())}
    per_task = report["tasks"]
    say(f"calibrate: done in {seconds} s, best step {best_step}: " + ", ".join(
        f"{t} {per_task[t]['accuracy_before']:.4f} -> {per_task[t]['accuracy_after']:.4f}" for t in tasks))
    return CalibrationResult(trained, report)
