"""The `edgemerge` command line: merge | convert | inspect | run | eval | bench | report | zipper | boards | build | flash |
export-c.

Heavy modules (TensorFlow, scikit-learn, the C runtime) are imported inside the commands that need them,
so `edgemerge --help` and `edgemerge inspect` start quickly.
"""
from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click

from edgemerge import __version__
from edgemerge.errors import EdgemergeError


def _error_exit(message: str) -> None:
    """One `error:` line on stderr, then exit status 1. Messages name things with text.printable already; as a
    last guard every control character left (C0, DEL, C1: a raw CR/LF or ESC from some library's message) is
    written as `\\xNN` here, so a message is always one line and cannot move the cursor. Backslashes and
    printable text are kept (escaping them again would double the escapes printable made)."""
    line = "".join(f"\\x{ord(ch):02X}" if ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 else ch for ch in message)
    click.echo(f"error: {line}", err=True)
    sys.exit(1)


def _fail_cleanly(fn):
    """Every failure of a command is one `error: ...` line on stderr and exit status 1, never a traceback:
    EdgemergeError (the message says what and where), OSError (the file and the reason: disk full, read-only,
    permission denied...), MemoryError. Anything else is a bug in edgemerge: still one line, saying so; set
    EDGEMERGE_DEBUG=1 to see the traceback instead."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EdgemergeError as e:
            _error_exit(str(e))
        except OSError as e:
            from edgemerge.emm.files import describe_os_error
            where = f"{e.filename}: " if getattr(e, "filename", None) else ""
            _error_exit(f"{where}{describe_os_error(e)}")
        except MemoryError:
            _error_exit("out of memory (the input is too large for this machine)")
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # noqa: BLE001 - the last line of defence of "never a traceback"
            if os.environ.get("EDGEMERGE_DEBUG"):
                raise
            _error_exit(f"unexpected {type(e).__name__}: {e} (a bug in edgemerge; EDGEMERGE_DEBUG=1 shows the "
                        "traceback)")
    return wrapper


def _check_input_file(path: str, what: str) -> None:
    """Refuses, before any work or heavy import, an input that is missing or not a regular file (a folder; a FIFO
    or device whose read would block or never end)."""
    from edgemerge.text import printable

    if not os.path.exists(path):
        raise EdgemergeError(f"{what} {printable(path)}: no such file")
    if not os.path.isfile(path):
        raise EdgemergeError(f"{what} {printable(path)}: not a regular file")


def _check_model_files(pairs: dict[str, str], what: str = "model file") -> None:
    for path in pairs.values():
        _check_input_file(path, what)


def _needs_keras(paths) -> bool:
    """Whether any of `paths` is a Keras file (loading one imports TensorFlow; a .tflite does not)."""
    return any(Path(p).suffix.lower() in (".keras", ".h5", ".hdf5") for p in paths)


def _load_tensorflow_quietly() -> None:
    """Imports TensorFlow with the process's stderr silenced: its C++ start-up banners (oneDNN, CUDA probing)
    ignore TF_CPP_MIN_LOG_LEVEL and would bury our own messages. Python exceptions still surface."""
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow as tf
            tf.config.list_physical_devices()  # the CUDA probe happens here, once
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _load_reference_stacks(reference_files: dict[str, str], what: str) -> None:
    """What reading the original models needs: LiteRT for .tflite files (never TensorFlow), TensorFlow (quietly)
    for Keras files; a missing stack is one error line naming the extra to install."""
    from edgemerge.extras import require

    suffixes = {Path(f).suffix.lower() for f in reference_files.values()}
    if ".tflite" in suffixes:
        require("peers", f"{what} with a .tflite model")
    if suffixes - {".tflite"}:
        require("merge", f"{what} with a Keras model")
        _load_tensorflow_quietly()


def _echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _stop_like_ctrl_c_on_termination() -> None:
    """While a command runs, SIGTERM and SIGHUP stop it the way Ctrl-C does (KeyboardInterrupt), so `finally`
    blocks and the atomic writers' clean-up run: a killed `merge` leaves neither a partial output nor a stray
    temporary file (the default action of SIGTERM ends the process without any of that). The previous handlers
    come back when the command ends, so calling the CLI in-process (tests) changes nothing for the caller."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"stopped by signal {signum}")

    previous = {}
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            previous[name] = signal.signal(getattr(signal, name), interrupt)
    click.get_current_context().call_on_close(
        lambda: [signal.signal(getattr(signal, n), h) for n, h in previous.items()])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgemerge")
