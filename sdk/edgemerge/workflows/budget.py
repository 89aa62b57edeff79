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
    report: dict                           # final check: compression, per-task accuracy/drop, within_budget,
                                           # missed (the bounds it misses), finalists, ceiling_bytes


class BudgetNotMet(EdgemergeError):
    """Nothing the search tried meets the budget; `summary` holds what it found (nothing was written)."""

    def __init__(self, message: str, summary: dict):
        super().__init__(message)
        self.summary = summary


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


TOLERANCE_LADDER = (0.0, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 1.0)
EPS = 1e-12


def missed_bounds(budget: Budget, drop: float, compression: float | None) -> list[str]:
    """The bounds of `budget` that a model with this worst-task drop and compression misses, as text."""
    out = []
    if budget.max_drop is not None and drop > budget.max_drop + EPS:
        out.append(f"max-drop={budget.max_drop:g} (worst task drops {drop:.4f})")
    if budget.min_compression is not None and (compression or 0) < budget.min_compression:
        out.append(f"min-compression={budget.min_compression:g} (reaches {compression or 0:.2f}x)")
    return out


def _closeness(budget: Budget, drop: float, compression: float | None) -> tuple:
    """Sort key, lower is better: within budget first (then the smallest file), else the nearest miss."""
    comp = compression or 0.0
    drop_miss = max(0.0, drop - budget.max_drop) if budget.max_drop is not None else 0.0
    comp_miss = max(0.0, budget.min_compression - comp) / budget.min_compression \
        if budget.min_compression is not None else 0.0
    return (drop_miss > EPS or comp_miss > 0, drop_miss + comp_miss, -comp, drop)


