"""The commands that build models: merge (NeuralMerger, calibration, the budget search), convert (one model,
exact float weights), quantize (int8 activations for a merged file) and zipper run/pick."""
from __future__ import annotations

import os

import click

from edgemerge.cli.common import (
    _check_input_file,
    _check_model_files,
    _echo_json,
    _fail_cleanly,
    _human_bytes,
    _load_reference_stacks,
    _load_tensorflow_quietly,
    _needs_keras,
    main,
)
from edgemerge.errors import EdgemergeError


# ------------------------------------------------------------------------------------------------
@main.command()
@click.argument("models", nargs=-1, required=True, metavar="TASK=MODEL...")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="the .emm file to write")
@click.option("--preset", type=click.Choice(["accu", "light", "light4"]), default="accu", show_default=True,
              help="per-layer segment length r and codebook size C (light4: light with C=16 and int8 tables where r > 1)")
@click.option("--layer-rc", multiple=True, metavar="NAME=r/C[/shared]",
              help="override r and C for the group containing layer NAME (or TASK:LAYER); '/shared': one "
                   "layer-shared codebook for all its segments; repeatable")
@click.option("--int8-tables", "int8_tables", multiple=True, metavar="NAME[,NAME..]",
              help="encode these layers' groups (NAME or TASK:LAYER, or 'all') with C=16 and int8 tables, "
                   "looked up with byte shuffles at run time; repeatable")
@click.option("--int8", "int8_act", multiple=True, metavar="NAME[,NAME..]",
              help="run these merged layers (NAME or TASK:LAYER, or 'all') with int8 activations and codebooks "
                   "(int8 dot products at run time); input scales from the --calib data; repeatable")
@click.option("--int8-finetune", "int8_finetune", type=int, default=None, metavar="STEPS",
              help="after calibration, calibrate STEPS more steps with the --int8 layers' int8 activations simulated "
                   "(fake quantisation), then measure their input scales again")
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
def merge(models, output, preset, layer_rc, int8_tables, int8_act, int8_finetune, alignment, seed, kmeans_inits, calib,
          steps, calib_fraction, budget, best_effort, strategy, as_json):
    """Merge models given as TASK=MODEL pairs (.keras or .h5) into one .emm file.

    Example: edgemerge merge fashion=lenet_fashion.keras words=net3_words.keras -o merged.emm --preset accu

    With --calib the merged model is calibrated (the paper's loss: each task's cross-entropy plus the L1
    mismatch of every merged layer against the original model); with --budget r/C are searched per layer.
    """
    from edgemerge.datasets import check_data_files, parse_task_pairs
    from edgemerge.emm.files import check_output_target
    from edgemerge.extras import require
    from edgemerge.workflows.quantize_file import check_finetune_steps

    # every path and data file checked before TensorFlow loads (seconds) and before any work
    int8_names = [n.strip() for item in int8_act for n in item.split(",") if n.strip()]
    check_finetune_steps(int8_finetune, int8_names)
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
    overrides: dict[str, tuple] = {}
    for item in layer_rc:
        name, sep, rc = item.partition("=")
        r, slash, c = rc.partition("/")
        c, _, shared = c.partition("/")
        if not sep or not slash or not r.isdigit() or not c.isdigit() or shared not in ("", "shared"):
            raise EdgemergeError(f"--layer-rc {item!r}: expected NAME=r/C or NAME=r/C/shared, e.g. fc1=16/64")
        overrides[name] = (int(r), int(c), True) if shared else (int(r), int(c))
    calib_files = parse_task_pairs(calib, "--calib") if calib else None
    if (steps is not None or calib_fraction != 1.0) and not calib_files:
        raise EdgemergeError("--steps and --calib-fraction need --calib TASK=NPZ for every task")
    if best_effort and not budget:
        raise EdgemergeError("--best-effort goes with --budget")
    if int8_names and not calib_files:
        raise EdgemergeError("--int8 needs --calib TASK=NPZ: the input scales come from calibration data")
    from edgemerge.workflows.budget import BudgetNotMet
    try:
        summary = merge_files(sources, output, preset=preset, layer_rc=overrides, alignment=list(alignment),
                              seed=seed, kmeans_inits=kmeans_inits, calib=calib_files, steps=steps,
                              calib_fraction=calib_fraction, budget=budget, strategy=strategy,
                              int8_tables=[n.strip() for item in int8_tables for n in item.split(",") if n.strip()],
                              best_effort=best_effort, int8_act=int8_names, int8_finetune=int8_finetune,
                              log=lambda m: click.echo(m, err=True))
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
        if summary.get("int8_act", {}).get("layers"):
            click.echo(f"  int8 activations: {', '.join(summary['int8_act']['layers'])}")
        if "finetune" in summary.get("int8_act", {}):
            _echo_finetune(summary["int8_act"]["finetune"])
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
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="the .emm file to write (may be MODEL itself: written to a temporary, then renamed)")
@click.option("--int8", "int8_act", multiple=True, required=True, metavar="NAME[,NAME..]",
              help="the merged layers to run with int8 activations and codebooks (NAME or TASK:LAYER, or 'all'); "
                   "repeatable")