def main() -> None:
    """Merge trained CNNs into one compact multi-task model (.emm) and run it on CPU edge boards."""
    _stop_like_ctrl_c_on_termination()
    # Two cores on typical hosts and boards: keep the numeric libraries from oversubscribing them.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# ------------------------------------------------------------------------------------------------
@main.command()
@click.argument("models", nargs=-1, required=True, metavar="TASK=MODEL...")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="the .emm file to write")
@click.option("--preset", type=click.Choice(["accu", "light", "light4"]), default="accu", show_default=True,
              help="per-layer segment length r and codebook size C (light4: light with C=16 and int8 tables where r > 1)")
@click.option("--layer-rc", multiple=True, metavar="NAME=r/C",
              help="override r and C for the group containing layer NAME (or TASK:LAYER); repeatable")
@click.option("--int8-tables", "int8_tables", multiple=True, metavar="NAME[,NAME..]",
              help="encode these layers' groups (NAME or TASK:LAYER, or 'all') with C=16 and int8 tables, "
                   "looked up with byte shuffles at run time; repeatable")
@click.option("--align", "alignment", multiple=True, metavar="TASK:LAYER=TASK:LAYER",
              help="merge exactly these layer pairs instead of the default in-order pairing; repeatable")
@click.option("--seed", default=0, show_default=True, help="seed of the k-means initialisations")
@click.option("--kmeans-inits", default=4, show_default=True, help="k-means runs per segment (lowest error kept)")
@click.option("--calib", multiple=True, metavar="TASK=NPZ",
              help="calibration data per task: train codebooks, biases and heads end to end after merging")
@click.option("--steps", type=click.IntRange(min=0), default=None,
              help="calibration steps (one batch of every task each); default about two epochs")
@click.option("--calib-fraction", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True,
              help="use only this seeded fraction of each task's calibration data")
@click.option("--budget", metavar="max-drop=X[,min-compression=Y]",
              help="search r/C per layer under an accuracy and/or size budget (needs --calib); never larger "
                   "than --preset accu; exits 1 and writes nothing when no setting meets it; records what it "
                   "tried in OUTPUT.budget.json and OUTPUT.budget.png")
@click.option("--best-effort", is_flag=True,
              help="with --budget: when nothing meets the budget, write the best found and say which bound it misses")
@click.option("--strategy", type=click.Choice(["default", "mirrored", "multi-worker"]), default="default",
              show_default=True, help="tf.distribute strategy for calibration (multi-worker reads TF_CONFIG)")
