"""The commands that look at and measure a model: inspect, eval, bench, run and report."""
from __future__ import annotations

from pathlib import Path

import click

from edgemerge.cli.common import (
    _check_input_file,
    _check_model_files,
    _echo_json,
    _fail_cleanly,
    _human_bytes,
    _load_reference_stacks,
    main,
)
from edgemerge.errors import EdgemergeError


# ------------------------------------------------------------------------------------------------
@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@_fail_cleanly
def inspect(model, as_json):
    """Show the tasks, layers, r/C, bytes per section and compression of an .emm file."""
    from edgemerge.measure.inspect_model import describe

    _check_input_file(model, "model")
    info = describe(model)
    if as_json:
        _echo_json(info)
        return
    from edgemerge.text import printable  # names and paths come from the file: never print them raw

    click.echo(f"{printable(info['path'])}: .emm v{info['format_version']}, {_human_bytes(info['file_bytes'])}")
    if info["compression"]:
        click.echo(f"  originals: {_human_bytes(info['original_bytes'])} float32 parameters -> "
                   f"compression {info['compression']:.2f}x")
    click.echo(f"  run-time memory (one context): {_human_bytes(info['context_bytes'])}, of which activations "
               f"{_human_bytes(info['arena_bytes'])} at their peak; allocated at load (this machine's kernels): "
               f"{_human_bytes(info['packed_bytes'])} of decoded weights and unpacked indices")
    click.echo("  sections: " + ", ".join(f"{k} {_human_bytes(v)}" for k, v in info["sections"].items()))
    for t in info["tasks"]:
        click.echo(f"  task {printable(t['name'])}: input {'x'.join(map(str, t['input_shape']))} (input {t['input_index']}), "
                   f"{t['classes']} classes")
    click.echo(f"  {'#':>3} {'layer':<28} {'op':<17} {'out':<12} {'r/C':<11} {'bytes':>10}  kernel")
    for layer in info["layers"]:
        rc = f"{layer['r']}/{layer['C']}" if "r" in layer else ""
        if layer.get("layer_shared_codebook"):
            rc += " L"    # one layer-shared codebook (FORMAT.md "Layer-shared codebooks")
        if layer.get("int8_tables"):
            rc += " i8"   # int8 tables (FORMAT.md "int8 tables")
        shape = "x".join(map(str, layer["out_shape"]))
        click.echo(f"  {layer['index']:>3} {printable(layer['name'])[:28]:<28} {layer['op']:<17} {shape:<12} {rc:<11} "
                   f"{layer['bytes']:>10}  {printable(layer['kernel'])}")
    _echo_sharing(info)


def _echo_sharing(info: dict) -> None:
    """The sharing part of `inspect`: which layers look up in which codebook, and the trunk run once for
    several tasks."""
    from edgemerge.text import printable

    shared = [cb for cb in info["codebooks"] if len(cb["layers"]) > 1]
    click.echo(f"  codebooks: {len(info['codebooks'])}, {len(shared)} shared by several layers")
    for cb in shared:
        click.echo(f"    {printable(cb['name'])} ({_human_bytes(cb['bytes'])}, tasks {', '.join(map(printable, cb['tasks']))}): "
                   + ", ".join(printable(n) for n in cb["layers"]))
    layer_shared = [layer["name"] for layer in info["layers"] if layer.get("layer_shared_codebook")]
    if layer_shared:
        click.echo(f"  layer-shared codebooks (L: one [1, C, r] codebook for all segments of the layer): "
                   f"{len(layer_shared)} layers")
    if info["shared_trunk"]:
        click.echo(f"  shared trunk (run once for several tasks): {', '.join(map(printable, info['shared_trunk']))}")


# ------------------------------------------------------------------------------------------------
@main.command(name="eval")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--data", "data", multiple=True, required=True, metavar="TASK=NPZ",
              help="labelled data (.npz with x, y) for a task; repeatable")
@click.option("--reference", "references", multiple=True, metavar="TASK=MODEL",
              help="the task's original model (.keras, .h5 or .tflite) to compare with; repeatable")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@_fail_cleanly