@click.option("--calib", multiple=True, required=True, metavar="TASK=NPZ",
              help="calibration data of the tasks that run those layers (x: N, H, W, C); the first 300 samples "
                   "give the input scales")
@click.option("--int8-finetune", "int8_finetune", type=int, default=None, metavar="STEPS",
              help="calibrate STEPS steps with these layers' int8 activations simulated (fake quantisation) before "
                   "measuring their input scales again; needs --calib and --reference for every task")
@click.option("--reference", "references", multiple=True, metavar="TASK=MODEL",
              help="with --int8-finetune: the original model of each task (calibration's L1 targets)")
@click.option("--json", "as_json", is_flag=True, help="print a JSON summary")
@_fail_cleanly
def quantize(model, output, int8_act, calib, int8_finetune, references, as_json):
    """Flag layers of a merged MODEL for int8 activations (docs/FORMAT.md "int8 activations") without merging
    again: the same as `merge --int8`, on a file that exists. `eval` then reports the quantisation's own
    accuracy cost (int8 drop) and `bench` its speed.

    Example: edgemerge quantize merged_light.emm --int8 all --calib fashion=fashion_train.npz
    --calib words=words_train.npz -o merged_light_int8.emm

    With --int8-finetune STEPS the file is calibrated again first, with the int8 activations simulated
    (add --reference fashion=lenet_fashion.keras --reference words=net3_words.keras).
    """
    from edgemerge.datasets import check_data_files, parse_task_pairs
    from edgemerge.workflows.quantize_file import check_finetune_steps, quantize_file

    _check_input_file(model, "model file")
    names = [n.strip() for item in int8_act for n in item.split(",") if n.strip()]
    check_finetune_steps(int8_finetune, names)
    calib_files = parse_task_pairs(calib, "--calib")
    check_data_files(calib_files)
    reference_files = parse_task_pairs(references, "--reference") if references else None
    if reference_files:
        _check_model_files(reference_files, "reference model")
    if int8_finetune and reference_files:
        from edgemerge.extras import require
        require("merge", "edgemerge quantize --int8-finetune")   # calibration runs in TensorFlow
        _load_reference_stacks(reference_files, "edgemerge quantize --int8-finetune")
        _load_tensorflow_quietly()
    summary = quantize_file(model, output, names, calib_files, log=lambda m: click.echo(m, err=True),
                            finetune_steps=int8_finetune, originals=reference_files)
    if as_json:
        _echo_json(summary)
        return
    click.echo(f"wrote {output}: {_human_bytes(summary['file_bytes'])}, {len(summary['layers'])} layers with "
               f"int8 activations ({summary['int8_layers_after']} in the file)")
    for name, scale in summary["input_scales"].items():
        click.echo(f"  {name}: input scale {scale:.6g} ({127 * scale:.4g} = the {summary['percentile']}th "
                   "percentile of |x|)")
    if "int8_finetune" in summary:
        _echo_finetune(summary["int8_finetune"])


def _echo_finetune(finetune: dict) -> None:
    """The held-out accuracy of the int8-simulated model before and after `--int8-finetune`, per task."""
    for task, r in finetune["calibration"]["tasks"].items():
        click.echo(f"  {task}: held-out accuracy with int8 simulated {100 * r['accuracy_before']:.2f}% -> "
                   f"{100 * r['accuracy_after']:.2f}% after {finetune['steps']} fine-tune steps")


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
@click.option("--rounds", type=click.IntRange(min=1), default=None,
              help="run rounds k = 1..N only  [default: every block]")
@click.option("--top", is_flag=True,
              help="one more round after the blocks: share the convs between the last block and the pooling "
                   "(MobileNetV2's Conv_1), leaving only the classifiers per task")
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
def zipper_run(models, calib, val, output, share, steps_per_round, rounds, top, bn, align, encode, l1_weight, l1_scope,
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
                          share=share, steps_per_round=steps_per_round, rounds=rounds, top=top, bn=bn, align=align, encode=encode,
                          seed=seed, l1_scope=l1_scope, tflite=not no_tflite, log=lambda m: click.echo(m, err=True),
                          calibrate_options={k: v for k, v in (("l1_weight", l1_weight), ("learning_rate", learning_rate))
                                             if v is not None})
    if as_json:
        _echo_json(result.report)
        return
    click.echo(format_table(result.report))
    click.echo(f"wrote {output}: k00.emm .. k{result.report['last_round']:02d}.emm, report.json, tradeoff.png")


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