@click.option("--json", "as_json", is_flag=True, help="print a JSON summary")
@_fail_cleanly
def merge(models, output, preset, layer_rc, int8_tables, alignment, seed, kmeans_inits, calib, steps, calib_fraction, budget,
          best_effort, strategy, as_json):
    """Merge models given as TASK=MODEL pairs (.keras or .h5) into one .emm file.

    Example: edgemerge merge fashion=lenet_fashion.keras words=net3_words.keras -o merged.emm --preset accu

    With --calib the merged model is calibrated (the paper's loss: each task's cross-entropy plus the L1
    mismatch of every merged layer against the original model); with --budget r/C are searched per layer.
    """
    from edgemerge.datasets import check_data_files, parse_task_pairs
    from edgemerge.emm.files import check_output_target
    from edgemerge.extras import require

    # every path and data file checked before TensorFlow loads (seconds) and before any work
    sources = parse_task_pairs(models, "model")
    if len(sources) < 2:
        raise EdgemergeError("merge needs at least two TASK=MODEL pairs")
    _check_model_files(sources)
    if calib:
        check_data_files(parse_task_pairs(calib, "--calib"))
    check_output_target(output)
    require("merge", "edgemerge merge")
    from edgemerge.workflows.pipeline import merge_files

    if _needs_keras(sources.values()) or calib or strategy != "default":
        _load_tensorflow_quietly()   # .tflite sources alone never import TensorFlow
    if strategy == "multi-worker":
        # TensorFlow wants the collective-ops strategy created before any other TF work in the process.
        import tensorflow as tf
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    overrides: dict[str, tuple[int, int]] = {}
    for item in layer_rc:
        name, sep, rc = item.partition("=")
        r, slash, c = rc.partition("/")
        if not sep or not slash or not r.isdigit() or not c.isdigit():
            raise EdgemergeError(f"--layer-rc {item!r}: expected NAME=r/C, e.g. fc1=16/64")
        overrides[name] = (int(r), int(c))
    calib_files = parse_task_pairs(calib, "--calib") if calib else None
    if (steps is not None or calib_fraction != 1.0) and not calib_files:
        raise EdgemergeError("--steps and --calib-fraction need --calib TASK=NPZ for every task")
    if best_effort and not budget:
        raise EdgemergeError("--best-effort goes with --budget")
    from edgemerge.workflows.budget import BudgetNotMet
    try:
        summary = merge_files(sources, output, preset=preset, layer_rc=overrides, alignment=list(alignment),
                              seed=seed, kmeans_inits=kmeans_inits, calib=calib_files, steps=steps,
                              calib_fraction=calib_fraction, budget=budget, strategy=strategy,
                              int8_tables=[n.strip() for item in int8_tables for n in item.split(",") if n.strip()],
                              best_effort=best_effort, log=lambda m: click.echo(m, err=True))
    except BudgetNotMet as e:
        # the verdict on stdout (where a script reads results), then `error: ...` and exit 1
        if as_json:
            _echo_json(e.summary)
        else:
            click.echo(f"budget {budget} not met: nothing written to {output}; misses "
                       f"{'; '.join(e.summary['search']['missed'])}")
        raise EdgemergeError(str(e)) from None
    if as_json:
        _echo_json(summary)
    else:
        click.echo(f"wrote {output}: {_human_bytes(summary['file_bytes'])}, "
                   f"{summary['compression']:.1f}x smaller than the originals "
                   f"({_human_bytes(summary['original_bytes'])} of float32 parameters)")
        for task, r in summary.get("calibration", {}).get("tasks", {}).items():
            click.echo(f"  {task}: held-out accuracy {100 * r['accuracy_before']:.2f}% -> "
                       f"{100 * r['accuracy_after']:.2f}% after calibration "
                       f"(original {100 * r['reference_accuracy']:.2f}%)")
        if "search" in summary:
            search = summary["search"]
            chosen = ", ".join(f"{k}={v}" for k, v in search["layer_rc"].items())
            click.echo(f"  chosen r/C: {chosen}")
            if search["within_budget"]:
                click.echo(f"  within budget {budget}: worst task drops {max(search['drop'].values()):.4f}")
            else:
                click.echo(f"  OUTSIDE budget {budget} (--best-effort): misses {'; '.join(search['missed'])}")
            click.echo(f"  tried {len(search['table'])} settings: {search['record']['json']}, "
                       f"{search['record']['plot']}")