def evaluate_command(model, data, references, as_json):
    """Accuracy of each task of MODEL in the C runtime, and the drop against the original models."""
    from edgemerge.datasets import check_data_files, parse_task_pairs

    _check_input_file(model, "model")
    data_files, reference_files = parse_task_pairs(data, "--data"), parse_task_pairs(references, "--reference")
    check_data_files(data_files)
    _check_model_files(reference_files, "reference model")
    from edgemerge.measure.evaluate import evaluate

    _load_reference_stacks(reference_files, "edgemerge eval --reference")
    result = evaluate(model, data_files, reference_files)
    if as_json:
        _echo_json(result)
        return
    click.echo(f"{'task':<16} {'n':>7} {'merged':>8} {'original':>9} {'drop':>8}")
    for task, r in result["tasks"].items():
        ref = f"{100 * r['reference_accuracy']:.2f}%" if r["reference_accuracy"] is not None else "-"
        drop = f"{100 * r['drop']:+.2f}%" if r["drop"] is not None else "-"
        line = f"{task:<16} {r['n']:>7} {100 * r['accuracy']:>7.2f}% {ref:>9} {drop:>8}"
        if "int8_drop" in r:   # int8 tables or activations: the same file with float math, and the difference
            line += (f"   int8 layers: same file in float {100 * r['float_tables_accuracy']:.2f}%, "
                     f"int8 drop {100 * r['int8_drop']:+.2f}%")
        click.echo(line)


# ------------------------------------------------------------------------------------------------
@main.command(name="bench")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--vs", "references", multiple=True, metavar="TASK=ORIGINAL",
              help="the task's original model: .tflite (float or quantised; LiteRT) or .onnx (ONNX Runtime); one for every task; a task's second "
                   "file starts a second peer (e.g. float and int8 originals measured in one run)")
@click.option("--threads", type=click.IntRange(min=1, max=64), default=1, show_default=True,
              help="threads of both sides: TFLite interpreter threads and OPENBLAS_NUM_THREADS, and the C runtime's "
                   "pool (em_run_all's task lanes in parallel)")
@click.option("--runs", type=click.IntRange(min=1), default=200, show_default=True,
              help="timed runs per side (one run = every task once on one sample)")
@click.option("--warmup", type=click.IntRange(min=0), default=20, show_default=True, help="untimed runs first")
@click.option("--data", multiple=True, metavar="TASK=NPZ",
              help="real samples (x of an .npz) for a task instead of seeded random ones; repeatable")
@click.option("--seed", default=0, show_default=True, help="seed of the random inputs")
@click.option("--profile", is_flag=True, help="also time every node of the merged model (C profiling API), with "
                                              "totals per op type")
@click.option("--profile-csv", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="write the per-node profile (node, op, kernel, ms, share) as CSV (implies --profile)")
@click.option("--on", "on_device", default=None, metavar="ssh://[USER@]HOST[:PORT][/DIR]",
              help="benchmark on a device: install the board's em_run and MODEL there (flash), run em_run and, "
                   "where the device's python3 has ai-edge-litert, the peers")
@click.option("--board", "board_name", metavar="NAME", help="the device's board profile (with --on)")
@click.option("--identity", type=click.Path(dir_okay=False), default=None,
              help="ssh private key for --on (only that key: IdentitiesOnly)")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="ssh port for --on")
@click.option("--ssh-option", "ssh_options", multiple=True, metavar="KEY=VALUE",
              help="an OpenSSH option for --on (`ssh -o KEY=VALUE`); repeatable")
@click.option("--runtime-dir", type=click.Path(file_okay=False), default=None,
              help="with --on: where the board's em_run build is (or goes): default build/BOARD")
@click.option("--connect-timeout", type=click.IntRange(min=1), default=10, show_default=True,
              help="with --on: seconds ssh waits for the device")
@click.option("--device-python", default="python3", show_default=True, metavar="PYTHON",
              help="with --on: the device's Python that runs the peers (it needs numpy and ai-edge-litert)")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@_fail_cleanly