class _Search:
    """One budget search; see `search_rc`. Holds the proxy slices, the cache of measured settings and the
    table of everything tried."""

    def __init__(self, merge_fn, default: MergedGraph, ceiling: MergedGraph, budget: Budget, candidates_rc,
                 originals, calib, *, seed: int, val_fraction: float, proxy_samples: int, say, show_progress: bool):
        from edgemerge import emm

        self.merge_fn, self.default, self.budget, self.say = merge_fn, default, budget, say
        self.show_progress = show_progress
        self.tasks = [t.name for t in default.tasks]
        self.groups = lut_groups(default)
        if not self.groups:
            raise EdgemergeError("the merged model has no LUT layers: nothing to choose r/C for")
        self.ceiling_bytes = len(emm.to_bytes(ceiling))
        ceiling_rc = {g.key: (g.nodes[0].seg_len, g.nodes[0].codewords) for g in lut_groups(ceiling)}
        self.order = {}
        for g in self.groups:
            cands = sorted(candidates_rc, key=lambda rc, _g=g: (-_estimated_group_bytes(default, _g, *rc), -rc[1]))
            if g.key in ceiling_rc:
                # never larger than the ceiling (the accu preset): candidates above its bytes for this group go
                limit = _estimated_group_bytes(default, g, *ceiling_rc[g.key])
                cands = [rc for rc in cands if _estimated_group_bytes(default, g, *rc) <= limit] or [ceiling_rc[g.key]]
            self.order[g.key] = cands
        self.baseline = {g.key: self.order[g.key][0] for g in self.groups}
        self.table: list[dict] = []
        self.cache: dict[tuple, dict] = {}
        self.original_bytes = int(default.metadata.get(Keys.General.ORIGINAL_BYTES, 0))
        self._load_proxy_slices(originals, calib, seed, val_fraction, proxy_samples)

    def _load_proxy_slices(self, originals, calib, seed, val_fraction, proxy_samples) -> None:
        from edgemerge.datasets import load_labelled

        self.slices, self.original_acc = {}, {}
        for task in self.tasks:
            data = load_labelled(calib[task], self.default.task_input_shape(task))
            _, val = split_calibration(len(data.y), task=task, seed=seed, val_fraction=val_fraction)
            val = val[:proxy_samples]
            self.slices[task] = (data.x[val], data.y[val])
            orig, _ = load_original(Path(originals[task]))
            pred = np.concatenate([np.asarray(orig(data.x[val][i:i + EVAL_BATCH], training=False))
                                   for i in range(0, len(val), EVAL_BATCH)])
            self.original_acc[task] = float(np.mean(np.argmax(pred, axis=1) == data.y[val]))

    @staticmethod
    def key(layer_rc: Mapping) -> tuple:
        return tuple(sorted(layer_rc.items()))

    def measure(self, layer_rc: dict[str, tuple[int, int]], what: str) -> dict:
        """Merges with `layer_rc`, measures file bytes and proxy accuracy (cached); infeasible when the merge
        fails or the file would be larger than the ceiling."""
        from edgemerge import emm

        key = self.key(layer_rc)
        if key in self.cache:
            return self.cache[key]
        row = {"what": what, "layer_rc": {k: list(v) for k, v in layer_rc.items()}}
        self.cache[key] = row
        self.table.append(row)
        try:
            graph = self.default if not layer_rc else self.merge_fn(dict(layer_rc))
        except Exception as e:  # noqa: BLE001 - any failure of the caller's merge (e.g. C above the number
            # of sub-vectors) makes that setting infeasible; the search goes on without it
            row.update(error=f"{type(e).__name__}: {e}", feasible=False)
            return row
        file_bytes = len(emm.to_bytes(graph))
        acc = {t: float(np.mean(np.argmax(tf_forward(graph, t, self.slices[t][0]), axis=1) == self.slices[t][1]))
               for t in self.tasks}
        row.update(feasible=file_bytes <= self.ceiling_bytes, file_bytes=file_bytes,
                   compression=self.original_bytes / file_bytes if self.original_bytes else None, accuracy=acc,
                   drop=max(self.original_acc[t] - acc[t] for t in self.tasks))
        if file_bytes > self.ceiling_bytes:
            row["error"] = f"{file_bytes} bytes, larger than the ceiling's {self.ceiling_bytes}"
        self.say(f"search_rc: {what}: {file_bytes} bytes" +
                 (f" ({row['compression']:.1f}x)" if row["compression"] else "") +
                 ", accuracy " + ", ".join(f"{t} {acc[t]:.4f}" for t in self.tasks) + f", drop {row['drop']:.4f}")
        return row

    def increase(self, group: _Group, rc: tuple[int, int], base_row: dict) -> float:
        """Accuracy lost (worst task) against the baseline when only `group` is set to `rc`."""
        if rc == self.baseline[group.key]:
            return 0.0
        row = self.measure({**self.baseline, group.key: rc}, f"{group.key}={rc[0]}/{rc[1]}")
        if not row["feasible"]:
            return math.inf
        return max(base_row["accuracy"][t] - row["accuracy"][t] for t in self.tasks)

    def choose(self, tolerance: float, base_row: dict) -> dict[str, tuple[int, int]]:
        """Per group, the most compressive candidate losing at most `tolerance` against the baseline."""
        out = {}
        for g in self.groups:
            cands = self.order[g.key]
            lo, hi = 0, len(cands) - 1
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if self.increase(g, cands[mid], base_row) <= tolerance + EPS:
                    lo = mid
                else:
                    hi = mid - 1
            # Accuracy is not strictly monotone in bytes: a more compressive setting measured on the way
            # (now or for another tolerance) that fits is better than where the bisection stopped.
            for k in range(len(cands) - 1, lo, -1):
                if self.key({**self.baseline, g.key: cands[k]}) in self.cache and \
                        self.increase(g, cands[k], base_row) <= tolerance + EPS:
                    lo = k
                    break
            out[g.key] = cands[lo]
        return out

    def fits(self, row: dict) -> bool:
        return row["feasible"] and not missed_bounds(self.budget, row["drop"], row["compression"])

    def sweep(self, base_row: dict) -> None:
        """Combined settings for a ladder of per-group tolerances (all measured into the table)."""
        budget = self.budget
        if budget.min_compression is None:
            # Per-group drops do not simply add up: shrink the tolerance until the combination fits.
            tolerance = max(budget.max_drop - base_row["drop"], 0.0)
            for _ in range(8):
                row = self.measure(self.choose(tolerance, base_row), f"combined t={tolerance:.4f}")
                if self.fits(row) or tolerance == 0.0:
                    break
                tolerance = tolerance * 0.7 if tolerance > 1e-3 else 0.0
            return
        ladder = list(TOLERANCE_LADDER)
        if budget.max_drop is not None:
            ladder = [t for t in ladder if t <= max(budget.max_drop - base_row["drop"], 0.0)] or [0.0]
        for tolerance in ladder:
            if self.fits(self.measure(self.choose(tolerance, base_row), f"combined t={tolerance:.4f}")):
                break

    def finalists(self, count: int) -> list[dict]:
        """The settings to calibrate: the proxy's choice (the smallest file that fits by the proxy, else the
        nearest miss) and the next more compressive combinations, which calibration may bring within budget."""
        rows = [r for r in self.table if r["feasible"] and (r["what"].startswith("combined") or r["what"] == "baseline")]
        rows = list({self.key({k: tuple(v) for k, v in r["layer_rc"].items()}): r for r in rows}.values())
        rows.sort(key=lambda r: r["file_bytes"])
        if not rows:
            return []
        pick = min(rows, key=lambda r: _closeness(self.budget, r["drop"], r["compression"]))
        at = rows.index(pick)
        return [pick] + rows[max(0, at - (count - 1)):at][::-1]