# ------------------------------------------------------------------------------------------------
@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="the .emm file to write")
@click.option("--task", default=None, help="task name in the file (default: the model file's name)")
@click.option("--json", "as_json", is_flag=True, help="print a JSON summary")
@_fail_cleanly
def convert(model, output, task, as_json):
    """Convert one model (.keras, .h5, .tflite) into an .emm file with its exact float32 weights (no merging,
    no codebooks): to run one model in the runtime, and to check the importer against the framework.

    Example: edgemerge convert mobilenet_v2.keras -o mnv2.emm
    """
    from edgemerge.emm.files import check_output_target

    _check_input_file(model, "model file")
    check_output_target(output)
    if task is not None:
        from edgemerge.merging.convert import check_task_name
        check_task_name(task)
    _load_reference_stacks({"model": model}, "edgemerge convert")
    from edgemerge.workflows.convert import convert_file

    summary = convert_file(model, output, task=task)
    if as_json:
        _echo_json(summary)
        return
    ops = ", ".join(f"{n} {op}" for op, n in sorted(summary["ops"].items(), key=lambda kv: -kv[1]))
    click.echo(f"wrote {output}: .emm v{summary['format_version']}, {summary['nodes']} nodes ({ops}), "
               f"{_human_bytes(summary['file_bytes'])}; task {summary['task']}: input "
               f"{'x'.join(map(str, summary['input_shape']))}, {summary['classes']} outputs "
               f"({'logits; the final softmax is not applied' if summary['head_activation'] == 'softmax' else 'as the model computes them'})")


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
    click.echo(f"{info['path']}: .emm v{info['format_version']}, {_human_bytes(info['file_bytes'])}")
    if info["compression"]:
        click.echo(f"  originals: {_human_bytes(info['original_bytes'])} float32 parameters -> "
                   f"compression {info['compression']:.2f}x")
    click.echo(f"  run-time memory (one context): {_human_bytes(info['context_bytes'])}, of which activations "
               f"{_human_bytes(info['arena_bytes'])} at their peak")
    click.echo("  sections: " + ", ".join(f"{k} {_human_bytes(v)}" for k, v in info["sections"].items()))
    for t in info["tasks"]:
        click.echo(f"  task {t['name']}: input {'x'.join(map(str, t['input_shape']))} (input {t['input_index']}), "
                   f"{t['classes']} classes")
    click.echo(f"  {'#':>3} {'layer':<28} {'op':<17} {'out':<12} {'r/C':<8} {'bytes':>10}  kernel")
    for layer in info["layers"]:
        rc = f"{layer['r']}/{layer['C']}" if "r" in layer else ""
        if layer.get("int8_tables"):
            rc += " i8"   # int8 tables (FORMAT.md "int8 tables")
        shape = "x".join(map(str, layer["out_shape"]))
        click.echo(f"  {layer['index']:>3} {layer['name'][:28]:<28} {layer['op']:<17} {shape:<12} {rc:<8} "
                   f"{layer['bytes']:>10}  {layer['kernel']}")
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
        if "int8_drop" in r:   # int8-table layers: the same file with float tables, and the difference
            line += (f"   int8 tables: float tables {100 * r['float_tables_accuracy']:.2f}%, "
                     f"int8 drop {100 * r['int8_drop']:+.2f}%")
        click.echo(line)


# ------------------------------------------------------------------------------------------------
@main.command(name="bench")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--vs", "references", multiple=True, required=True, metavar="TASK=ORIGINAL.tflite",
              help="the task's original model in TFLite (float or quantised); one for every task")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="TFLite interpreter threads and OPENBLAS_NUM_THREADS (the C runtime is single-threaded)")
@click.option("--runs", type=click.IntRange(min=1), default=200, show_default=True,
              help="timed runs per side (one run = every task once on one sample)")
@click.option("--warmup", type=click.IntRange(min=0), default=20, show_default=True, help="untimed runs first")
@click.option("--data", multiple=True, metavar="TASK=NPZ",
              help="real samples (x of an .npz) for a task instead of seeded random ones; repeatable")
@click.option("--seed", default=0, show_default=True, help="seed of the random inputs")
@click.option("--profile", is_flag=True, help="also time every node of the merged model (C profiling API)")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@_fail_cleanly
def bench_command(model, references, threads, runs, warmup, data, seed, profile, as_json):
    """Time MODEL (all tasks, C runtime) against the original models (TFLite, XNNPACK), interleaved.

    Example: edgemerge bench merged.emm --vs fashion=lenet_fashion.tflite --vs words=net3_words.tflite
    """
    from edgemerge.extras import require
    from edgemerge.measure.bench import set_thread_environment

    require("peers", "edgemerge bench")
    set_thread_environment(threads)          # before anything loads the C runtime or its BLAS
    from edgemerge.datasets import load_samples, parse_task_pairs
    from edgemerge.measure.bench import bench

    _check_input_file(model, "model")
    reference_files, data_files = parse_task_pairs(references, "--vs"), parse_task_pairs(data, "--data")
    _check_model_files(reference_files, "--vs model")
    for task, path in data_files.items():
        load_samples(path, f"--data {task}:")
    result = bench(model, reference_files, threads=threads, runs=runs, warmup=warmup,
                   data=data_files, seed=seed, profile=profile,
                   log=lambda m: click.echo(m, err=True))
    if as_json:
        _echo_json(result)
        return
    from edgemerge.text import printable

    merged, reference = result["merged_ms"], result["reference_ms"]
    click.echo(f"{printable(model)}: {len(result['tasks'])} tasks, {runs} runs per side after {warmup} warm-up, "
               f"interleaved; inputs: {result['inputs']}")
    click.echo(f"  merged     C runtime, em_run_all ({result['merged']['runtime']}; "
               f"{result['merged_threads']} thread)")
    click.echo(f"  reference  {result['reference']['interpreter']}: "
               + ", ".join(printable(Path(t["reference"]).name) for t in result["tasks"].values()))
    click.echo(f"  {'ms per run':<11} {'min':>9} {'median':>9} {'p95':>9}")
    for side, s in (("merged", merged), ("reference", reference)):
        click.echo(f"  {side:<11} {s['min']:>9.4f} {s['median']:>9.4f} {s['p95']:>9.4f}")
    click.echo(f"  speedup    {result['speedup']:.2f}x (reference median / merged median)")
    m = result["merged"]
    click.echo(f"  peak memory: merged {_human_bytes(result['merged_peak_bytes'])} (model "
               f"{_human_bytes(m['file_bytes'])} + context {_human_bytes(m['context_bytes'])}; measured as RSS "
               f"{_human_bytes(result['merged_rss_peak_bytes'])})")
    held = result["memory"]["reference"]["held"]
    click.echo(f"               reference {_human_bytes(result['reference_peak_bytes'])} (peak RSS growth: heap "
               f"{_human_bytes(held['heap'])} + model files {_human_bytes(held['model_files'])} held after the "
               f"runs; {_human_bytes(held['library_code'])} of TFLite library code not counted)")
    click.echo(f"  {'per task':<11} {'merged alone':>13} {'reference':>10} {'speedup':>8}   (medians, ms)")
    for task, t in result["tasks"].items():
        alone, ref = t["merged_alone_ms"]["median"], t["reference_ms"]["median"]
        click.echo(f"  {task:<11} {alone:>13.4f} {ref:>10.4f} {ref / alone if alone > 0 else float('inf'):>7.2f}x")
    if profile:
        rows = result["profile"]
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
    for note in result["notes"]:
        click.echo(f"  note: {note}")


