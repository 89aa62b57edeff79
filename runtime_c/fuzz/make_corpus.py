"""Writes the seed corpus of the fuzzers (runtime_c/fuzz/corpus/): valid `.emm` files from the Python writer
and the hand-made corrupt cases of tests/corrupt.py. Deterministic: running it again rewrites the same bytes,
so `git status` shows a change only when the writer or the test graphs change.

    python runtime_c/fuzz/make_corpus.py [--out runtime_c/fuzz/corpus]

Every file is small (a few KB) so that the fuzzers mutate it quickly; together they reach every op, the
shared-trunk layout, several inputs and every corrupt-file class.
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


def int8_tables_graph() -> MergedGraph:
    """One LUT_CONV2D with C = 16 flagged for int8 tables (FORMAT.md "int8 tables"), stride 2, 'same' pads."""
    from edgemerge.emm.constants import NODE_FLAG_INT8_TABLES
    from graphs import lut_conv_graph
    g = lut_conv_graph(h=7, w=6, cin=5, cout=17, stride=(2, 2), pads=(1, 1, 1, 1), r=2, c=16, act=Act.RELU)
    g.nodes[0].flags = NODE_FLAG_INT8_TABLES
    return g


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
    }
    out = dict(valid)
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