def bench_command(model, references, threads, runs, warmup, data, seed, profile, profile_csv, on_device, board_name,
                  identity, port, ssh_options, runtime_dir, connect_timeout, device_python, as_json):
    """Time MODEL (all tasks, C runtime) against the original models (TFLite, XNNPACK), interleaved.

    \b
    edgemerge bench merged.emm --vs fashion=lenet_fashion.tflite --vs words=net3_words.tflite
    edgemerge bench merged.emm --on ssh://pi@raspberrypi.local --board rpi4-aarch64 [--vs ...] --json
    """
    from edgemerge.measure.peers import parse_peer_sets

    _check_input_file(model, "model")
    peer_sets = parse_peer_sets(references)
    for files in peer_sets:
        _check_model_files(files, "--vs model")
    if on_device is not None:
        if data or profile or profile_csv:
            raise click.UsageError("--data, --profile and --profile-csv are not available with --on (em_run --task "
                                   "all times a fixed input and has no per-node profile)")
        _bench_on_device(model, on_device, board_name, peer_sets, threads, runs, warmup, identity, port,
                         ssh_options, runtime_dir, connect_timeout, device_python, as_json)
        return
    if board_name or identity or port or ssh_options or runtime_dir:
        raise click.UsageError("--board, --identity, --port, --ssh-option and --runtime-dir go with --on")
    if not peer_sets:
        raise click.UsageError("Missing option '--vs' (TASK=ORIGINAL.tflite for every task; optional with --on)")
    if profile_csv:
        from edgemerge.emm.files import check_output_target
        check_output_target(profile_csv)      # before minutes of measuring
        profile = True
    from edgemerge.extras import require
    from edgemerge.measure.bench import set_thread_environment

    kinds = {Path(f).suffix.lower() for files in peer_sets for f in files.values()}
    if ".tflite" in kinds:
        require("peers", "edgemerge bench with a .tflite original")
    if ".onnx" in kinds:
        require("onnx", "edgemerge bench with an .onnx original")
    set_thread_environment(threads)          # before anything loads the C runtime or its BLAS
    from edgemerge.datasets import load_samples, parse_task_pairs
    from edgemerge.measure.bench import bench, write_profile_csv

    data_files = parse_task_pairs(data, "--data")
    for task, path in data_files.items():
        load_samples(path, f"--data {task}:")
    result = bench(model, peer_sets, threads=threads, runs=runs, warmup=warmup,
                   data=data_files, seed=seed, profile=profile,
                   log=lambda m: click.echo(m, err=True))
    if profile_csv:
        write_profile_csv(profile_csv, result["profile"])
        result["profile_csv"] = str(profile_csv)
    if as_json:
        _echo_json(result)
        return
    from edgemerge.text import printable

    click.echo(f"{printable(model)}: {len(result['tasks'])} tasks, {runs} runs per side after {warmup} warm-up, "
               f"interleaved; inputs: {result['inputs']}; measured on this machine")
    m = result["merged"]
    click.echo(f"  merged     C runtime, em_run_all ({m['runtime']}; {result['merged_threads']} thread(s), "
               f"{result.get('merged_task_lanes', 0)} task lanes)")
    for i, peer in enumerate(result["peers"]):
        click.echo(f"  {'reference' if i == 0 else '':<10} {printable(peer['label'])}: {peer['runtime']}: "
                   + ", ".join(printable(Path(t["file"]).name) for t in peer["tasks"].values()))
    rows = [("merged", m, None)] + [(p["label"], p, p["speedup"]) for p in result["peers"]]
    _bench_table(rows)
    held = result["memory"]["reference"]["held"]
    click.echo(f"  peak memory: merged = model {_human_bytes(m['file_bytes'])} + packed at load "
               f"{_human_bytes(m['packed_bytes'])} + context {_human_bytes(m['context_bytes'])} "
               f"(as RSS {_human_bytes(result['merged_rss_peak_bytes'])}); "
               f"reference = peak RSS growth: heap {_human_bytes(held['heap'])} + model files "
               f"{_human_bytes(held['model_files'])}; TFLite library code not counted")
    _bench_task_table({task: (t["merged_alone_ms"]["median"],
                              [p["tasks"][task]["ms"]["median"] for p in result["peers"]])
                       for task, t in result["tasks"].items()}, [p["label"] for p in result["peers"]])
    if profile:
        _bench_profile(result["profile"], result["profile_by_op"])
        if profile_csv:
            click.echo(f"  profile written to {printable(profile_csv)}")
    for note in result["notes"]:
        click.echo(f"  note: {note}")


def _bench_table(rows) -> None:
    """One line per side: load, first run, min / median / p95 / std (ms), peak memory, speedup of merged."""
    click.echo(f"  {'side':<18} {'load':>8} {'first':>8} {'min':>8} {'median':>8} {'p95':>8} {'std':>8} "
               f"{'peak mem':>10} {'speedup':>8}   (ms)")
    for label, side, speedup in rows:
        from edgemerge.text import printable
        s = side["ms"]
        peak = _human_bytes(side["peak_bytes"]) if side.get("peak_bytes") is not None else "-"
        click.echo(f"  {printable(label)[:18]:<18} {side['load_ms']:>8.3f} {side['first_run_ms']:>8.3f} "
                   f"{s['min']:>8.4f} {s['median']:>8.4f} {s['p95']:>8.4f} {s['std']:>8.4f} {peak:>10} "
                   f"{'' if speedup is None else f'{speedup:.2f}x':>8}")
    click.echo("  speedup = the peer's median / the merged median")