# ------------------------------------------------------------------------------------------------
@main.command()
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@_fail_cleanly
def boards(as_json):
    """List the board profiles (boards/*.toml) and whether this machine can build for each."""
    from edgemerge.deploy.boards import load_boards, missing_tools, source_root

    profiles = load_boards()
    root = source_root()
    rows = []
    for b in profiles.values():
        row = b.to_dict(root)
        row["missing"] = missing_tools(b, emulator=True)
        rows.append(row)
    if as_json:
        _echo_json(rows)
        return
    table = [("board", "triple", "cpu flags", "blas", "qemu", "ready")]
    for r in rows:
        qemu = f"{r['qemu']['binary']} -cpu {r['qemu']['cpu']}" if r["qemu"] else "- (native)"
        table.append((r["name"], r["triple"], " ".join(r["cpu_flags"]) or "-", r["blas"]["kind"], qemu,
                      "yes" if not r["missing"] else "no"))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    click.echo("")
    for r in rows:
        click.echo(f"{r['name']}: {r['description']}")
        for problem in r["missing"]:
            click.echo(f"  missing: {problem}")


# ------------------------------------------------------------------------------------------------
@main.command()
@click.option("--board", "board_name", required=True, metavar="NAME", help="a board profile (see `edgemerge boards`)")
@click.option("-o", "--output", type=click.Path(file_okay=False), default=None,
              help="install folder (default build/NAME); replaced only when the build succeeded")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
              help="parallel compile jobs (default: all cores)")
@click.option("--ctest", "run_ctest", is_flag=True,
              help="also build the C tests and run them (under the board's qemu) before installing")
