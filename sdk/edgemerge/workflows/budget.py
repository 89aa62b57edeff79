"""The budget search: r/C per merged-layer group under `--budget max-drop=X` / `min-compression=Y`.

A workflow above merging and training: it merges candidates (`merging`), measures them with the TF form and
calibrates the finalists (`training`); neither of those calls back into it.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from edgemerge.emm.constants import Keys, Op
from edgemerge.emm.graph import MergedGraph, Node
from edgemerge.errors import EdgemergeError
from edgemerge.training.calibrate import calibrate
from edgemerge.training.data_split import split_calibration
from edgemerge.training.targets import load_original
from edgemerge.training.tf_form import EVAL_BATCH, LUT_OPS, tf_forward

R_CANDIDATES = (4, 8, 16, 32)
C_CANDIDATES = (16, 32, 64, 128, 256)


@dataclass(frozen=True)
class Budget:
    """max_drop: largest allowed accuracy drop of any task against its original model (0.01 = 1 point);
    min_compression: smallest allowed original-bytes / file-bytes ratio. Either or both."""
    max_drop: float | None = None
    min_compression: float | None = None


def parse_budget(text: str | Budget) -> Budget:
    """Parses "max-drop=0.01", "max-drop=1%", "min-compression=20" or "min-compression=20x" (comma-separated
    to give both)."""
    if isinstance(text, Budget):
        return text
    max_drop = min_compression = None
    for item in str(text).split(","):
        key, sep, value = item.strip().partition("=")
        value = value.strip().lower()
        try:
            if key == "max-drop" and sep:
                max_drop = float(value[:-1]) / 100 if value.endswith("%") else float(value)
                if not 0 <= max_drop < 1:
                    raise ValueError
                continue
            if key == "min-compression" and sep:
                min_compression = float(value[:-1] if value.endswith("x") else value)
                if min_compression <= 0:
                    raise ValueError
                continue
        except ValueError:
            pass
        raise EdgemergeError(f"budget {item.strip()!r}: expected max-drop=X (0 <= X < 1, or X%) or "
                             "min-compression=Y (Y > 0, e.g. 20 or 20x)")
    return Budget(max_drop, min_compression)


@dataclass
class RCSearchResult:
    layer_rc: dict[str, tuple[int, int]]   # the chosen (r, C) per group key
    table: list[dict]                      # every setting measured: what it was, bytes, compression, accuracy
    graph: MergedGraph                     # the chosen merge (calibrated when calibrate_final)
    report: dict                           # final check: compression, per-task accuracy/drop, within_budget


@dataclass
class _Group:
    key: str
    codebook: int
    nodes: list[Node]


def lut_groups(graph: MergedGraph) -> list[_Group]:
    """One group per codebook tensor shared by LUT nodes. The key is the first node's first source
    ("task:layer", what `--layer-rc` accepts), else the node's name."""
    groups: dict[int, _Group] = {}
    for node in graph.nodes:
        if node.op in LUT_OPS:
            if node.weight not in groups:
                groups[node.weight] = _Group(node.sources[0] if node.sources else node.name, node.weight, [])
            groups[node.weight].nodes.append(node)
    return list(groups.values())


