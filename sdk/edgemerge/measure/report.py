"""`edgemerge report`: one self-contained HTML page about a merged model.

Sections (each an element with a fixed id, which tests/measure/test_report.py looks for in the rendered page):
`overview` (file, tasks, compression), `graph` (an SVG of the merged graph: the tasks, the shared trunk and
which layers look up in which codebook), `bytes` (per section and per layer, against the float32 originals),
`accuracy` (per task, with the reference model and the confusion matrix; needs --data), `latency` (per layer
from the C runtime's profiling API, per task timed alone) and `plots` (trade-off / Pareto PNGs found beside
the model, embedded). Inline CSS and SVG only: the page loads nothing from anywhere, so it can be mailed or
archived as one file.

The HTML is written by hand with html.escape rather than through a template engine (Jinja2): it is one page
with a fixed layout, and the base install stays numpy + click.
"""
from __future__ import annotations

import base64
import html
import os
import time
from pathlib import Path

import numpy as np

from edgemerge import emm
from edgemerge.emm.constants import Op
from edgemerge.emm.files import atomic_write_bytes
from edgemerge.emm.graph import decoded_weights
from edgemerge.errors import EdgemergeError
from edgemerge.measure.inspect_model import describe
from edgemerge.runtime import Runtime

SECTIONS = ("overview", "graph", "bytes", "accuracy", "latency", "plots")
_PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
            "#fabed4", "#469990", "#dcbeff", "#9a6324", "#800000", "#aaffc3", "#808000", "#000075")
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:0 0 10px;border-bottom:1px solid #dde1e7;padding-bottom:4px}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:16px 18px;margin:16px 0}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 8px;text-align:right;border-bottom:1px solid #eef0f3}
th{background:#f0f2f5;font-weight:600}td.l,th.l{text-align:left}
.bar{display:inline-block;height:10px;background:#4363d8;vertical-align:middle}
.bar.o{background:#c4c9d4}.muted{color:#6b7383}.kv td{text-align:left}
.cm td{min-width:28px;text-align:center}.note{color:#6b7383;font-size:12px}
svg text{font:11px system-ui,sans-serif}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _kib(n: float) -> str:
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n:.0f} B"


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------
def _layer_float_bytes(graph, node) -> int:
    """float32 bytes of the weights and bias this node computes with, stored plainly (what the codebook
    encoding saves, per layer)."""
    if node.weight < 0 or node.weight >= len(graph.tensors):
        return 0
    n = int(decoded_weights(graph, node).size)
    if 0 <= node.bias < len(graph.tensors):
        n += int(np.prod(graph.tensors[node.bias].shape))
    return 4 * n


def _accuracy(runtime: Runtime, data: dict[str, str], references: dict[str, str]) -> dict:
    from edgemerge.datasets import load_labelled
    from edgemerge.measure.evaluate import reference_predictions

    out = {}
    for task, path in data.items():
        info = runtime.task(task)
        labelled = load_labelled(path, info.input_shape)
        pred = runtime.predict(task, labelled.x)
        y = labelled.y
        if y.min() < 0 or y.max() >= info.classes:
            raise EdgemergeError(f"data file {path}: labels outside 0..{info.classes - 1} of task {task!r}")
        matrix = np.zeros((info.classes, info.classes), dtype=np.int64)
        np.add.at(matrix, (y, pred), 1)
        entry = {"n": int(len(y)), "accuracy": float(np.mean(pred == y)), "confusion": matrix.tolist(),
                 "reference": None, "reference_accuracy": None, "drop": None}
        if task in references:
            ref = reference_predictions(references[task], labelled.x)
            entry["reference"] = str(references[task])
            entry["reference_accuracy"] = float(np.mean(ref == y))
            entry["drop"] = entry["reference_accuracy"] - entry["accuracy"]
        out[task] = entry
    return out


def _inputs(runtime: Runtime, data: dict[str, str], samples: int = 8, seed: int = 0) -> list[np.ndarray]:
    """One pool of samples per graph input: the --data samples where given, else seeded uniform noise."""
    from edgemerge.datasets import load_labelled

    rng = np.random.default_rng(seed)
    pools: list[np.ndarray | None] = [None] * (1 + max(t.input_index for t in runtime.tasks))
    for task, path in data.items():
        t = runtime.task(task)
        if pools[t.input_index] is None:
            pools[t.input_index] = np.ascontiguousarray(load_labelled(path, t.input_shape).x[:samples])
    for t in runtime.tasks:
        if pools[t.input_index] is None:
            pools[t.input_index] = rng.random((samples, *t.input_shape), dtype=np.float32)
    return pools  # type: ignore[return-value]


def _latency(runtime: Runtime, pools: list[np.ndarray], runs: int, tasks_of_node: dict[int, list[str]]) -> dict:
    """Per node: the C runtime's profile of `runs` em_run_all runs (every task, the shared trunk once). Per
    task: that task alone through Runtime.run, one sample per call, median of `runs` calls."""
    nodes = runtime.nodes()
    rows = list(runtime._model.profile_all(pools, min(runs, 5), runs))
    layers = []
    for i, node in enumerate(nodes):
        n = int(rows[i]["runs"])
        layers.append({"index": i, "name": node["name"], "op": node["op_name"], "kernel": node["kernel"],
                       "tasks": tasks_of_node.get(i, []),
                       "ms_per_run": rows[i]["total_ns"] / 1e6 / n if n else 0.0})
    tasks = {}
    for t in runtime.tasks:
        pool = pools[t.input_index]
        runtime.run(t.name, pool[:1])  # warm-up
        times = []
        for k in range(runs):
            sample = pool[k % len(pool)][None]
            start = time.perf_counter_ns()
            runtime.run(t.name, sample)
            times.append(time.perf_counter_ns() - start)
        tasks[t.name] = {"median_ms": float(np.median(times)) / 1e6, "runs": runs}
    return {"layers": layers, "all_tasks_ms": float(sum(layer["ms_per_run"] for layer in layers)),
            "tasks": tasks, "runs": runs}


def _find_plots(model: Path, plots: list[str] | None) -> list[Path]:
    if plots is not None:
        missing = [p for p in plots if not Path(p).is_file()]
        if missing:
            raise EdgemergeError(f"--plot {missing[0]}: no such file")
        return [Path(p) for p in plots]
    return sorted(model.resolve().parent.glob("*.png"))


def collect(model: str | os.PathLike, *, data: dict[str, str] | None = None,
            references: dict[str, str] | None = None, plots: list[str] | None = None, runs: int = 20) -> dict:
    """Everything the page shows, as plain data (also `edgemerge report --json`)."""
    data, references = data or {}, references or {}
    model = Path(model)
    info = describe(model)          # validates the file with both readers first
    graph = emm.read_emm(model)
    runtime = Runtime(model)
    unknown = [t for t in list(data) + list(references) if t not in runtime.task_names]
    if unknown:
        raise EdgemergeError(f"no task named {unknown[0]!r} in {model}; it has: {', '.join(runtime.task_names)}")
    no_data = [t for t in references if t not in data]
    if no_data:
        raise EdgemergeError(f"--reference {no_data[0]}=... needs --data {no_data[0]}=NPZ to compare on")
    tasks_of_node = {layer["index"]: layer["tasks"] for layer in info["layers"]}
    for layer, node in zip(info["layers"], graph.nodes):
        layer["float32_bytes"] = _layer_float_bytes(graph, node)
    return {
        "info": info,
        "graph": {"inputs": [list(s) for s in graph.inputs],
                  "nodes": [{"name": n.name, "input": n.input, "op": n.op.name,
                             "lut": n.op in (Op.LUT_CONV2D, Op.LUT_DENSE), "weight": n.weight} for n in graph.nodes],
                  "tasks": [{"name": t.name, "input": t.input, "output": t.output} for t in graph.tasks]},
        "accuracy": _accuracy(runtime, data, references),
        "latency": _latency(runtime, _inputs(runtime, data), runs, tasks_of_node),
        "plots": [str(p) for p in _find_plots(model, plots)],
    }


# ------------------------------------------------------------------------------------------------
# rendering
# ------------------------------------------------------------------------------------------------
def _graph_svg(report: dict) -> str:
    """Tasks as columns, one row per depth; a node used by several tasks sits between their columns (the
    shared trunk, drawn with a thick border); LUT layers are filled with their codebook's colour, so layers
    sharing a codebook have the same colour."""
    g, info = report["graph"], report["info"]
    n_inputs = len(g["inputs"])
    task_col = {t["name"]: i for i, t in enumerate(g["tasks"])}
    layer_tasks = {layer["index"]: layer["tasks"] for layer in info["layers"]}
    shared_books = [cb["name"] for cb in info["codebooks"] if len(cb["layers"]) > 1]
    book_of_layer = {layer["index"]: layer.get("codebook") for layer in info["layers"]}
    colour = {name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(shared_books)}

    depth: dict[int, int] = {v: 0 for v in range(n_inputs)}
    for i, node in enumerate(g["nodes"]):
        depth[n_inputs + i] = depth.get(node["input"], 0) + 1
    input_tasks = {v: [t["name"] for t in g["tasks"] if t["input"] == v] for v in range(n_inputs)}

    col_w, box_w, box_h, row_h, top = 230, 200, 38, 58, 30
    pos: dict[int, tuple[float, float]] = {}
    taken: set[tuple[float, int]] = set()

    def place(v: int, tasks: list[str]) -> None:
        cols = [task_col[t] for t in tasks] or [0]
        x = sum(cols) / len(cols)
        while (x, depth[v]) in taken:   # two nodes at one spot (rare): nudge the later one
            x += 0.5
        taken.add((x, depth[v]))
        pos[v] = (20 + x * col_w + (col_w - box_w) / 2, top + depth[v] * row_h)

    for v in range(n_inputs):
        place(v, input_tasks[v])
    for i in range(len(g["nodes"])):
        place(n_inputs + i, layer_tasks.get(i, []))
    width = 40 + max(col_w * max(1, len(g["tasks"])), max(x for x, _ in pos.values()) + box_w)
    height = top + (1 + max(depth.values())) * row_h + 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
             f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="merged graph">']
    for i, node in enumerate(g["nodes"]):      # edges first, under the boxes
        x0, y0 = pos[node["input"]]
        x1, y1 = pos[n_inputs + i]
        parts.append(f'<line x1="{x0 + box_w / 2:.0f}" y1="{y0 + box_h:.0f}" x2="{x1 + box_w / 2:.0f}" '
                     f'y2="{y1:.0f}" stroke="#9aa3b2" stroke-width="1.5"/>')
    for v in range(n_inputs):
        x, y = pos[v]
        shape = "x".join(map(str, g["inputs"][v]))
        parts.append(f'<rect x="{x:.0f}" y="{y:.0f}" width="{box_w}" height="{box_h}" rx="18" fill="#eef0f3" '
                     f'stroke="#6b7383"/><text x="{x + box_w / 2:.0f}" y="{y + 23:.0f}" text-anchor="middle">'
                     f'input {v}: {_e(shape)} ({_e(", ".join(input_tasks[v]))})</text>')
    for i, node in enumerate(g["nodes"]):
        x, y = pos[n_inputs + i]
        layer = info["layers"][i]
        book = book_of_layer.get(i)
        fill = colour.get(book, "#dfe7fb" if node["lut"] else "#ffffff")
        shared = len(layer_tasks.get(i, [])) > 1
        rc = f' r/C {layer["r"]}/{layer["C"]}' if "r" in layer else ""
        parts.append(f'<g class="node"><title>{_e(layer["name"])}: {_e(layer["op"])}{_e(rc)}, tasks '
                     f'{_e(", ".join(layer_tasks.get(i, [])))}{", codebook " + _e(book) if book else ""}</title>'
                     f'<rect x="{x:.0f}" y="{y:.0f}" width="{box_w}" height="{box_h}" rx="4" fill="{fill}" '
                     f'fill-opacity="{0.55 if book in colour else 1}" stroke="#1d2330" '
                     f'stroke-width="{3 if shared else 1}"/>'
                     f'<text x="{x + 6:.0f}" y="{y + 15:.0f}" font-weight="600">{_e(layer["name"][:30])}</text>'
                     f'<text x="{x + 6:.0f}" y="{y + 30:.0f}">{_e(layer["op"].lower())}{_e(rc)}</text></g>')
    for t in g["tasks"]:
        x, y = pos[t["output"]]
        parts.append(f'<text x="{x + box_w / 2:.0f}" y="{y + box_h + 15:.0f}" text-anchor="middle" '
                     f'font-weight="700" fill="#4363d8">&#8594; {_e(t["name"])}</text>')
    parts.append("</svg>")
    legend = "".join(f'<li><span class="bar" style="width:14px;background:{colour[cb["name"]]};opacity:.6"></span> '
                     f'<b>{_e(cb["name"])}</b> ({_kib(cb["bytes"])}): {_e(", ".join(cb["layers"]))}</li>'
                     for cb in info["codebooks"] if cb["name"] in colour)
    trunk = ", ".join(info["shared_trunk"]) or "none (every task runs its own layers)"
    return ("".join(parts)
            + f'<p><b>Shared trunk</b> (thick border, run once for several tasks): {_e(trunk)}</p>'
            + f'<p><b>Codebooks shared by several layers</b> ({len(shared_books)} of {len(info["codebooks"])}; '
              f'same colour = same codebook):</p><ul id="codebooks">{legend or "<li>none</li>"}</ul>')


def _overview(report: dict) -> str:
    info = report["info"]
    comp = f'{info["compression"]:.2f}x' if info["compression"] else "unknown (no original size recorded)"
    rows = "".join(f'<tr><td class="l">{_e(t["name"])}</td><td>{"x".join(map(str, t["input_shape"]))}</td>'
                   f'<td>{t["input_index"]}</td><td>{t["classes"]}</td></tr>' for t in info["tasks"])
    sources = "".join(f'<tr><td class="l">{_e(s["task"])}</td><td class="l">{_e(s["file"])}</td>'
                      f'<td>{_kib(int(s["param_bytes"] or 0))}</td></tr>' for s in info["sources"])
    return (f'<table class="kv"><tr><th>file</th><td>{_e(info["path"])}</td></tr>'
            f'<tr><th>format</th><td>.emm v{info["format_version"]}</td></tr>'
            f'<tr><th>size</th><td>{_kib(info["file_bytes"])} ({info["file_bytes"]} bytes)</td></tr>'
            f'<tr><th>originals</th><td>{_kib(info["original_bytes"])} of float32 parameters</td></tr>'
            f'<tr><th>compression</th><td>{comp}</td></tr>'
            f'<tr><th>run-time memory</th><td>{_kib(info["context_bytes"])} per context</td></tr>'
            f'<tr><th>allocated at load</th><td>{_kib(info["packed_bytes"])} (decoded weights, unpacked indices; '
            f'this machine\'s kernels)</td></tr></table>'
            f'<h3>Tasks</h3><table><tr><th class="l">task</th><th>input</th><th>input #</th><th>classes</th></tr>{rows}</table>'
            + (f'<h3>Original models</h3><table><tr><th class="l">task</th><th class="l">file</th><th>float32 '
               f'parameters</th></tr>{sources}</table>' if sources else ""))


def _bytes(report: dict) -> str:
    info = report["info"]
    total = max(1, info["file_bytes"])
    sections = "".join(f'<tr><td class="l">{_e(k)}</td><td>{v}</td><td>{100 * v / total:.1f}%</td></tr>'
                       for k, v in info["sections"].items())
    widest = max([1] + [max(layer["bytes"], layer["float32_bytes"]) for layer in info["layers"]])
    layers = "".join(
        f'<tr><td>{layer["index"]}</td><td class="l">{_e(layer["name"])}</td><td class="l">{_e(layer["op"])}</td>'
        f'<td>{layer["bytes"]}</td><td>{layer["float32_bytes"]}</td>'
        f'<td>{(layer["float32_bytes"] / layer["bytes"]) if layer["bytes"] else 0:.1f}x</td>'
        f'<td class="l"><span class="bar" style="width:{200 * layer["bytes"] / widest:.1f}px"></span><br>'
        f'<span class="bar o" style="width:{200 * layer["float32_bytes"] / widest:.1f}px"></span></td></tr>'
        for layer in info["layers"])
    return (f'<table><tr><th class="l">section</th><th>bytes</th><th>of file</th></tr>{sections}</table>'
            f'<h3>Per layer</h3><p class="note">bytes in the .emm (blue; a shared codebook is counted on its first '
            f'layer) against the same layer\'s weights and bias stored as float32 (grey). The originals held one '
            f'such layer per task: {_kib(info["original_bytes"])} in all.</p>'
            f'<table><tr><th>#</th><th class="l">layer</th><th class="l">op</th><th>.emm bytes</th>'
            f'<th>float32 bytes</th><th>ratio</th><th class="l"></th></tr>{layers}</table>')


def _accuracy_html(report: dict) -> str:
    acc = report["accuracy"]
    if not acc:
        return '<p class="muted">No labelled data given: pass --data TASK=NPZ (and --reference TASK=MODEL).</p>'
    def percent(value, fmt):
        return "-" if value is None else format(100 * value, fmt)

    rows = "".join(
        f'<tr><td class="l">{_e(t)}</td><td>{r["n"]}</td><td>{100 * r["accuracy"]:.2f}%</td>'
        f'<td>{percent(r["reference_accuracy"], ".2f")}</td><td>{percent(r["drop"], "+.2f")}</td>'
        f'<td class="l">{_e(Path(r["reference"]).name) if r["reference"] else "-"}</td></tr>' for t, r in acc.items())
    out = [f'<table><tr><th class="l">task</th><th>samples</th><th>merged</th><th>original</th><th>drop '
           f'(points)</th><th class="l">reference</th></tr>{rows}</table>']
    for task, r in acc.items():
        m = np.asarray(r["confusion"])
        row_sums = np.maximum(1, m.sum(axis=1))
        head = "".join(f"<th>{j}</th>" for j in range(len(m)))
        body = "".join(
            f'<tr><th>{i}</th>' + "".join(
                f'<td style="background:rgba({"67,99,216" if i == j else "230,25,75"},{m[i, j] / row_sums[i]:.2f})">'
                f'{m[i, j]}</td>' for j in range(len(m))) + "</tr>" for i in range(len(m)))
        out.append(f'<h3>Confusion matrix: {_e(task)}</h3><p class="note">rows: true class, columns: predicted '
                   f'(merged model, C runtime)</p><table class="cm" data-task="{_e(task)}"><tr><th></th>{head}</tr>'
                   f'{body}</table>')
    return "".join(out)


def _latency_html(report: dict) -> str:
    lat = report["latency"]
    widest = max([1e-9] + [layer["ms_per_run"] for layer in lat["layers"]])
    tasks = "".join(f'<tr><td class="l">{_e(t)}</td><td>{r["median_ms"]:.4f}</td></tr>' for t, r in lat["tasks"].items())
    layers = "".join(
        f'<tr><td>{layer["index"]}</td><td class="l">{_e(layer["name"])}</td><td class="l">{_e(layer["kernel"])}</td>'
        f'<td class="l">{_e(", ".join(layer["tasks"]))}</td><td>{layer["ms_per_run"]:.4f}</td>'
        f'<td class="l"><span class="bar" style="width:{200 * layer["ms_per_run"] / widest:.1f}px"></span></td></tr>'
        for layer in lat["layers"])
    return (f'<p class="note">Measured on this machine when the report was written ({lat["runs"]} runs; one '
            f'sample per run). Per task: the task alone through the Python API (median). Per layer: the C '
            f'runtime\'s profile of every task at once, each shared node run once: {lat["all_tasks_ms"]:.4f} ms in all '
            f'(a fused run group\'s time is on its first member).</p>'
            f'<table><tr><th class="l">task</th><th>ms per sample</th></tr>{tasks}</table><h3>Per layer</h3>'
            f'<table><tr><th>#</th><th class="l">layer</th><th class="l">kernel</th><th class="l">tasks</th>'
            f'<th>ms per run</th><th class="l"></th></tr>{layers}</table>')


def _plots_html(report: dict) -> str:
    if not report["plots"]:
        return ('<p class="muted">No trade-off or Pareto plot beside the model (zipper writes tradeoff.png; '
                'pass --plot PNG).</p>')
    out = []
    for p in report["plots"]:
        data = base64.b64encode(Path(p).read_bytes()).decode("ascii")
        out.append(f'<figure><img alt="{_e(Path(p).name)}" style="max-width:100%" src="data:image/png;base64,{data}">'
                   f'<figcaption class="note">{_e(Path(p).name)}</figcaption></figure>')
    return "".join(out)


def render(report: dict) -> str:
    info = report["info"]
    title = f"edgemerge report: {Path(info['path']).name}"
    body = {"overview": ("Overview", _overview), "graph": ("Merged graph", _graph_svg),
            "bytes": ("Bytes", _bytes), "accuracy": ("Accuracy", _accuracy_html),
            "latency": ("Latency", _latency_html), "plots": ("Trade-off plots", _plots_html)}
    sections = "".join(f'<section id="{key}"><h2>{title_}</h2>{fn(report)}</section>'
                       for key, (title_, fn) in body.items())
    tasks = ", ".join(t["name"] for t in info["tasks"])
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{_CSS}</style></head>'
            f'<body><main><h1>{_e(title)}</h1><p class="muted">{len(info["tasks"])} tasks ({_e(tasks)}), '
            f'{_kib(info["file_bytes"])}; written by edgemerge on {time.strftime("%Y-%m-%d %H:%M")}</p>'
            f'{sections}</main></body></html>')


def write_report(model: str | os.PathLike, output: str | os.PathLike, *, data: dict[str, str] | None = None,
                 references: dict[str, str] | None = None, plots: list[str] | None = None, runs: int = 20) -> dict:
    """Collects, renders and writes the page atomically; returns a summary (and the collected data)."""
    report = collect(model, data=data, references=references, plots=plots, runs=runs)
    page = render(report).encode("utf-8")
    atomic_write_bytes(output, page)
    return {"output": str(output), "html_bytes": len(page), "sections": list(SECTIONS),
            "accuracy": report["accuracy"], "latency": {"tasks": report["latency"]["tasks"],
                                                        "all_tasks_ms": report["latency"]["all_tasks_ms"]},
            "plots": report["plots"]}