@click.option("--json", "as_json", is_flag=True, help="print the build manifest as JSON")
@_fail_cleanly
def build(board_name, output, jobs, run_ctest, as_json):
    """Cross-build the C runtime for a board: static library, headers and em_run into DIR.

    Example: edgemerge build --board rpi4-aarch64 -o build/rpi4-aarch64
    """
    from edgemerge.deploy.boards import blas_mismatch, build_board, get_board

    board = get_board(board_name)
    out = output or os.path.join("build", board.name)
    manifest = build_board(board, out, jobs=jobs, ctest=run_ctest, log=lambda m: click.echo(f"{m}...", err=True))
    mismatch = blas_mismatch(manifest)
    if mismatch:
        click.echo(f"warning: {mismatch}", err=True)
    if as_json:
        _echo_json(manifest)
        return
    blas = manifest["blas"]
    simd = manifest["simd"]
    click.echo(f"board {board.name}: {board.description}")
    click.echo(f"  toolchain  {manifest['toolchain'] or 'native (no toolchain file)'}, {manifest['compiler']}")
    static = ", linked static" if manifest["static"] else ""
    click.echo(f"  flags      {' '.join(manifest['c_flags']) or '(none)'}{static}")
    click.echo(f"  blas       {blas['used']}" + (f" ({blas['library']})" if blas["used"] != "none" else
                                                  " (the runtime's own GEMM)"))
    symbols = ", ".join(sorted({k for ks in simd["symbols"].values() for k in ks}))
    click.echo(f"  simd       {', '.join(simd['used'])}"
               + (f" ({symbols})" if symbols else " (portable C kernels only)"))
    for note in manifest["configure_notes"]:
        click.echo(f"  cmake      {note}")
    if manifest["ctest"]:
        t = manifest["ctest"]
        where = f" under {' '.join(t['emulator'])}" if t.get("emulator") else ""
        click.echo(f"  ctest      {t.get('passed', '?')}/{t.get('total', '?')} passed{where}")
    click.echo(f"installed {out}: {', '.join(manifest['files'])} ({manifest['seconds']:.1f} s)")
    run = " ".join([*(manifest["qemu"] or []), os.path.join(out, "em_run")])
    click.echo(f"  try: {run} MODEL.emm --info")


# ------------------------------------------------------------------------------------------------
@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--to", "target_spec", required=True, metavar="ssh://[USER@]HOST[:PORT]/DIR | dir:DIR",
              help="where to install: a device over ssh, or a folder (a mounted SD card)")
@click.option("--board", "board_name", metavar="NAME",
              help="the device's board profile: its `uname -m` is checked, and --with-runtime installs its em_run")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="ssh port (default: the URL's, else 22)")
@click.option("--identity", type=click.Path(dir_okay=False), default=None,
              help="ssh private key to use (only that key: IdentitiesOnly)")
@click.option("--ssh-option", "ssh_options", multiple=True, metavar="KEY=VALUE",
              help="an OpenSSH option passed as `ssh -o KEY=VALUE` (e.g. UserKnownHostsFile=..., ProxyJump=...); "
                   "repeatable; overrides edgemerge's defaults")
@click.option("--with-runtime", is_flag=True,
              help="also install the board's em_run beside the model (built into --runtime-dir if not there)")
@click.option("--runtime-dir", type=click.Path(file_okay=False), default=None,
              help="where the board's build is (or goes): default build/BOARD")
@click.option("--verify", is_flag=True,
              help="run a fixed input per task through em_run on the device and compare with the host runtime")
@click.option("--name", default=None, help="file name on the device (default: MODEL's name)")
@click.option("--limit-rate", type=click.FloatRange(min=1), default=None, metavar="KIB",
              help="send at most KIB KiB/s (slow or shared links)")
@click.option("--connect-timeout", type=click.IntRange(min=1), default=10, show_default=True,
              help="seconds ssh waits for the device")
@click.option("--json", "as_json", is_flag=True, help="print a JSON summary")
@_fail_cleanly
def flash(model, target_spec, board_name, port, identity, ssh_options, with_runtime, runtime_dir, verify, name,
          limit_rate, connect_timeout, as_json):
    """Install MODEL on a device or in a folder, atomically, and check it there.

    \b
    edgemerge flash merged.emm --board rpi4-aarch64 --to ssh://pi@raspberrypi.local/opt/models \\
        [--port 22] [--identity KEY] [--with-runtime] [--verify]
    edgemerge flash merged.emm --to dir:/media/sdcard/models

    Each file goes to a temporary name on the target, its SHA-256 is read back there, and only then is it
    renamed over the old one: an interrupted flash leaves the previous model in place.
    """
    from edgemerge.deploy.boards import get_board
    from edgemerge.deploy.flash import flash as do_flash
    from edgemerge.deploy.flash import parse_target

    _check_input_file(model, "model")
    board = get_board(board_name) if board_name else None
    target = parse_target(target_spec, port=port, identity=identity, ssh_options=list(ssh_options),
                          connect_timeout=connect_timeout)
    result = do_flash(model, target, board=board, with_runtime=with_runtime, verify=verify,
                      runtime_dir=runtime_dir, name=name, limit_kib=limit_rate,
                      log=lambda m: click.echo(f"{m}...", err=True))
    if as_json:
        _echo_json(result)
        return
    where = f" ({result['machine']}, board {result['board']})" if result["machine"] else ""
    click.echo(f"flashed {result['target']}{where} in {result['seconds']:.1f} s")
    for f in result["files"]:
        how = "already there, kept" if f["unchanged"] else "read back on the target"
        click.echo(f"  {f['name']:<24} {f['bytes']:>10} bytes  sha256 {f['sha256']}  ({how})")
    if result["previous_sha256"] and result["previous_sha256"] != result["sha256"]:
        click.echo(f"  replaced the previous {result['name']} (sha256 {result['previous_sha256']})")
    if result["leftovers_removed"]:
        click.echo(f"  removed {result['leftovers_removed']} temporary file(s) of an interrupted flash")
    if result["verify"]:
        for task, v in result["verify"].items():
            click.echo(f"  verify {task}: top-1 {v['top1_device']} (host {v['top1_host']}), max |diff| "
                       f"{v['max_abs_diff']:.2g} <= {v['tolerance']:.2g}: ok")


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