def search_rc(sources: Mapping[str, str | os.PathLike] | None, originals: Mapping[str, str | os.PathLike],
              calib: Mapping[str, str | os.PathLike], budget: str | Budget, *,
              merge_fn: Callable[[dict[str, tuple[int, int]]], MergedGraph] | None = None,
              merge_options: dict | None = None, ceiling: MergedGraph | None = None,
              r_values=R_CANDIDATES, c_values=C_CANDIDATES, proxy_samples: int = 512,
              val_fraction: float = 0.1, seed: int = 0, calibrate_final: bool = True, finalists: int = 3,
              calibrate_kwargs: dict | None = None, progress: Callable[[str], None] | None = None) -> RCSearchResult:
    """Chooses (r, C) per merged-layer group for a budget, the way the paper tuned them: one group at a time.

    merge_fn(layer_rc) -> MergedGraph merges the sources with the given (r, C) per group key (groups not in
    `layer_rc` get the merger's defaults). Without it, `sources` (task -> model file) are imported once and
    merged with `edgemerge.merging.merge.merge_models(..., **merge_options)` (e.g. preset, alignment, kmeans_inits,
    n_jobs). Group keys are those of `lut_groups` on the default merge ("task:layer" of a member).

    0. Ceiling: nothing larger than `ceiling` (default: the default merge; the CLI passes the `accu` preset's
       merge). A group's candidates are those whose estimated bytes are at most the ceiling's for that group,
       and a setting whose exact file is larger than the ceiling's is infeasible.
    1. Proxy (cheap): top-1 accuracy WITHOUT calibration on a held-out slice (`proxy_samples` per task, from
       the held-out part `split_calibration` gives calibrate() too), against each original model on the same
       slice. Baseline: every group at its least compressive candidate.
    2. Per group, candidates are ordered by the group's estimated bytes; assuming accuracy falls as bytes
       fall, a binary search finds the most compressive candidate whose drop against the baseline (that
       group changed, all others at baseline) is at most a tolerance t. Results are cached.
    3. max-drop=X: t starts at X minus the baseline's own drop and shrinks until the combined merge's
       proxy drop is within X. min-compression=Y: t climbs a ladder (0, 0.25 %, ... 32 %, 100 %) until the
       combined merge's exact file size reaches Y (and, with both, the drop stays within X).
    4. Finalists (up to `finalists`): the proxy's choice and the next more compressive combinations are
       calibrated (`calibrate_kwargs` passed on) and judged on the calibrated held-out accuracy; the smallest
       file within budget wins, else the nearest miss. `report["within_budget"]` says whether it holds and
       `report["missed"]` names the bounds missed. Without `calibrate_final` the proxy judges alone.
    """
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
    default = merge_fn({})
    search = _Search(merge_fn, default, default if ceiling is None else ceiling, budget,
                     [(int(r), int(c)) for r in r_values for c in c_values], originals, calib, seed=seed,
                     val_fraction=val_fraction, proxy_samples=proxy_samples, say=say,
                     show_progress=progress is not None)
    search.measure({}, "default")
    base_row = search.measure(search.baseline, "baseline")
    if not base_row["feasible"]:
        raise EdgemergeError(f"the baseline setting {search.baseline} does not merge: {base_row['error']}")
    search.sweep(base_row)
    kwargs = {"seed": seed, "val_fraction": val_fraction, "progress": progress, **(calibrate_kwargs or {})}
    chosen, graph, calibration, final = _judge_finalists(search, finalists if calibrate_final else 1,
                                                         calibrate_final, originals, calib, kwargs)
    report = {
        "budget": dataclasses.asdict(budget), "layer_rc": {k: list(v) for k, v in chosen.items()},
        "file_bytes": final["file_bytes"], "original_bytes": search.original_bytes,
        "ceiling_bytes": search.ceiling_bytes, "compression": final["compression"],
        "calibrated": calibrate_final, "accuracy": final["accuracy"], "reference_accuracy": final["reference"],
        "drop": final["drop"], "proxy_drop": final["proxy_drop"], "within_budget": not final["missed"],
        "missed": final["missed"], "finalists": final["finalists"],
        "merges": sum(1 for row in search.table if "error" not in row) + len(final["finalists"]),
        "seconds": round(time.perf_counter() - started, 2), "calibration": calibration,
    }
    say(f"search_rc: {'within' if report['within_budget'] else 'OUTSIDE'} budget: " +
        (f"{final['compression']:.1f}x, " if final["compression"] else "") +
        ", ".join(f"{t} drop {final['drop'][t]:.4f}" for t in search.tasks) + f" ({report['seconds']} s)")
    return RCSearchResult(dict(chosen), search.table, graph, report)