def _bench_task_table(tasks: dict[str, tuple[float, list[float | None]]], labels: list[str]) -> None:
    from edgemerge.text import printable
    click.echo(f"  {'per task':<18} {'merged alone':>13}" + "".join(f" {printable(l)[:16]:>16}" for l in labels)
               + "   (medians, ms; speedup in brackets)")
    for task, (alone, peers) in tasks.items():
        cells = "".join(f" {'skipped':>16}" if ms is None else f" {_ms_and_ratio(ms, alone):>16}" for ms in peers)
        click.echo(f"  {printable(task)[:18]:<18} {alone:>13.4f}{cells}")


def _ms_and_ratio(ms: float, merged: float) -> str:
    return f"{ms:.4f} ({ms / merged:.2f}x)" if merged > 0 else f"{ms:.4f} (-)"


def _bench_profile(rows, by_op) -> None:
    from edgemerge.text import printable
    timed = rows and rows[0]["runs"] is not None
    total = sum(r["total_ms"] for r in rows) if timed else 0.0
    click.echo(f"  {'#':>3} {'node':<28} {'op':<17} {'kernel':<22} {'ms/run':>8} {'table':>8} {'accum':>8} "
               f"{'share':>6}")
    for r in rows:
        if timed:
            per = r["runs"] or 1
            times = (f"{r['ms_per_run']:>8.4f} {r['table_ms'] / per:>8.4f} {r['accumulate_ms'] / per:>8.4f} "
                     f"{100 * r['total_ms'] / total if total else 0:>5.1f}%")
        else:
            times = f"{'-':>8} {'-':>8} {'-':>8} {'-':>6}"
        group = "" if r.get("run_group") is None else \
            f"  group {r['run_group']}{' fused' if r.get('run_group_fused') else ''}"
        click.echo(f"  {r['index']:>3} {printable(r['name'])[:28]:<28} {r['op']:<17} {r['kernel'][:22]:<22} "
                   f"{times}{group}")
    if any(r.get("run_group") is not None for r in rows):
        click.echo("  run groups: nodes of different tasks with the same weights run as one step (em_run_all); "
                   "the step's time is on its first member")
    if by_op:
        click.echo(f"  {'per op type':<21} {'nodes':>5} {'ms/run':>8} {'table':>8} {'accum':>8} {'share':>6}")
        for o in by_op:
            click.echo(f"  {o['op']:<21} {o['nodes']:>5} {o['ms_per_run']:>8.4f} {o['table_ms_per_run']:>8.4f} "
                       f"{o['accumulate_ms_per_run']:>8.4f} {100 * o['share']:>5.1f}%")


def _bench_on_device(model, url, board_name, peer_sets, threads, runs, warmup, identity, port, ssh_options,
                     runtime_dir, connect_timeout, device_python, as_json) -> None:
    from edgemerge.deploy.boards import get_board
    from edgemerge.deploy.remote_bench import bench_on_device
    from edgemerge.text import printable

    if not board_name:
        raise click.UsageError("--on needs --board NAME (the device's board profile: which em_run to install)")
    board = get_board(board_name)
    result = bench_on_device(model, url, board, peer_sets, threads=threads, runs=runs, warmup=warmup,
                             runtime_dir=runtime_dir, identity=identity, port=port, ssh_options=list(ssh_options),
                             connect_timeout=connect_timeout, python=device_python,
                             log=lambda m: click.echo(f"{m}...", err=True))
    if as_json:
        _echo_json(result)
        return
    m = result["merged"]
    click.echo(f"{printable(model)} on {result['on']} (board {result['board']}, {result['machine']}): "
               f"{runs} runs after {warmup} warm-up per side, measured on the device, not interleaved")
    click.echo(f"  cpu features: {m['cpu_features']}; kernel set {m['kernels']}; kernels used: "
               f"{', '.join(m['kernels_used'])}")
    rows = [("merged (em_run)", m, None)]
    for p in result["peers"]:
        if p["status"] == "ran":
            rows.append((p["label"], p, p["speedup"]))
    _bench_table(rows)
    for p in result["peers"]:
        if p["status"] != "ran":
            click.echo(f"  peer {printable(p['label'])}: skipped: {printable(p['reason'])}")
    labels = [p["label"] for p in result["peers"] if p["status"] == "ran"]
    _bench_task_table({task: (t["merged_alone"]["ms"]["median"],
                              [t["peers"][l]["ms"]["median"] if l in t["peers"] else None for l in labels])
                       for task, t in result["tasks"].items()}, labels)
    for note in result["notes"]:
        click.echo(f"  note: {note}")