@main.command(name="export-c")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="the C header to write")
@click.option("--align", "alignment", type=click.IntRange(min=1), default=None,
              help="alignment of the array in bytes: a power of two from the format's 64 (the default) to 4096")
@click.option("--name", default=None, help="C name of the array (default: from the output file name)")
@click.option("--json", "as_json", is_flag=True, help="print a JSON summary")
@_fail_cleanly
def export_c(model, output, alignment, name, as_json):
    """Write MODEL as a const, aligned C array (a header) that the runtime loads in place, e.g. from flash.

    Example: edgemerge export-c merged.emm -o model_data.h --align 64 --name fashion_words
    """
    from edgemerge.deploy.export_c import export_c_header

    _check_input_file(model, "model")
    result = export_c_header(model, output, alignment=alignment, name=name)
    if as_json:
        _echo_json(result)
        return
    click.echo(f"wrote {output}: const unsigned char {result['name']}[{result['bytes']}], aligned to "
               f"{result['alignment']}, format version {result['format_version']}, CRC32 "
               f"{result['crc32']:#010x}")
    click.echo(f"  load: em_model_load({result['name']}, {result['size_macro']}, NULL, &model, &err)")


# ------------------------------------------------------------------------------------------------
class _DefaultCommandGroup(click.Group):
    """A group whose arguments, when they do not start with one of its subcommands, go to a default
    subcommand: `edgemerge zipper a=A.keras ...` runs `zipper run`, `edgemerge zipper pick DIR` runs `pick`."""

    default_command = "run"

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


@main.group(cls=_DefaultCommandGroup)
def zipper():
    """Zipper two models of the same architecture block by block (Wu, Chan & Chen, EMC² 2019).

    \b
    edgemerge zipper a=mobilenet_a.keras b=mobilenet_b.keras --calib a=a_train.npz --calib b=b_train.npz \\
        --val a=a_test.npz --val b=b_test.npz -o zipped/ [--share pointwise|block] [--steps-per-round N]
    edgemerge zipper pick zipped/ --max-drop 0.02 -o merged.emm

    The first form (`zipper run`) writes zipped/k00.emm (both models unmerged) .. kLL.emm, report.json and
    tradeoff.png; `pick` copies the deepest k within an accuracy budget.
    """


@zipper.command(name="run")
@click.argument("models", nargs=-1, required=True, metavar="TASK=MODEL...")
@click.option("--calib", multiple=True, required=True, metavar="TASK=NPZ",
              help="calibration data per task (x, y); 10% is held out to pick checkpoints")
@click.option("--val", multiple=True, required=True, metavar="TASK=NPZ",
              help="data per task on which every k is evaluated in the C runtime")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="output folder")
@click.option("--share", type=click.Choice(["pointwise", "block"]), default="pointwise", show_default=True,
              help="pointwise: share the point-wise convs of blocks 1..k (the paper); block: share whole blocks "
                   "1..k, computed once for all tasks")
@click.option("--steps-per-round", type=click.IntRange(min=0), default=None,
              help="calibration steps per round (one batch of every task each); default about two epochs")
@click.option("--bn", type=click.Choice(["fold", "stats"]), default="stats", show_default=True,
              help="BatchNorm at initialisation: average the BatchNorm statistics and fold, or average the folded "
                   "weights")