def _judge_finalists(search: _Search, count: int, calibrate_final: bool, originals, calib, kwargs):
    """Calibrates the finalists and keeps the best by calibrated accuracy; returns (layer_rc, graph,
    calibration report, summary of the choice)."""
    from edgemerge import emm
    from edgemerge.training.progress import progress_bar

    rows = search.finalists(count)
    if not rows:
        raise EdgemergeError("no setting the search tried merges within the ceiling "
                             f"({search.ceiling_bytes} bytes); see the table of what was tried")
    judged = []
    with progress_bar(len(rows), "budget search: finalists", enabled=search.show_progress) as bar:
        for row in rows:
            rc = {k: tuple(v) for k, v in row["layer_rc"].items()}
            graph = search.default if not rc else search.merge_fn(dict(rc))
            calibration, accuracy, reference = None, dict(row["accuracy"]), dict(search.original_acc)
            if calibrate_final:
                search.say(f"search_rc: calibrating finalist {', '.join(f'{k}={r}/{c}' for k, (r, c) in rc.items())} "
                           f"(proxy drop {row['drop']:.4f}, {row['file_bytes']} bytes)")
                result = calibrate(graph, originals, calib, **kwargs)
                graph, calibration = result.graph, result.report
                accuracy = {t: calibration["tasks"][t]["accuracy_after"] for t in search.tasks}
                reference = {t: calibration["tasks"][t]["reference_accuracy"] for t in search.tasks}
            file_bytes = len(emm.to_bytes(graph))
            compression = search.original_bytes / file_bytes if search.original_bytes else None
            drop = {t: reference[t] - accuracy[t] for t in search.tasks}
            row.update(finalist=True, calibrated_accuracy=accuracy if calibrate_final else None,
                       calibrated_drop=max(drop.values()) if calibrate_final else None)
            judged.append(dict(rc=rc, graph=graph, calibration=calibration, file_bytes=file_bytes,
                               compression=compression, accuracy=accuracy, reference=reference, drop=drop,
                               proxy_drop=row["drop"], missed=missed_bounds(search.budget, max(drop.values()),
                                                                             compression)))
            bar.advance()
    best = min(judged, key=lambda j: _closeness(search.budget, max(j["drop"].values()), j["compression"]) +
               (j["file_bytes"],))
    summary = {k: best[k] for k in ("file_bytes", "compression", "accuracy", "reference", "drop", "proxy_drop",
                                    "missed")}
    summary["finalists"] = [{"layer_rc": {k: list(v) for k, v in j["rc"].items()}, "file_bytes": j["file_bytes"],
                             "compression": j["compression"], "accuracy": j["accuracy"], "drop": j["drop"],
                             "missed": j["missed"]} for j in judged]
    return best["rc"], best["graph"], best["calibration"], summary
