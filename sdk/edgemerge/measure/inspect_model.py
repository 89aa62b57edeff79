"""What is inside an `.emm` file: tasks, layers, r/C, bytes per section and per layer, compression."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgemerge import emm
from edgemerge.emm.constants import NONE, Keys, Op, Section
from edgemerge.emm.graph import MergedGraph
from edgemerge.errors import EmmFormatError


def _tensor_bytes(graph: MergedGraph, tid: int) -> int:
    if tid == NONE:
        return 0
    t = graph.tensors[tid]
    numel = int(np.prod(t.shape))
    return 4 * numel if t.bits == 32 else (numel * t.bits + 7) // 8


def _listed_sources(graph: MergedGraph) -> int:
    """How many `source.N` entries to list: `source.count` is any u64 in a valid file, so it is capped by the
    number of metadata entries (a source past that has no keys at all; an uncapped count let a 704-byte file
    make `inspect` allocate without bound: runtime_c/fuzz/regressions/py-inspect-huge-source-count.emm)."""
    return min(int(graph.metadata.get(Keys.Source.COUNT, 0)), len(graph.metadata))


def describe(path: str | os.PathLike) -> dict:
    """Validates the file with both the Python reader and the C loader, then describes it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise EmmFormatError(f"{path}: no such file") from None
    except OSError as e:
        raise EmmFormatError(f"{path}: cannot read ({e.strerror})") from None
    try:
        sections = emm.read_sections(data)
        graph = emm.read_emm(data)
    except EmmFormatError as e:
        raise EmmFormatError(f"{path}: {e}") from None
    from edgemerge.runtime import Runtime  # the C loader is the authority: it must accept the file too
    runtime = Runtime(path)

    codebook_users: dict[int, list[str]] = {}
    codebook_ops = (Op.LUT_CONV2D, Op.LUT_DENSE, Op.LUT_DEPTHWISE_CONV2D)
    for node in graph.nodes:
        if node.op in codebook_ops:
            codebook_users.setdefault(node.weight, []).append(node.name)
    tasks_of_node: dict[int, list[str]] = {}
    for t in graph.tasks:
        for i in graph.nodes_for(t.name):
            tasks_of_node.setdefault(i, []).append(t.name)
    counted: set[int] = set()
    layers = []
    for i, (node, rt_node) in enumerate(zip(graph.nodes, runtime.nodes())):
        own = sum(_tensor_bytes(graph, t) for t in (node.index, node.bias) if t not in counted)
        counted.update(t for t in (node.index, node.bias) if t != NONE)
        shared = 0
        if node.weight != NONE and node.weight not in counted:
            shared = _tensor_bytes(graph, node.weight)
            counted.add(node.weight)
        entry = {"index": i, "name": node.name, "op": node.op.name, "input": node.input,
                 "out_shape": list(node.out_shape), "activation": node.activation.name,
                 "kernel": rt_node["kernel"], "bytes": own + shared, "sources": list(node.sources),
                 "tasks": tasks_of_node.get(i, [])}
        if node.op in codebook_ops:
            entry.update({"r": node.seg_len, "C": node.codewords, "index_bits": graph.tensors[node.index].bits,
                          "int8_tables": node.int8_tables,
                          "codebook": graph.tensors[node.weight].name,
                          # one [1, C, r] codebook for every segment of the layer (FORMAT.md "Layer-shared
                          # codebooks"), as opposed to one codebook per segment
                          "layer_shared_codebook": _is_layer_shared(graph, node),
                          "codebook_shared_with": [n for n in codebook_users[node.weight] if n != node.name]})
        layers.append(entry)
    # Sharing, the point of merging: each codebook and the layers that look up in it (several = shared), and
    # the nodes that run once for several tasks (the shared trunk).
    codebooks = [{"name": graph.tensors[tid].name, "bytes": _tensor_bytes(graph, tid),
                  "layers": users, "tasks": sorted({t for u in users for t in tasks_of_node.get(_node_index(graph, u), [])})}
                 for tid, users in codebook_users.items()]
    shared_trunk = [graph.nodes[i].name for i in sorted(tasks_of_node) if len(tasks_of_node[i]) > 1]
    original = int(graph.metadata.get(Keys.General.ORIGINAL_BYTES, 0))
    return {
        "path": str(path),
        "format_version": runtime.format_version,
        "file_bytes": len(data),
        "original_bytes": original,
        "compression": original / len(data) if original else None,
        "context_bytes": runtime.context_bytes,
        # kernel data the loader derives from the file (decoded weights, unpacked indices), with this machine's kernels
        "packed_bytes": runtime.packed_bytes,
        # the activation arena inside the context: values share memory by liveness (FORMAT.md v2 graphs)
        "arena_bytes": runtime.arena_bytes,
        "tasks": [{"name": t.name, "input_shape": list(graph.inputs[t.input]), "classes": t.classes,
                   "input_index": t.input} for t in graph.tasks],
        "sections": {Section(k).name: len(v) for k, v in sections.items()},
        "sources": [{"task": graph.metadata.get(Keys.Source.TASK.format(i=i)), "file": graph.metadata.get(Keys.Source.FILE.format(i=i)),
                     "param_bytes": graph.metadata.get(Keys.Source.PARAM_BYTES.format(i=i))}
                    for i in range(_listed_sources(graph))],
        "metadata": {k: v for k, v in graph.metadata.items()
                     if not k.startswith((Keys.Node.PREFIX, Keys.Tensor.PREFIX, Keys.Source.PREFIX))},
        "layers": layers,
        "codebooks": codebooks,
        "shared_trunk": shared_trunk,
    }


def _is_layer_shared(graph: MergedGraph, node) -> bool:
    """True when a LUT_CONV2D / LUT_DENSE node's codebook has one segment row but the node has several
    segments. Clustered depthwise nodes always read one [1, C, r] codebook per task (FORMAT.md), so the
    per-segment / layer-shared distinction does not apply to them."""
    if node.op not in (Op.LUT_CONV2D, Op.LUT_DENSE):
        return False
    # index tensors are [KH, KW, S, Cout] (LUT_CONV2D) and [S, Cout] (LUT_DENSE): S is second from last
    return graph.tensors[node.weight].shape[0] == 1 and graph.tensors[node.index].shape[-2] > 1


def _node_index(graph: MergedGraph, name: str) -> int:
    return next(i for i, node in enumerate(graph.nodes) if node.name == name)