@click.option("--align", type=click.Choice(["none", "hungarian"]), default="none", show_default=True,
              help="permute filters to match before averaging (Hungarian assignment)")
@click.option("--encode", type=click.Choice(["accu", "light"]), default=None,
              help="also codebook-encode the shared point-wise layers with this merge preset")
@click.option("--l1-weight", type=click.FloatRange(min=0), default=None,
              help="weight of the L1 term (shared layers' outputs against the originals') in each round's "
                   "calibration loss; 0 = cross-entropy only  [default: 1.0]")
@click.option("--l1-scope", type=click.Choice(["shared", "all"]), default="shared", show_default=True,
              help="the L1 terms: the shared layers' outputs (the paper), or every layer's, each task's own "
                   "layers against its original too")
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help="peak learning rate of each round's calibration  [default: 0.001]")
@click.option("--seed", default=0, show_default=True, help="seed of calibration (and k-means with --encode)")
@click.option("--no-tflite", is_flag=True, help="do not time the originals in TFLite")
@click.option("--json", "as_json", is_flag=True, help="print report.json instead of the table")
@_fail_cleanly
def zipper_run(models, calib, val, output, share, steps_per_round, bn, align, encode, l1_weight, l1_scope,
               learning_rate, seed, no_tflite, as_json):
    """Zipper TASK=MODEL pairs round by round, k = 1..L, calibrating after every round."""
    from edgemerge.extras import require

    require("merge", "edgemerge zipper")
    require("plots", "edgemerge zipper (tradeoff.png)")
    if not no_tflite:
        require("peers", "edgemerge zipper (TFLite timings; or pass --no-tflite)")
    from edgemerge.datasets import check_data_files, parse_task_pairs
    from edgemerge.text import printable

    sources = parse_task_pairs(models, "model")
    if len(sources) < 2:
        raise EdgemergeError("zipper needs two TASK=MODEL pairs")
    _check_model_files(sources)
    calib_files, val_files = parse_task_pairs(calib, "--calib"), parse_task_pairs(val, "--val")
    check_data_files(calib_files)
    check_data_files(val_files)
    if os.path.exists(output) and not os.path.isdir(output):
        raise EdgemergeError(f"-o {printable(output)}: exists and is not a folder")
    from edgemerge.workflows.zipper_files import zipper_files
    from edgemerge.zipper.report import format_table

    _load_tensorflow_quietly()
    result = zipper_files(sources, calib_files, val_files, output,
                          share=share, steps_per_round=steps_per_round, bn=bn, align=align, encode=encode,
                          seed=seed, l1_scope=l1_scope, tflite=not no_tflite, log=lambda m: click.echo(m, err=True),
                          calibrate_options={k: v for k, v in (("l1_weight", l1_weight), ("learning_rate", learning_rate))
                                             if v is not None})
    if as_json:
        _echo_json(result.report)
        return
    click.echo(format_table(result.report))
    click.echo(f"wrote {output}: k00.emm .. k{result.report['blocks']:02d}.emm, report.json, tradeoff.png")


@zipper.command(name="pick")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--max-drop", required=True, type=float, metavar="X",
              help="largest accuracy drop allowed for every task (0.02 = 2 points)")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="the .emm file to write")
@click.option("--json", "as_json", is_flag=True, help="print the picked row of report.json as JSON")
@_fail_cleanly
def zipper_pick(folder, max_drop, output, as_json):
    """Copy the deepest zippered model within an accuracy budget from a `zipper` output folder."""
    from edgemerge.emm.files import check_output_target
    from edgemerge.text import printable
    from edgemerge.zipper.report import pick

    if not os.path.isdir(folder):
        raise EdgemergeError(f"{printable(folder)}: no such folder (the -o of `edgemerge zipper`)")
    check_output_target(output)
    row = pick(folder, max_drop, output)
    if as_json:
        _echo_json({**row, "output": str(output), "max_drop": max_drop})
        return
    drops = ", ".join(f"{t} {100 * d:+.2f}" for t, d in row["drop"].items())
    click.echo(f"picked k={row['k']} ({row['file']}: {_human_bytes(row['file_bytes'])}, "
               f"{row['compression']:.2f}x; drop {drops} points) -> {output}")


if __name__ == "__main__":
    main()
