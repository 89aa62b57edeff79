"""Small hand-built merged graphs (no training) for format, runtime and corruption tests."""
from __future__ import annotations

import numpy as np

from edgemerge.emm.constants import NONE, Act, Op
from edgemerge.emm.graph import MergedGraph, Node, Task, Tensor


def conv_out(size: int, kernel: int, stride: int, pad_a: int, pad_b: int) -> int:
    return (size + pad_a + pad_b - kernel) // stride + 1


def lut_conv_graph(h=9, w=7, cin=5, cout=6, k=(3, 3), stride=(1, 1), pads=(1, 1, 1, 1), r=2, c=5,
                   act=Act.NONE, seed=0) -> MergedGraph:
    """One LUT_CONV2D node on one input; r need not divide cin, C need not be a power of two."""
    rng = np.random.default_rng(seed)
    g = MergedGraph(metadata={"edgemerge.tool_version": "test", "edgemerge.original_bytes": 1000,
                              "source.count": 1})
    x = g.add_input((h, w, cin))
    s = -(-cin // r)
    cb = g.add_tensor(Tensor.f32("codebook/conv", rng.normal(size=(s, c, r))))
    ix = g.add_tensor(Tensor.index("t/conv/index", rng.integers(0, c, size=(k[0], k[1], s, cout)), c))
    b = g.add_tensor(Tensor.f32("t/conv/bias", rng.normal(size=cout)))
    oh = conv_out(h, k[0], stride[0], pads[0], pads[2])
    ow = conv_out(w, k[1], stride[1], pads[1], pads[3])
    v = g.add_node(Node("t/conv", Op.LUT_CONV2D, x, (oh, ow, cout), act, k, stride, pads, r, c, cb, ix, b))
    g.tasks.append(Task("t", 0, v, oh * ow * cout))
    return g


def two_task_graph(seed=0) -> MergedGraph:
    """Two tasks with different inputs sharing one conv codebook (the NeuralMerger layout): LUT conv ->
    max pool -> flatten -> LUT dense (shared codebook) -> dense head, with different depths per task."""
    rng = np.random.default_rng(seed)
    g = MergedGraph(metadata={"edgemerge.tool_version": "test", "edgemerge.original_bytes": 123456,
                              "source.count": 2, "source.0.task": "a", "source.1.task": "b"})
    r, c = 2, 6
    cb_conv = g.add_tensor(Tensor.f32("codebook/conv1", rng.normal(size=(2, c, r))))   # depth up to 4
    cb_fc = g.add_tensor(Tensor.f32("codebook/fc1", rng.normal(size=(40, 8, 4)) * 0.3))
    specs = {"a": (8, 3, 4, 5), "b": (10, 4, 5, 3)}
    # every input first: node value ids start after the last input
    inputs = {task: g.add_input((hw, hw, cin)) for task, (hw, cin, _, _) in specs.items()}
    for task, (hw, cin, cout, classes) in specs.items():
        x = inputs[task]
        s = -(-cin // r)
        ix = g.add_tensor(Tensor.index(f"{task}/conv1/index", rng.integers(0, c, size=(3, 3, s, cout)), c))
        b = g.add_tensor(Tensor.f32(f"{task}/conv1/bias", rng.normal(size=cout) * 0.1))
        v = g.add_node(Node(f"{task}/conv1", Op.LUT_CONV2D, x, (hw, hw, cout), Act.RELU, (3, 3), (1, 1),
                            (1, 1, 1, 1), r, c, cb_conv, ix, b, (f"{task}:conv1",)))
        v = g.add_node(Node(f"{task}/pool", Op.MAX_POOL, v, (hw // 2, hw // 2, cout), kernel=(2, 2), stride=(2, 2)))
        flat = (hw // 2) ** 2 * cout
        v = g.add_node(Node(f"{task}/flatten", Op.RESHAPE, v, (1, 1, flat)))
        s_fc = -(-flat // 4)
        ix = g.add_tensor(Tensor.index(f"{task}/fc1/index", rng.integers(0, 8, size=(s_fc, 7)), 8))
        b = g.add_tensor(Tensor.f32(f"{task}/fc1/bias", rng.normal(size=7) * 0.1))
        v = g.add_node(Node(f"{task}/fc1", Op.LUT_DENSE, v, (1, 1, 7), Act.RELU6, seg_len=4, codewords=8,
                            weight=cb_fc, index=ix, bias=b))
        hw_t = g.add_tensor(Tensor.f32(f"{task}/head/weights", rng.normal(size=(7, classes))))
        hb = g.add_tensor(Tensor.f32(f"{task}/head/bias", rng.normal(size=classes)))
        v = g.add_node(Node(f"{task}/head", Op.DENSE, v, (1, 1, classes), weight=hw_t, bias=hb))
        g.tasks.append(Task(task, x, v, classes))
    return g


def numpy_conv2d(x: np.ndarray, w: np.ndarray, stride, pads) -> np.ndarray:
    """Plain NHWC convolution of one sample (independent of the runtime) for parity checks."""
    top, left, bottom, right = pads
    xp = np.pad(x, ((top, bottom), (left, right), (0, 0)))
    kh, kw, _, cout = w.shape
    oh = (xp.shape[0] - kh) // stride[0] + 1
    ow = (xp.shape[1] - kw) // stride[1] + 1
    out = np.zeros((oh, ow, cout), dtype=np.float64)
    for ky in range(kh):
        for kx in range(kw):
            patch = xp[ky:ky + oh * stride[0]:stride[0], kx:kx + ow * stride[1]:stride[1], :]
            out += patch @ w[ky, kx]
    return out


__all__ = ["lut_conv_graph", "two_task_graph", "numpy_conv2d", "NONE"]
