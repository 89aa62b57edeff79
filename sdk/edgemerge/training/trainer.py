"""The calibration loop: all tasks stepped together under a tf.distribute strategy, checkpoints judged on the
held-out part (module docstring of `edgemerge.training.calibrate` for the loss and the schedule)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from edgemerge.training.data_split import TaskData
from edgemerge.training.optimizer import Adam
from edgemerge.training.progress import progress_bar
from edgemerge.training.targets import Targets, target_outputs
from edgemerge.training.tf_form import TFMergedGraph, batched_logits


@dataclass
class TrainOutcome:
    """What `Trainer.run` found: the best checkpoint and the record of the run."""
    best_step: int
    best_values: dict
    best_eval: dict
    before: dict
    last: dict                   # per task: training ce, l1, loss, accuracy over the last evaluation interval
    history: list = field(default_factory=list)
    train_seconds: float = 0.0


class Trainer:
    """One calibration run. `model`, `targets` and `optimiser` must have been created in `strategy.scope()`;
    `batch[task]` is the global batch of each task, `l1_weight` the λ of the L1 terms."""

    def __init__(self, model: TFMergedGraph, targets: dict[str, Targets], data: dict[str, TaskData],
                 batch: dict[str, int], strategy, optimiser: Adam, *, l1_weight: float, seed: int):
        import tensorflow as tf

        self.model, self.targets, self.data, self.batch = model, targets, data, batch
        self.strategy, self.optimiser = strategy, optimiser
        self.l1_weight, self.seed = float(l1_weight), seed
        self.tasks = list(data)
        self.variables = model.trainable_variables
        self._train_step = tf.function(self._train_step_eager)
        self._eval_fns = {
            task: tf.function(lambda xb, _t=task: model.logits(_t, xb),
                              input_signature=[tf.TensorSpec([None, *model.graph.task_input_shape(task)], tf.float32)])
            for task in self.tasks}

    # ---- data: each element is {task: (x, y)}, one batch of every task ----------------------------
    def _dataset(self, ctx):
        import tensorflow as tf

        parts = {}
        for k, task in enumerate(self.tasks):
            d = self.data[task]
            ds = tf.data.Dataset.from_tensor_slices((d.x_train, d.y_train.astype(np.int32)))
            if ctx.num_input_pipelines > 1:
                ds = ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
            ds = ds.shuffle(len(d.y_train), seed=self.seed * 1009 + k, reshuffle_each_iteration=True).repeat()
            parts[task] = ds.batch(ctx.get_per_replica_batch_size(self.batch[task]), drop_remainder=True)
        return tf.data.Dataset.zip(parts).prefetch(2)

    # ---- one step ---------------------------------------------------------------------------------
    def _task_losses(self, task: str, x, y):
        """Per-replica sums normalised by the global batch, so summing over replicas gives means."""
        import tensorflow as tf

        tg = self.targets[task]
        logits, outs = self.model.forward(task, x, want=tg.nodes)
        gb = float(self.batch[task])
        ce = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)) / gb
        l1 = tf.constant(0.0)
        if tg.nodes and self.l1_weight > 0:
            orig = target_outputs(tg, x)
            terms = []
            for node_i, o, scale in zip(tg.nodes, orig, tg.scales):
                diff = tf.abs(tf.reshape(outs[node_i], [tf.shape(x)[0], -1]) - tf.reshape(o, [tf.shape(x)[0], -1]))
                terms.append(tf.reduce_sum(tf.reduce_mean(diff, axis=1)) / (gb * scale))
            l1 = tf.add_n(terms) / len(terms)
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), y), tf.float32))
        return ce, l1, correct / gb

    def _replica_step(self, batches):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            total = tf.constant(0.0)
            metrics = {}
            for task in self.tasks:
                x, y = batches[task]
                ce, l1, acc = self._task_losses(task, x, y)
                total += ce + self.l1_weight * l1
                metrics[task] = (ce, l1, acc)
        grads = tape.gradient(total, self.variables)
        grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g) for g, v in zip(grads, self.variables)]
        return grads, metrics

    def _train_step_eager(self, iterator):
        import tensorflow as tf

        strat = self.strategy
        grads, metrics = strat.run(self._replica_step, args=(next(iterator),))
        grads = [strat.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in grads]
        lr = self.optimiser.apply(grads)
        metrics = tf.nest.map_structure(lambda m: strat.reduce(tf.distribute.ReduceOp.SUM, m, axis=None), metrics)
        return lr, metrics

    # ---- judging ------------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, dict]:
        """Accuracy and cross-entropy of every task on its held-out part."""
        out = {}
        for task in self.tasks:
            d = self.data[task]
            logits = batched_logits(self.model, task, d.x_val, fn=self._eval_fns[task]).astype(np.float64)
            logits -= logits.max(axis=1, keepdims=True)
            logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
            out[task] = {"accuracy": float(np.mean(np.argmax(logits, axis=1) == d.y_val)),
                         "ce": float(-np.mean(logp[np.arange(len(d.y_val)), d.y_val]))}
        return out

    def score(self, ev: dict) -> tuple[float, float]:
        """Mean accuracy over tasks, ties broken by lower mean cross-entropy (higher is better)."""
        return (float(np.mean([ev[t]["accuracy"] for t in self.tasks])),
                -float(np.mean([ev[t]["ce"] for t in self.tasks])))

    def reference_accuracy(self) -> dict[str, float]:
        """Accuracy of the original models on the held-out part."""
        out = {}
        for task in self.tasks:
            d = self.data[task]
            pred = batched_logits(self.model, task, d.x_val,
                                  fn=lambda xb, _t=task: target_outputs(self.targets[_t], xb)[-1])
            out[task] = float(np.mean(np.argmax(pred, axis=1) == d.y_val))
        return out

    # ---- the loop -------------------------------------------------------------------------------------
    def run(self, steps: int, eval_every: int, before: dict, say: Callable[[str], None],
            show_progress: bool) -> TrainOutcome:
        """`steps` optimiser steps, evaluating every `eval_every` and at the end; step 0 (`before`, the model
        as given) is a candidate checkpoint too, so the result is never worse on the held-out part."""
        tasks, lam = self.tasks, self.l1_weight
        best_score = self.score(before)
        outcome = TrainOutcome(0, self.model.values(), before, before,
                               {t: {"ce": float("nan"), "l1": float("nan"), "loss": float("nan"),
                                    "accuracy": float("nan")} for t in tasks},
                               [{"step": 0, "tasks": before}])
        started = time.perf_counter()
        if steps > 0:
            iterator = iter(self.strategy.distribute_datasets_from_function(self._dataset))
            running = {t: np.zeros(3) for t in tasks}
            count = 0
            with progress_bar(steps, "calibrating", enabled=show_progress) as bar:
                for step in range(1, steps + 1):
                    lr, metrics = self._train_step(iterator)
                    for t in tasks:
                        running[t] += [float(v) for v in metrics[t]]
                    count += 1
                    bar.advance()
                    if step % eval_every and step != steps:
                        continue
                    for t in tasks:
                        ce, l1, acc = running[t] / count
                        outcome.last[t] = {"ce": ce, "l1": l1, "loss": ce + lam * l1, "accuracy": acc}
                    running = {t: np.zeros(3) for t in tasks}
                    count = 0
                    ev = self.evaluate()
                    outcome.history.append({"step": step, "lr": float(lr),
                                            "tasks": {t: {**ev[t], "train": dict(outcome.last[t])} for t in tasks}})
                    improved = self.score(ev) > best_score
                    if improved:
                        best_score = self.score(ev)
                        outcome.best_step, outcome.best_values, outcome.best_eval = step, self.model.values(), ev
                    last = outcome.last
                    say(f"calibrate: step {step}/{steps} lr {float(lr):.2e} | " + " | ".join(
                        f"{t} loss {last[t]['loss']:.4f} (ce {last[t]['ce']:.4f} l1 {last[t]['l1']:.4f}) "
                        f"acc {last[t]['accuracy']:.3f} held-out {ev[t]['accuracy']:.4f}" for t in tasks)
                        + (" *" if improved else ""))
        outcome.train_seconds = time.perf_counter() - started
        return outcome
