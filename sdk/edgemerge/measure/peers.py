"""The peers `bench` (and `bench --on`) runs the originals in: TFLite (LiteRT + XNNPACK) for .tflite files and
ONNX Runtime for .onnx files; which file is which peer, opening and checking them against the merged model's
tasks, and how each is named in the results."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edgemerge.errors import EdgemergeError, ModelFormatError

PEER_KINDS = {".tflite": "tflite", ".onnx": "onnxruntime"}
"""File suffix -> peer kind. A kind needs an entry in open_peer_model and preload_peer_libraries."""


def peer_kind(path: str | os.PathLike) -> str | None:
    return PEER_KINDS.get(Path(path).suffix.lower())


def open_peer_model(path: str | os.PathLike, threads: int):
    """One original model in its runtime: an object with path, input_shape, output_size, input_dtype and
    prepare_input / set_input / invoke / output / run_one (tflite_peer.TFLiteModel's interface)."""
    kind = peer_kind(path)
    if kind == "tflite":
        from edgemerge.measure.tflite_peer import TFLiteModel
        return TFLiteModel(path, num_threads=threads)
    if kind == "onnxruntime":
        from edgemerge.measure.onnx_peer import ONNXModel
        return ONNXModel(path, num_threads=threads)
    raise ModelFormatError(f"--vs {path}: no peer runtime for {Path(path).suffix or 'a file without a suffix'}")


def preload_peer_libraries(kinds) -> None:
    """Imports the peers' runtimes (before a memory baseline: library code is not the peer's data)."""
    for kind in set(kinds):
        if kind == "tflite":
            import ai_edge_litert.interpreter  # noqa: F401
        elif kind == "onnxruntime":
            import onnxruntime  # noqa: F401


def peer_runtime(kind: str, threads: int) -> str:
    if kind == "tflite":
        from edgemerge.measure.tflite_peer import interpreter_version
        return f"{interpreter_version()}, XNNPACK delegate, num_threads={threads}"
    if kind == "onnxruntime":
        from edgemerge.measure.onnx_peer import runtime_version
        return f"{runtime_version()}, CPUExecutionProvider, intra_op_num_threads={threads}, all graph optimisations"
    return kind


def parse_peer_sets(values: tuple[str, ...] | list[str], what: str = "--vs") -> list[dict[str, str]]:
    """TASK=FILE arguments -> peers: the n-th file given for a task belongs to peer n. The same file twice
    for one task is a mistake, not a second peer."""
    from edgemerge.text import printable

    sets: list[dict[str, str]] = []
    for item in values:
        task, sep, path = item.partition("=")
        if not sep or not task or not path:
            raise EdgemergeError(f"{what} {printable(item)!r}: expected TASK=PATH")
        given = [peer[task] for peer in sets if task in peer]
        if path in given:
            raise EdgemergeError(f"{what}: task {printable(task)!r} given twice with {printable(path)}")
        if len(given) == len(sets):
            sets.append({})
        sets[len(given)][task] = path
    return sets


def open_peer_models(runtime, references: dict[str, str], threads: int) -> dict[str, Any]:
    """The peer model of every task, checked against the task (tasks, file, input shape, outputs)."""
    tasks = runtime.task_names
    unknown = [t for t in references if t not in tasks]
    if unknown:
        raise EdgemergeError(f"--vs: task(s) {', '.join(unknown)} not in {runtime.path} "
                             f"(tasks: {', '.join(tasks)})")
    missing = [t for t in tasks if t not in references]
    if missing:
        raise EdgemergeError(f"--vs: no reference model for task(s) {', '.join(missing)}; give --vs TASK=ORIGINAL.tflite "
                             f"for every task of {runtime.path} ({', '.join(tasks)})")
    models = {}
    kinds = set()
    for task in tasks:          # the model's task order, whatever the command line order
        path = Path(references[task])
        if not path.is_file():
            raise ModelFormatError(f"--vs {task}={path}: no such file")
        if peer_kind(path) is None:
            raise ModelFormatError(f"--vs {task}={path}: the reference must be a .tflite file (the TFLite "
                                   "interpreter runs it; convert the model with tf.lite.TFLiteConverter) or an "
                                   ".onnx file (ONNX Runtime runs it)")
        kinds.add(peer_kind(path))
        model = open_peer_model(path, threads)
        info = runtime.task(task)
        if tuple(model.input_shape) != tuple(info.input_shape):
            raise ModelFormatError(f"--vs {task}={path}: the model takes input of shape {tuple(model.input_shape)}, "
                                   f"task {task!r} of {runtime.path} takes {info.input_shape}")
        if model.output_size != info.classes:
            raise ModelFormatError(f"--vs {task}={path}: the model has {model.output_size} outputs, task {task!r} "
                                   f"has {info.classes} classes")
        models[task] = model
    return models


def peer_label(models: dict[str, Any], taken: set[str]) -> str:
    """`tflite float32`, `tflite int8`, or `tflite mixed`: the kind and what its models compute in (a model's
    `precision`: an int8 .tflite with float input and output is int8; peers without one, by their input
    type), made unique."""
    kinds = sorted({peer_kind(m.path) or "?" for m in models.values()})
    dtypes = sorted({str(getattr(m, "precision", None) or m.input_dtype) for m in models.values()})
    label = f"{'+'.join(kinds)} {dtypes[0] if len(dtypes) == 1 else 'mixed'}"
    unique, n = label, 2
    while unique in taken:
        unique, n = f"{label} #{n}", n + 1
    taken.add(unique)
    return unique
