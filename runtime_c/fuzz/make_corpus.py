"""Writes the seed corpus of the fuzzers (runtime_c/fuzz/corpus/): valid `.emm` files from the Python writer
and the hand-made corrupt cases of tests/corrupt.py. Deterministic: running it again rewrites the same bytes,
so `git status` shows a change only when the writer or the test graphs change.

    python runtime_c/fuzz/make_corpus.py [--out runtime_c/fuzz/corpus]

Every file is small (a few KB) so that the fuzzers mutate it quickly; together they reach every op (clustered
depthwise included), the shared-trunk layout, several inputs and every corrupt-file class.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from edgemerge import emm  # noqa: E402
from edgemerge.emm.constants import NONE, Act, Op  # noqa: E402
from edgemerge.emm.graph import MergedGraph, Node, Task, Tensor  # noqa: E402


def every_plain_op_graph(seed: int = 3) -> MergedGraph:
    """One task through every non-LUT op: CONV2D, DEPTHWISE_CONV2D, AVG_POOL, MAX_POOL, ACTIVATION,
    GLOBAL_AVG_POOL, RESHAPE, DENSE (with and without bias), with strides, pads and every activation."""
    rng = np.random.default_rng(seed)
    g = MergedGraph(metadata={"edgemerge.tool_version": "corpus", "edgemerge.original_bytes": 4096,
                              "source.count": 1, "source.0.task": "plain", "node.0.name": "conv"})
    x = g.add_input((7, 6, 2))
    w = g.add_tensor(Tensor.f32("conv/w", rng.normal(size=(3, 3, 2, 4))))
    b = g.add_tensor(Tensor.f32("conv/b", rng.normal(size=4)))
    v = g.add_node(Node("conv", Op.CONV2D, x, (4, 3, 4), Act.RELU, (3, 3), (2, 2), (1, 1, 1, 0), weight=w, bias=b))
    dw = g.add_tensor(Tensor.f32("dw/w", rng.normal(size=(2, 2, 4, 2))))
    v = g.add_node(Node("dw", Op.DEPTHWISE_CONV2D, v, (4, 3, 8), Act.RELU6, (2, 2), (1, 1), (1, 1, 0, 0), weight=dw))
    v = g.add_node(Node("avg", Op.AVG_POOL, v, (2, 2, 8), Act.NONE, (2, 2), (2, 2), (0, 0, 1, 1)))
    v = g.add_node(Node("max", Op.MAX_POOL, v, (2, 2, 8), Act.NONE, (2, 2), (1, 1), (1, 1, 0, 0)))
    v = g.add_node(Node("act", Op.ACTIVATION, v, (2, 2, 8), Act.RELU6))
    gap = g.add_node(Node("gap", Op.GLOBAL_AVG_POOL, v, (1, 1, 8)))
    v = g.add_node(Node("flat", Op.RESHAPE, v, (1, 1, 32)))
    hw = g.add_tensor(Tensor.f32("head/w", rng.normal(size=(32, 3))))
    v = g.add_node(Node("head", Op.DENSE, v, (1, 1, 3), weight=hw))
    g.tasks.append(Task("plain", x, v, 3))
    gw = g.add_tensor(Tensor.f32("gap/w", rng.normal(size=(8, 2))))
    gb = g.add_tensor(Tensor.f32("gap/b", rng.normal(size=2)))
    v2 = g.add_node(Node("gap_head", Op.DENSE, gap, (1, 1, 2), Act.NONE, weight=gw, bias=gb))
    g.tasks.append(Task("gap", x, v2, 2))
    return g


def tensorless_graph() -> MergedGraph:
    """The smallest kind of model: no tensors at all (TENSORS count 0, DATA empty)."""
    g = MergedGraph(metadata={"edgemerge.tool_version": "corpus", "edgemerge.original_bytes": 0,
                              "source.count": 0})
    x = g.add_input((2, 2, 3))
    v = g.add_node(Node("pool", Op.GLOBAL_AVG_POOL, x, (1, 1, 3)))
    g.tasks.append(Task("t", x, v, 3))
    return g


def merged_small_models() -> MergedGraph:
    """A real merge (alignment, k-means, shared codebooks) of two small synthetic source models."""
    from edgemerge.merging.merge import merge_models
    from synthetic_models import lenet_like, mobile_like
    return merge_models({"a": lenet_like(), "b": mobile_like()}, preset="light", seed=0, kmeans_inits=1,
                        n_jobs=1).graph


def clustered_depthwise_graph() -> MergedGraph:
    """A real merge whose depthwise layer is clustered tap by tap (op LUT_DEPTHWISE_CONV2D, FORMAT.md "Clustered
    depthwise"): the light preset with 8 single-tap codewords, the size threshold lifted for this small model."""
    import dataclasses

    from edgemerge.merging import merge
    from synthetic_models import mobile_like
    preset = dataclasses.replace(merge.PRESETS["light"], depthwise=(1, 8))
    saved_presets, saved_threshold = dict(merge.PRESETS), merge.DEPTHWISE_ENCODE_FROM_BYTES
    merge.PRESETS["corpus-dw"], merge.DEPTHWISE_ENCODE_FROM_BYTES = preset, 0
    try:
        graph = merge.merge_models({"b": mobile_like()}, preset="corpus-dw", seed=0, kmeans_inits=1, n_jobs=1).graph
    finally:
        merge.PRESETS.clear()
        merge.PRESETS.update(saved_presets)
        merge.DEPTHWISE_ENCODE_FROM_BYTES = saved_threshold
    assert any(node.op == Op.LUT_DEPTHWISE_CONV2D for node in graph.nodes)
    return graph


def int8_tables_graph() -> MergedGraph:
    """One LUT_CONV2D with C = 16 flagged for int8 tables (FORMAT.md "int8 tables"), stride 2, 'same' pads."""
    from edgemerge.emm.constants import NODE_FLAG_INT8_TABLES
    from graphs import lut_conv_graph
    g = lut_conv_graph(h=7, w=6, cin=5, cout=17, stride=(2, 2), pads=(1, 1, 1, 1), r=2, c=16, act=Act.RELU)
    g.nodes[0].flags = NODE_FLAG_INT8_TABLES
    return g


def residual_se_graph(seed: int = 5) -> MergedGraph:
    """Format v2: a residual block (ADD), a squeeze-and-excite gate (MUL by a (1, 1, C) vector), CONCAT, PAD
    and the activations of v2, in one small graph with branches."""
    rng = np.random.default_rng(seed)
    g = MergedGraph(metadata={"edgemerge.tool_version": "corpus", "edgemerge.original_bytes": 4096,
                              "source.count": 1})
    x = g.add_input((5, 4, 3))
    w = g.add_tensor(Tensor.f32("c1/w", rng.normal(size=(3, 3, 3, 3))))
    v = g.add_node(Node("c1", Op.CONV2D, x, (5, 4, 3), Act.SWISH, (3, 3), (1, 1), (1, 1, 1, 1), weight=w))
    res = g.add_node(Node("add", Op.ADD, v, (5, 4, 3), Act.RELU, extra_inputs=(x, v)))
    s = g.add_node(Node("se/gap", Op.GLOBAL_AVG_POOL, res, (1, 1, 3)))
    qw = g.add_tensor(Tensor.f32("se/squeeze", rng.normal(size=(3, 2))))
    s = g.add_node(Node("se/squeeze", Op.DENSE, s, (1, 1, 2), Act.RELU, weight=qw))
    sw = g.add_tensor(Tensor.f32("se/w", rng.normal(size=(2, 3))))
    s = g.add_node(Node("se/fc", Op.DENSE, s, (1, 1, 3), Act.HARD_SIGMOID, weight=sw))
    se = g.add_node(Node("se/mul", Op.MUL, s, (5, 4, 3), Act.HARD_SWISH, extra_inputs=(res,)))
    cat = g.add_node(Node("cat", Op.CONCAT, se, (5, 4, 6), Act.SIGMOID, extra_inputs=(x,)))
    v = g.add_node(Node("pad", Op.PAD, cat, (6, 6, 6), pads=(1, 0, 0, 2)))
    v = g.add_node(Node("gap", Op.GLOBAL_AVG_POOL, v, (1, 1, 6)))
    g.tasks.append(Task("v2", x, v, 6))
    return g


def v2_corruptions(data: bytes) -> dict[str, bytes]:
    """Hand-made corrupt v2 files from residual_se_graph's bytes (CRCs resealed, so the loader must find the
    graph problem). Values: 0 x, 1 c1, 2 add, 3 se/gap (1, 1, 3), 4 se/squeeze (1, 1, 2), 5 se/fc, 6 se/mul,
    7 cat, 8 pad, 9 gap; the extra-input list is [0, 1 (add), 2 (se/mul), 0 (cat)]."""
    import struct
    from corrupt import fix_crcs, section_span
    from edgemerge.emm import constants as F
    _, graph, _ = section_span(data, F.Section.GRAPH)
    n_inputs, n_nodes = struct.unpack_from("<II", data, graph)
    nodes = graph + F.GRAPH_HEADER_BYTES + F.INPUT_RECORD_BYTES * n_inputs
    extra = nodes + F.NODE_RECORD_BYTES * n_nodes

    def patch(offset: int, value: int) -> bytes:
        buf = bytearray(data)
        struct.pack_into("<I", buf, offset, value)
        return fix_crcs(buf)
    return {
        "corrupt-v2-cycle": patch(extra, 2),                        # add reads its own value
        "corrupt-v2-forward-input": patch(extra + 8, 9),            # se/mul reads a later value
        "corrupt-v2-broadcast-mismatch": patch(extra + 8, 4),       # (1, 1, 3) · (1, 1, 2)
        "corrupt-v2-concat-spatial": patch(extra + 12, 3),          # cat joins (5, 4, 3) with (1, 1, 3)
        "corrupt-v2-too-many-inputs": patch(nodes + F.NODE_RECORD_BYTES + 80, 65),
        "corrupt-v2-extra-count": patch(graph + 8, 5),
    }


def corpus() -> dict[str, bytes]:
    from corrupt import CORRUPTIONS
    from graphs import lut_conv_graph, two_task_graph

    valid = {
        "valid-lut-conv": emm.to_bytes(lut_conv_graph()),
        "valid-lut-conv-stride2-c16": emm.to_bytes(lut_conv_graph(h=6, w=5, cin=3, cout=2, stride=(2, 2),
                                                                  pads=(0, 1, 1, 0), r=3, c=16, act=Act.RELU6)),
        "valid-lut-int8": emm.to_bytes(int8_tables_graph()),
        "valid-two-task": emm.to_bytes(two_task_graph()),
        "valid-every-plain-op": emm.to_bytes(every_plain_op_graph()),
        "valid-tensorless": emm.to_bytes(tensorless_graph()),
        "valid-merged-lenet-mobile": emm.to_bytes(merged_small_models()),
        "valid-v2-residual-se": emm.to_bytes(residual_se_graph()),
        "valid-clustered-depthwise": emm.to_bytes(clustered_depthwise_graph()),
    }
    out = dict(valid)
    out.update(v2_corruptions(valid["valid-v2-residual-se"]))
    base = valid["valid-two-task"]
    for name, (mutate, _) in sorted(CORRUPTIONS.items()):
        out[f"corrupt-{name}"] = mutate(base)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "corpus")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in corpus().items():
        (args.out / f"{name}.emm").write_bytes(data)
        print(f"{args.out / name}.emm: {len(data)} bytes")


if __name__ == "__main__":
    main()