# ------------------------------------------------------------------------------------------------
def _load_input_batch(path: str) -> "np.ndarray":
    """x from a .npy file, or from an .npz file (its `x`, or its only array)."""
    import numpy as np

    suffix = Path(path).suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise EdgemergeError(f"--input {path}: expected a .npy or .npz file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise EdgemergeError(f"--input {path}: no such file") from None
    except (OSError, ValueError) as e:
        raise EdgemergeError(f"--input {path}: cannot read ({e})") from None
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:
        names = list(loaded.files)
        if "x" in names:
            return loaded["x"]
        if len(names) == 1:
            return loaded[names[0]]
    raise EdgemergeError(f"--input {path}: has arrays {', '.join(names) or '(none)'}; expected `x` or a single array")


@main.command(name="run")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--task", required=True, help="the task to run (see `edgemerge inspect`)")
@click.option("--input", "input_path", required=True, metavar="X.npy|X.npz",
              help="a batch [N, H, W, C] or one sample [H, W, C] (float32 NHWC; an .npz's `x`)")
@click.option("--top", type=click.IntRange(min=1), default=1, show_default=True, help="classes listed per sample")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@_fail_cleanly
def run_command(model, task, input_path, top, as_json):
    """Run one task of MODEL on a batch in the C runtime: the top classes of every sample.

    Example: edgemerge run merged.emm --task fashion --input shoes.npy --top 3
    """
    import numpy as np

    from edgemerge.runtime import Runtime

    runtime = Runtime(model)
    info = runtime.task(task)
    x = _load_input_batch(input_path)
    logits = np.asarray(runtime.run(info.name, x), dtype=np.float64)
    logits = logits.reshape(-1, info.classes)
    # probabilities from the logits (the runtime returns the head's pre-softmax output)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = shifted / shifted.sum(axis=1, keepdims=True)
    k = min(top, info.classes)
    order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    samples = [{"top": [{"class": int(c), "probability": float(probs[i, c]), "logit": float(logits[i, c])}
                        for c in order[i]]} for i in range(len(logits))]
    if as_json:
        _echo_json({"model": str(model), "task": info.name, "input": str(input_path), "n": len(samples),
                    "classes": info.classes, "samples": samples})
        return
    from edgemerge.text import printable

    click.echo(f"{printable(info.name)}: {len(samples)} sample(s), {info.classes} classes")
    for i, sample in enumerate(samples):
        click.echo(f"  {i:>5}  " + "  ".join(f"{t['class']:>3} ({100 * t['probability']:5.1f}%)" for t in sample["top"]))


@main.command(name="report")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--data", "data", multiple=True, metavar="TASK=NPZ",
              help="labelled data (.npz with x, y): accuracy, confusion matrix and latency per task; repeatable")
@click.option("--reference", "references", multiple=True, metavar="TASK=MODEL",
              help="the task's original model (.keras, .h5 or .tflite) to compare with; repeatable")
@click.option("--plot", "plots", multiple=True, type=click.Path(dir_okay=False), metavar="PNG",
              help="a trade-off or Pareto plot to include (default: *.png beside MODEL, e.g. zipper's tradeoff.png)")
@click.option("--runs", type=click.IntRange(min=1), default=20, show_default=True,
              help="profiled runs for the latency per layer")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="the .html file to write")
@click.option("--json", "as_json", is_flag=True, help="print the report's data as JSON")
@_fail_cleanly
def report_command(model, data, references, plots, runs, output, as_json):
    """Write one self-contained HTML page about MODEL: graph and sharing, bytes, accuracy, latency.

    Example: edgemerge report merged.emm --data fashion=f_test.npz --reference fashion=lenet.keras -o report.html
    """
    from edgemerge.datasets import parse_task_pairs
    from edgemerge.measure.report import write_report

    reference_files = parse_task_pairs(references, "--reference")
    _load_reference_stacks(reference_files, "edgemerge report --reference")
    result = write_report(model, output, data=parse_task_pairs(data, "--data"), references=reference_files,
                          plots=list(plots) if plots else None, runs=runs)
    if as_json:
        _echo_json(result)
        return
    click.echo(f"wrote {output}: {_human_bytes(result['html_bytes'])}, sections: {', '.join(result['sections'])}")