def _estimated_group_bytes(graph: MergedGraph, group: _Group, r: int, c: int) -> int:
    """Bytes of the group's codebook and index maps at (r, C), from the node shapes."""
    from edgemerge.emm.constants import index_bits

    total, s_cb = 0, 0
    for node in group.nodes:
        in_shape = graph.value_shape(node.input)
        cin = int(np.prod(in_shape)) if node.op == Op.LUT_DENSE else in_shape[2]
        s = -(-cin // r)
        s_cb = max(s_cb, s)
        total += (node.kernel[0] * node.kernel[1] * s * node.out_shape[2] * index_bits(c) + 7) // 8
    return total + 4 * s_cb * c * r


def _default_merge_fn(sources: Mapping[str, str | os.PathLike], seed: int, options: dict) -> Callable:
    from edgemerge.importers import load_source_model
    from edgemerge.merging.merge import merge_models

    models = {task: load_source_model(path) for task, path in sources.items()}
    return lambda layer_rc: merge_models(models, layer_rc=layer_rc, **{"seed": seed, **options}).graph


def search_rc(sources: Mapping[str, str | os.PathLike] | None, originals: Mapping[str, str | os.PathLike],
              calib: Mapping[str, str | os.PathLike], budget: str | Budget, *,
              merge_fn: Callable[[dict[str, tuple[int, int]]], MergedGraph] | None = None,
              merge_options: dict | None = None,
              r_values=R_CANDIDATES, c_values=C_CANDIDATES, proxy_samples: int = 512,
              val_fraction: float = 0.1, seed: int = 0, calibrate_final: bool = True,
              calibrate_kwargs: dict | None = None, progress: Callable[[str], None] | None = None) -> RCSearchResult:
    """Chooses (r, C) per merged-layer group for a budget, the way the paper tuned them: one group at a time.

    merge_fn(layer_rc) -> MergedGraph merges the sources with the given (r, C) per group key (groups not in
    `layer_rc` get the merger's defaults). Without it, `sources` (task -> model file) are imported once and
    merged with `edgemerge.merging.merge.merge_models(..., **merge_options)` (e.g. preset, alignment, kmeans_inits,
    n_jobs). Group keys are those of `lut_groups` on the default merge ("task:layer" of a member).

    1. Proxy (cheap): top-1 accuracy WITHOUT calibration on a held-out slice (`proxy_samples` per task, from
       the held-out part `split_calibration` gives calibrate() too), against each original model on the same
       slice. Baseline: every group at its least compressive candidate.
    2. Per group, candidates are ordered by the group's estimated bytes; assuming accuracy falls as bytes
       fall, a binary search finds the most compressive candidate whose drop against the baseline (that
       group changed, all others at baseline) is at most a tolerance t: about log2(|r|·|C|) ≈ 5 merges per
       group and tolerance. Results are cached, so later tolerances mostly reuse them.
    3. max-drop=X: t starts at X minus the baseline's own drop and is halved until the combined merge's
       proxy drop is within X. min-compression=Y: t climbs a ladder (0, 0.25 %, ... 32 %, 100 %) until the
       combined merge's exact file size reaches Y (and, with both, the drop stays within X).
    4. The chosen merge is calibrated (`calibrate_kwargs` passed on) and checked against the budget with the
       calibrated accuracy; `report["within_budget"]` says whether it holds. The proxy ignores calibration,
       so it is conservative for max-drop.

    Cost: merges ≈ 1 + G·(5..10) + ladder steps (G = groups), each followed by a forward pass over
    2·proxy_samples samples; then one calibration.
    """
    from edgemerge import emm

    say = progress or (lambda message: None)
    started = time.perf_counter()
    budget = parse_budget(budget)
    if budget.max_drop is None and budget.min_compression is None:
        raise EdgemergeError("search_rc needs a budget: max-drop=X and/or min-compression=Y")
    if not 0 < val_fraction < 1:
        raise EdgemergeError(f"search_rc needs a held-out part: val_fraction in (0, 1), got {val_fraction}")
    if merge_fn is None:
        if not sources:
            raise EdgemergeError("search_rc needs either sources (task -> model file) or merge_fn")
        merge_fn = _default_merge_fn(sources, seed, dict(merge_options or {}))
    candidates_rc = [(int(r), int(c)) for r in r_values for c in c_values]

    table: list[dict] = []
    cache: dict[tuple, dict] = {}
    default = merge_fn({})
    tasks = [t.name for t in default.tasks]
    groups = lut_groups(default)
    if not groups:
        raise EdgemergeError("the merged model has no LUT layers: nothing to choose r/C for")
    order = {g.key: sorted(candidates_rc, key=lambda rc, _g=g: (-_estimated_group_bytes(default, _g, *rc), -rc[1]))
             for g in groups}
    baseline = {g.key: order[g.key][0] for g in groups}

    # ---- the proxy slice and the originals' accuracy on it ---------------------------------------
    from edgemerge.datasets import load_labelled

    slices, original_acc = {}, {}
    for task in tasks:
        data = load_labelled(calib[task], default.task_input_shape(task))
        _, val = split_calibration(len(data.y), task=task, seed=seed, val_fraction=val_fraction)
        val = val[:proxy_samples]
        slices[task] = (data.x[val], data.y[val])
        orig, _ = load_original(Path(originals[task]))
        pred = np.concatenate([np.asarray(orig(data.x[val][i:i + EVAL_BATCH], training=False))
                               for i in range(0, len(val), EVAL_BATCH)])
        original_acc[task] = float(np.mean(np.argmax(pred, axis=1) == data.y[val]))
    original_bytes = int(default.metadata.get(Keys.General.ORIGINAL_BYTES, 0))

    def measure(layer_rc: dict[str, tuple[int, int]], what: str) -> dict:
        key = tuple(sorted(layer_rc.items()))
        if key in cache:
            return cache[key]
        row = {"what": what, "layer_rc": {k: list(v) for k, v in layer_rc.items()}}
        try:
            graph = default if not layer_rc else merge_fn(dict(layer_rc))
        except Exception as e:  # noqa: BLE001 - any failure of the caller's merge (e.g. C above the number
            # of sub-vectors) makes that setting infeasible; the search goes on without it
            row.update(error=f"{type(e).__name__}: {e}", feasible=False)
            cache[key] = row
            table.append(row)
            return row
        file_bytes = len(emm.to_bytes(graph))
        acc = {t: float(np.mean(np.argmax(tf_forward(graph, t, slices[t][0]), axis=1) == slices[t][1]))
               for t in tasks}
        row.update(feasible=True, file_bytes=file_bytes,
                   compression=original_bytes / file_bytes if original_bytes else None, accuracy=acc,
                   drop=max(original_acc[t] - acc[t] for t in tasks))
        cache[key] = row
        table.append(row)
        say(f"search_rc: {what}: {file_bytes} bytes" +
            (f" ({row['compression']:.1f}x)" if row["compression"] else "") +
            ", accuracy " + ", ".join(f"{t} {acc[t]:.4f}" for t in tasks) + f", drop {row['drop']:.4f}")
        return row

    measure({}, "default")
    base_row = measure(baseline, "baseline")
    if not base_row["feasible"]:
        raise EdgemergeError(f"the baseline setting {baseline} does not merge: {base_row['error']}")

    def increase(group: _Group, rc: tuple[int, int]) -> float:
        """Accuracy lost (worst task) against the baseline when only `group` is set to `rc`."""
        if rc == baseline[group.key]:
            return 0.0
        row = measure({**baseline, group.key: rc}, f"{group.key}={rc[0]}/{rc[1]}")
        if not row["feasible"]:
            return math.inf
        return max(base_row["accuracy"][t] - row["accuracy"][t] for t in tasks)

    def choose(tolerance: float) -> dict[str, tuple[int, int]]:
        out = {}
        for g in groups:
            cands = order[g.key]
            lo, hi = 0, len(cands) - 1
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if increase(g, cands[mid]) <= tolerance + 1e-12:
                    lo = mid
                else:
                    hi = mid - 1
            # Accuracy is not strictly monotone in bytes: a more compressive setting measured on the way
            # (now or for another tolerance) that fits is better than where the bisection stopped.
            for k in range(len(cands) - 1, lo, -1):
                key = tuple(sorted({**baseline, g.key: cands[k]}.items()))
                if key in cache and increase(g, cands[k]) <= tolerance + 1e-12:
                    lo = k
                    break
            out[g.key] = cands[lo]
        return out

    def fits(row: dict, drop_ok: bool = True) -> bool:
        if not row["feasible"]:
            return False
        if budget.max_drop is not None and drop_ok and row["drop"] > budget.max_drop + 1e-12:
            return False
        return budget.min_compression is None or (row["compression"] or 0) >= budget.min_compression

    chosen, chosen_row = baseline, base_row
    if budget.min_compression is None:
        # Per-group drops do not simply add up: shrink the tolerance until the combination fits.
        tolerance = max(budget.max_drop - base_row["drop"], 0.0)
        for _ in range(8):
            rc = choose(tolerance)
            row = measure(rc, f"combined t={tolerance:.4f}")
            if fits(row):
                chosen, chosen_row = rc, row
                break
            if tolerance == 0.0:
                break
            tolerance = tolerance * 0.7 if tolerance > 1e-3 else 0.0
    else:
        ladder = [0.0, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 1.0]
        if budget.max_drop is not None:
            ladder = [t for t in ladder if t <= max(budget.max_drop - base_row["drop"], 0.0)] or [0.0]
        best = None
        for tolerance in ladder:
            rc = choose(tolerance)
            row = measure(rc, f"combined t={tolerance:.4f}")
            if row["feasible"] and (best is None or row["compression"] > best[1]["compression"]) and \
                    (budget.max_drop is None or row["drop"] <= budget.max_drop + 1e-12):
                best = (rc, row)
            if fits(row):
                break
        if best is not None:
            chosen, chosen_row = best

    say(f"search_rc: chose {', '.join(f'{k}={r}/{c}' for k, (r, c) in chosen.items())} "
        f"(proxy drop {chosen_row['drop']:.4f}, {chosen_row['file_bytes']} bytes)")
    graph = default if chosen == {} else merge_fn(dict(chosen))
    calibration = None
    accuracy, reference = dict(chosen_row["accuracy"]), dict(original_acc)
    if calibrate_final:
        kwargs = {"seed": seed, "val_fraction": val_fraction, "progress": progress, **(calibrate_kwargs or {})}
        result = calibrate(graph, originals, calib, **kwargs)
        graph, calibration = result.graph, result.report
        accuracy = {t: calibration["tasks"][t]["accuracy_after"] for t in tasks}
        reference = {t: calibration["tasks"][t]["reference_accuracy"] for t in tasks}
    file_bytes = len(emm.to_bytes(graph))
    compression = original_bytes / file_bytes if original_bytes else None
    drop = {t: reference[t] - accuracy[t] for t in tasks}
    within = (budget.max_drop is None or max(drop.values()) <= budget.max_drop + 1e-12) and \
             (budget.min_compression is None or (compression or 0) >= budget.min_compression)
    report = {
        "budget": dataclasses.asdict(budget), "layer_rc": {k: list(v) for k, v in chosen.items()},
        "file_bytes": file_bytes, "original_bytes": original_bytes, "compression": compression,
        "calibrated": calibrate_final, "accuracy": accuracy, "reference_accuracy": reference, "drop": drop,
        "proxy_drop": chosen_row["drop"], "within_budget": bool(within),
        "merges": sum(1 for row in table if "error" not in row) + 1, "seconds": round(time.perf_counter() - started, 2),
        "calibration": calibration,
    }
    say(f"search_rc: {'within' if within else 'OUTSIDE'} budget: " +
        (f"{compression:.1f}x, " if compression else "") +
        ", ".join(f"{t} drop {drop[t]:.4f}" for t in tasks) + f" ({report['seconds']} s)")
    return RCSearchResult(dict(chosen), table, graph, report)
