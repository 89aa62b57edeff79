"""The `edgemerge` command line: merge | inspect | eval.

Heavy modules (TensorFlow, scikit-learn, the C runtime) are imported inside the commands that need them,
so `edgemerge --help` and `edgemerge inspect` start quickly.
"""
from __future__ import annotations

import functools
import json
import os
import sys

import click

from . import __version__
from .errors import EdgemergeError


def _fail_cleanly(fn):
    """Turns every EdgemergeError into `error: ...` on stderr and exit status 1 (no traceback)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EdgemergeError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
    return wrapper


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


def _echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgemerge")
def main() -> None:
    """Merge trained CNNs into one compact multi-task model (.emm) and run it on CPU edge boards."""
    # Two cores on typical hosts and boards: keep the numeric libraries from oversubscribing them.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# ------------------------------------------------------------------------------------------------
@main.command()
@click.argument("models", nargs=-1, required=True, metavar="TASK=MODEL...")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="the .emm file to write")
@click.option("--preset", type=click.Choice(["accu", "light"]), default="accu", show_default=True,
              help="per-layer segment length r and codebook size C")
@click.option("--layer-rc", multiple=True, metavar="NAME=r/C",
              help="override r and C for the group containing layer NAME (or TASK:LAYER); repeatable")
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
              help="search r/C per layer under an accuracy and/or size budget (needs --calib)")
@click.option("--strategy", type=click.Choice(["default", "mirrored", "multi-worker"]), default="default",
              show_default=True, help="tf.distribute strategy for calibration (multi-worker reads TF_CONFIG)")
@click.option("--json", "as_json", is_flag=True, help="print a JSON summary")
@_fail_cleanly
def merge(models, output, preset, layer_rc, alignment, seed, kmeans_inits, calib, steps, calib_fraction, budget,
          strategy, as_json):
    """Merge models given as TASK=MODEL pairs (.keras or .h5) into one .emm file.

    Example: edgemerge merge fashion=lenet_fashion.keras words=net3_words.keras -o merged.emm --preset accu

    With --calib the merged model is calibrated (the paper's loss: each task's cross-entropy plus the L1
    mismatch of every merged layer against the original model); with --budget r/C are searched per layer.
    """
    from .datasets import parse_task_pairs
    from .pipeline import merge_files

    _load_tensorflow_quietly()
    if strategy == "multi-worker":
        # TensorFlow wants the collective-ops strategy created before any other TF work in the process.
        import tensorflow as tf
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    sources = parse_task_pairs(models, "model")
    if len(sources) < 2:
        raise EdgemergeError("merge needs at least two TASK=MODEL pairs")
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
    summary = merge_files(sources, output, preset=preset, layer_rc=overrides, alignment=list(alignment),
                          seed=seed, kmeans_inits=kmeans_inits, calib=calib_files, steps=steps,
                          calib_fraction=calib_fraction, budget=budget, strategy=strategy,
                          log=lambda m: click.echo(m, err=True))
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
            chosen = ", ".join(f"{k}={v}" for k, v in summary["search"]["layer_rc"].items())
            click.echo(f"  chosen r/C: {chosen}")


# ------------------------------------------------------------------------------------------------
@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@_fail_cleanly
def inspect(model, as_json):
    """Show the tasks, layers, r/C, bytes per section and compression of an .emm file."""
    from .inspect_model import describe

    info = describe(model)
    if as_json:
        _echo_json(info)
        return
    click.echo(f"{info['path']}: .emm v{info['format_version']}, {_human_bytes(info['file_bytes'])}")
    if info["compression"]:
        click.echo(f"  originals: {_human_bytes(info['original_bytes'])} float32 parameters -> "
                   f"compression {info['compression']:.2f}x")
    click.echo(f"  run-time memory (one context): {_human_bytes(info['context_bytes'])}")
    click.echo("  sections: " + ", ".join(f"{k} {_human_bytes(v)}" for k, v in info["sections"].items()))
    for t in info["tasks"]:
        click.echo(f"  task {t['name']}: input {'x'.join(map(str, t['input_shape']))} (input {t['input_index']}), "
                   f"{t['classes']} classes")
    click.echo(f"  {'#':>3} {'layer':<28} {'op':<17} {'out':<12} {'r/C':<8} {'bytes':>10}  kernel")
    for layer in info["layers"]:
        rc = f"{layer['r']}/{layer['C']}" if "r" in layer else ""
        shape = "x".join(map(str, layer["out_shape"]))
        click.echo(f"  {layer['index']:>3} {layer['name'][:28]:<28} {layer['op']:<17} {shape:<12} {rc:<8} "
                   f"{layer['bytes']:>10}  {layer['kernel']}")


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
    from .datasets import parse_task_pairs
    from .evaluate import evaluate

    if references:
        _load_tensorflow_quietly()
    result = evaluate(model, parse_task_pairs(data, "--data"), parse_task_pairs(references, "--reference"))
    if as_json:
        _echo_json(result)
        return
    click.echo(f"{'task':<16} {'n':>7} {'merged':>8} {'original':>9} {'drop':>8}")
    for task, r in result["tasks"].items():
        ref = f"{100 * r['reference_accuracy']:.2f}%" if r["reference_accuracy"] is not None else "-"
        drop = f"{100 * r['drop']:+.2f}%" if r["drop"] is not None else "-"
        click.echo(f"{task:<16} {r['n']:>7} {100 * r['accuracy']:>7.2f}% {ref:>9} {drop:>8}")


if __name__ == "__main__":
    main()
