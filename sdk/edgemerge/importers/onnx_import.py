"""ONNX importer (PyTorch models exported with `torch.onnx.export`): an `.onnx` file in, a `SourceModel` out.

Read with the `onnx` package (protobuf parsing, `onnx.checker`, `onnx.shape_inference`); nothing here parses
protobuf by hand. Supported: default-domain opsets 11-21 and the ops in `_CONVERTERS` (Conv with groups 1 or
depthwise, BatchNormalization, Relu, Clip as ReLU/ReLU6, HardSigmoid with PyTorch's alpha 1/6 and beta 0.5,
HardSwish, Sigmoid, Mul, Add, Concat on channels, MaxPool, AveragePool, GlobalAveragePool, Flatten, Reshape
that flattens, Gemm, MatMul (+ Add as its bias), Identity, Dropout, Pad with zeros, Constant, a final Softmax).

Layout: ONNX models from PyTorch are NCHW; the SourceModel (and the runtime) is NHWC. Weights are transposed
once here (conv [Cout, Cin, KH, KW] -> [KH, KW, Cin, Cout]; depthwise [C*M, 1, KH, KW] -> [KH, KW, C, M]);
a dense layer reading a flattened C x H x W value gets its rows reordered from ONNX's CHW order to the HWC order
the runtime flattens in. The model's declared input layout is NCHW (`INPUT_LAYOUT`); its data converts with
`nchw_to_nhwc`/`to_nhwc`/`onnx_task_samples` (eval --data, merge --calib, bench --data: NHWC always
accepted, NCHW when the shape is unambiguous).

Folding: BatchNormalization after a conv/dense layer read by nothing else is folded into its weights (a lone
one becomes a 1x1 depthwise layer); an activation after a conv/dense/add read by nothing else is fused into
it; Add of a constant vector after a conv/dense is its bias. Layer names are ONNX node names; `match_output`
is the ONNX tensor equal to the layer's output, which training/targets exposes as an extra ONNX Runtime output.

Errors: every unsupported construct is one ModelFormatError naming the node, its op type and the opset.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgemerge.emm.constants import Act
from edgemerge.errors import ModelFormatError
from edgemerge.importers.source_model import MODEL_INPUT, SourceLayer, SourceModel, same_padding
from edgemerge.text import printable

MIN_OPSET, MAX_OPSET = 11, 21
INPUT_LAYOUT = "NCHW"
_FUSIBLE_INTO = ("conv", "depthwise", "dense", "add")


@dataclass
class _Value:
    """One ONNX tensor as the SourceModel sees it: the layer producing it (MODEL_INPUT for the input), its NHWC
    shape (a flat vector is (1, 1, n)) and, for a vector flattened from C x H x W with H*W > 1, that (C, H, W):
    its elements are in ONNX's CHW order, not the runtime's HWC order."""
    layer: str
    shape: tuple[int, int, int]
    chw: tuple[int, int, int] | None = None
    rank: int = 4


def _fail(path: Path, msg: str) -> ModelFormatError:
    return ModelFormatError(f"model file {printable(path)}: {msg}")


def nchw_to_nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(np.asarray(x), (0, 2, 3, 1)))


def to_nhwc(x: np.ndarray, hwc: tuple[int, int, int], where: str) -> np.ndarray:
    """A batch for an ONNX model's task, in the runtime's NHWC layout: NHWC [N, h, w, c] is taken as is, NCHW
    [N, c, h, w] (the ONNX model's own layout) is transposed; a shape that reads both ways (h == w == c) or
    neither is refused naming the shapes."""
    x = np.asarray(x)
    h, w, c = (int(v) for v in hwc)
    if x.ndim != 4:
        return x                                 # the caller's shape check names the problem
    sample = tuple(int(v) for v in x.shape[1:])
    if sample == (h, w, c) and (c, h, w) == (h, w, c):
        if c == 1:
            return x                             # 1x1x1: both layouts are the same array
        raise ModelFormatError(f"{where}: samples of shape {sample} could be NHWC or NCHW; give NHWC samples "
                               f"(N, {h}, {w}, {c}) from a model whose height, width and channels differ, or "
                               "transpose them yourself")
    if sample == (h, w, c):
        return x
    if sample == (c, h, w):
        return nchw_to_nhwc(x)
    return x


def onnx_task_samples(x: np.ndarray, hwc: tuple[int, int, int], where: str) -> np.ndarray:
    """The samples of a task whose original is an ONNX model (eval --data, merge --calib, bench --data), in the
    runtime's NHWC layout: `to_nhwc`, and a shape that is neither layout refused naming both."""
    from edgemerge.inputs import DataError

    h, w, c = (int(v) for v in hwc)
    nhwc = to_nhwc(x, (h, w, c), where)
    if nhwc.ndim != 4 or tuple(nhwc.shape[1:]) != (h, w, c):
        raise DataError(f"{where}: samples have shape {tuple(np.shape(x)[1:])}, the model expects {(h, w, c)} (NHWC) "
                        f"or {(c, h, w)} (NCHW, the ONNX model's layout)")
    return nhwc


class _Builder:
    def __init__(self, path: Path, model, opset: int):
        import onnx
        from onnx import numpy_helper

        self.onnx, self.numpy_helper = onnx, numpy_helper
        self.path, self.model, self.graph, self.opset = path, model, model.graph, opset
        self.consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in self.graph.initializer}
        self.values: dict[str, _Value] = {}
        self.layers: list[SourceLayer] = []
        self.by_name: dict[str, SourceLayer] = {}
        self.alias: dict[str, str] = {}
        self.head_activation = "linear"
        self.param_count = sum(int(a.size) for a in self.consts.values() if np.issubdtype(a.dtype, np.floating))
        # readers of each tensor (Identity/Dropout resolved; graph outputs count as readers)
        for node in self.graph.node:
            if node.op_type in ("Identity", "Dropout") and node.input:
                self.alias[node.output[0]] = node.input[0]
        self.readers: dict[str, int] = {}
        for node in self.graph.node:
            if node.op_type in ("Identity", "Dropout"):
                continue
            for name in node.input:
                if name:
                    self.readers[self._resolve(name)] = self.readers.get(self._resolve(name), 0) + 1
        for out in self.graph.output:
            self.readers[self._resolve(out.name)] = self.readers.get(self._resolve(out.name), 0) + 1

    def _resolve(self, name: str) -> str:
        while name in self.alias:
            name = self.alias[name]
        return name

    def err(self, node, msg: str) -> ModelFormatError:
        label = node.name or (node.output[0] if node.output else "?")
        return _fail(self.path, f"node {printable(label)} ({node.op_type}, opset {self.opset}): {msg}")

    # ---- helpers ---------------------------------------------------------------------------------
    def attrs(self, node) -> dict:
        out = {}
        for a in node.attribute:
            v = self.onnx.helper.get_attribute_value(a)
            if isinstance(v, bytes):
                v = v.decode("utf-8", "replace")
            elif isinstance(v, self.onnx.TensorProto):
                v = self.numpy_helper.to_array(v)
            out[a.name] = v
        return out

    def const(self, node, name: str, what: str) -> np.ndarray:
        name = self._resolve(name)
        if name not in self.consts:
            raise self.err(node, f"{what} must be a constant (initializer or Constant node)")
        return self.consts[name]

    def is_const(self, name: str) -> bool:
        return self._resolve(name) in self.consts

    def value(self, node, name: str) -> _Value:
        name = self._resolve(name)
        if name not in self.values:
            raise self.err(node, f"input {printable(name)} is not a tensor computed from the model input")
        return self.values[name]

    def add_layer(self, node, layer: SourceLayer, reads: list[str], out_shape, chw=None, rank=4) -> None:
        base = node.name or node.output[0]
        name, k = base, 1
        while name in self.by_name or name == MODEL_INPUT:
            k += 1
            name = f"{base}_{k}"
        layer.name = name
        layer.inputs = tuple(reads)
        layer.out_shape = tuple(int(v) for v in out_shape)
        layer.match_output = node.output[0]
        self.layers.append(layer)
        self.by_name[name] = layer
        self.values[node.output[0]] = _Value(name, layer.out_shape, chw, rank)

    def sole_producer(self, name: str, kinds: tuple[str, ...]) -> SourceLayer | None:
        """The layer computing tensor `name` if it is of `kinds`, has no activation yet and nothing else
        reads the tensor (so it can absorb the next op)."""
        name = self._resolve(name)
        v = self.values.get(name)
        if v is None or v.layer == MODEL_INPUT or self.readers.get(name, 0) != 1:
            return None
        layer = self.by_name[v.layer]
        if layer.kind not in kinds or layer.activation != Act.NONE or layer.match_output != name:
            return None
        return layer

    def absorb(self, node, layer: SourceLayer) -> None:
        """`node`'s output is now `layer`'s output."""
        v = self.values[layer.match_output]
        layer.fused = layer.fused + (node.name or node.output[0],)
        layer.match_output = node.output[0]
        self.values[node.output[0]] = v

    def spatial(self, node, v: _Value) -> None:
        if v.rank != 4:
            raise self.err(node, f"expects an N x C x H x W input, got a rank-{v.rank} tensor")

    def window(self, node, a: dict, in_hw: tuple[int, int], kernel: tuple[int, int], stride):
        pads = tuple(int(p) for p in a.get("pads", (0, 0, 0, 0)))
        auto = a.get("auto_pad", "NOTSET")
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            ph = same_padding(in_hw[0], kernel[0], stride[0])
            pw = same_padding(in_hw[1], kernel[1], stride[1])
            if auto == "SAME_LOWER":
                ph, pw = ph[::-1], pw[::-1]
            pads = (ph[0], pw[0], ph[1], pw[1])
        elif auto == "VALID":
            pads = (0, 0, 0, 0)
        elif auto != "NOTSET":
            raise self.err(node, f"auto_pad {auto!r} is not supported")
        if len(pads) != 4 or min(pads) < 0:
            raise self.err(node, f"pads {list(pads)}: expected 4 non-negative values (2-D)")
        if any(int(d) != 1 for d in a.get("dilations", (1, 1))):
            raise self.err(node, f"dilations {list(a['dilations'])} are not supported (only 1)")
        out = tuple((in_hw[i] + pads[i] + pads[i + 2] - kernel[i]) // stride[i] + 1 for i in range(2))
        if a.get("ceil_mode", 0):
            ceil = tuple(-(-(in_hw[i] + pads[i] + pads[i + 2] - kernel[i]) // stride[i]) + 1 for i in range(2))
            if ceil != out:
                raise self.err(node, "ceil_mode=1 changes the output size here; export with ceil_mode=False")
        if min(out) < 1:
            raise self.err(node, f"the window does not fit the {in_hw[0]}x{in_hw[1]} input")
        return pads, out

    # ---- ops ---------------------------------------------------------------------------------------
    def conv(self, node):
        a = self.attrs(node)
        x = self.value(node, node.input[0])
        self.spatial(node, x)
        w = self.const(node, node.input[1], "the weight").astype(np.float32)
        bias = self.const(node, node.input[2], "the bias").astype(np.float32) if len(node.input) > 2 and node.input[2] \
            else np.zeros(w.shape[0], np.float32)
        if w.ndim != 4:
            raise self.err(node, f"weight of rank {w.ndim}: only 2-D convolutions are supported")
        h, wd, c = x.shape
        cout, cin_g, kh, kw = (int(v) for v in w.shape)
        group = int(a.get("group", 1))
        stride = tuple(int(s) for s in a.get("strides", (1, 1)))
        pads, out = self.window(node, a, (h, wd), (kh, kw), stride)
        if group == 1:
            if cin_g != c:
                raise self.err(node, f"weight reads {cin_g} channels, the input has {c}")
            kind, weights = "conv", np.transpose(w, (2, 3, 1, 0))
        elif group == c and cin_g == 1 and cout % c == 0:
            m = cout // c
            kind, weights = "depthwise", np.transpose(w.reshape(c, m, kh, kw), (2, 3, 0, 1))
        else:
            raise self.err(node, f"group={group} with {c} input channels: only group 1 and depthwise "
                                 "(group = input channels) are supported")
        layer = SourceLayer(name="", kind=kind, in_shape=x.shape, out_shape=(0, 0, 0),
                            weights=np.ascontiguousarray(weights, np.float32), bias=bias,
                            kernel=(kh, kw), stride=stride, pads=pads)
        self.add_layer(node, layer, [x.layer], (out[0], out[1], cout))

    def batchnorm(self, node):
        x = self.value(node, node.input[0])
        scale, shift, mean, var = (self.const(node, n, "a BatchNormalization statistic").astype(np.float64)
                                   for n in node.input[1:5])
        eps = float(self.attrs(node).get("epsilon", 1e-5))
        mul = scale / np.sqrt(var + eps)
        add = shift - mean * mul
        if x.chw is not None:
            raise self.err(node, "BatchNormalization of a flattened C x H x W value is not supported")
        target = self.sole_producer(node.input[0], ("conv", "depthwise", "dense"))
        if target is not None:
            w = target.weights.astype(np.float64)
            target.weights = (w * mul.reshape((1,) * (w.ndim - 1) + (-1,)) if target.kind != "depthwise"
                              else w * mul.reshape(w.shape[2], w.shape[3])).astype(np.float32)
            target.bias = (target.bias.astype(np.float64) * mul + add).astype(np.float32)
            self.absorb(node, target)
            return
        c = x.shape[2]
        layer = SourceLayer(name="", kind="depthwise", in_shape=x.shape, out_shape=x.shape,
                            weights=mul.reshape(1, 1, c, 1).astype(np.float32), bias=add.astype(np.float32))
        self.add_layer(node, layer, [x.layer], x.shape, rank=x.rank)

    def activation(self, node, act: Act):
        x = self.value(node, node.input[0])
        target = self.sole_producer(node.input[0], _FUSIBLE_INTO)
        if target is not None:
            target.activation = act
            self.absorb(node, target)
            return
        layer = SourceLayer(name="", kind="activation", in_shape=x.shape, out_shape=x.shape, activation=act)
        self.add_layer(node, layer, [x.layer], x.shape, chw=x.chw, rank=x.rank)

    def clip(self, node):
        a = self.attrs(node)
        lo, hi = a.get("min"), a.get("max")
        if len(node.input) > 1 and node.input[1]:
            lo = float(self.const(node, node.input[1], "min"))
        if len(node.input) > 2 and node.input[2]:
            hi = float(self.const(node, node.input[2], "max"))
        if lo == 0 and hi == 6:
            return self.activation(node, Act.RELU6)
        if lo == 0 and hi is None:
            return self.activation(node, Act.RELU)
        raise self.err(node, f"Clip(min={lo}, max={hi}): only ReLU (min 0) and ReLU6 (min 0, max 6) are supported")

    def hard_sigmoid(self, node):
        a = self.attrs(node)
        alpha, beta = float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
        if abs(alpha - 1 / 6) > 1e-6 or abs(beta - 0.5) > 1e-6:
            raise self.err(node, f"alpha={alpha:g}, beta={beta:g}: only PyTorch's hard-sigmoid (alpha 1/6, "
                                 "beta 0.5) is supported")
        self.activation(node, Act.HARD_SIGMOID)

    def add(self, node):
        consts = [self.is_const(n) for n in node.input]
        if all(consts):
            raise self.err(node, "adds two constants (fold them before export)")
        if any(consts):
            k = consts.index(True)
            other = node.input[1 - k]
            x = self.value(node, other)
            b = np.asarray(self.const(node, node.input[k], "the addend"), np.float64)
            target = self.sole_producer(other, ("conv", "depthwise", "dense"))
            n = x.shape[2]
            vec = b.reshape(-1) if b.size in (1, n) and b.size == np.prod(b.shape) else None
            if target is not None and x.chw is None and vec is not None and \
                    (b.ndim <= 1 or (x.rank == 4 and b.shape[-2:] == (1, 1) and b.shape[-3] in (1, n))):
                target.bias = (target.bias.astype(np.float64) + np.broadcast_to(vec, (n,))).astype(np.float32)
                self.absorb(node, target)
                return
            raise self.err(node, "adding a constant is supported only as the bias of the Conv/Gemm/MatMul before it")
        a, b = (self.value(node, n) for n in node.input)
        if a.shape != b.shape or a.chw != b.chw:
            raise self.err(node, f"adds shapes {a.shape} and {b.shape}: only equal shapes are supported")
        layer = SourceLayer(name="", kind="add", in_shape=a.shape, out_shape=a.shape)
        self.add_layer(node, layer, [a.layer, b.layer], a.shape, chw=a.chw, rank=a.rank)

    def mul(self, node):
        if any(self.is_const(n) for n in node.input):
            raise self.err(node, "multiplying by a constant is not supported")
        a, b = (self.value(node, n) for n in node.input)
        if a.shape[:2] == (1, 1) and b.shape[:2] != (1, 1):
            a, b = b, a                          # the (H, W, C) value first, the (1, 1, C) gate second
        ok = a.shape == b.shape or (b.shape[:2] == (1, 1) and a.shape[2] == b.shape[2] and b.rank == 4)
        if not ok or a.chw is not None or b.chw is not None:
            raise self.err(node, f"multiplies shapes {a.shape} and {b.shape}: only equal shapes or a per-channel "
                                 "N x C x 1 x 1 gate are supported")
        layer = SourceLayer(name="", kind="mul", in_shape=a.shape, out_shape=a.shape)
        self.add_layer(node, layer, [a.layer, b.layer], a.shape, rank=a.rank)

    def concat(self, node):
        xs = [self.value(node, n) for n in node.input]
        rank = xs[0].rank
        axis = int(self.attrs(node).get("axis", 1))
        if axis < 0:
            axis += rank
        if axis != 1 or any(x.rank != rank for x in xs) or any(x.chw is not None for x in xs):
            raise self.err(node, f"axis {axis}: only concatenation along channels (axis 1) is supported")
        if len({x.shape[:2] for x in xs}) != 1:
            raise self.err(node, "inputs differ in height or width")
        shape = (xs[0].shape[0], xs[0].shape[1], sum(x.shape[2] for x in xs))
        layer = SourceLayer(name="", kind="concat", in_shape=xs[0].shape, out_shape=shape)
        self.add_layer(node, layer, [x.layer for x in xs], shape, rank=rank)

    def pool(self, node, kind: str):
        a = self.attrs(node)
        x = self.value(node, node.input[0])
        self.spatial(node, x)
        if len(node.output) > 1 and node.output[1]:
            raise self.err(node, "the Indices output is not supported")
        if int(a.get("storage_order", 0)):
            raise self.err(node, "storage_order=1 is not supported")
        kernel = tuple(int(k) for k in a["kernel_shape"])
        stride = tuple(int(s) for s in a.get("strides", (1, 1)))
        pads, out = self.window(node, a, x.shape[:2], kernel, stride)
        reads = [x.layer]
        in_shape = x.shape
        if kind == "avg_pool" and int(a.get("count_include_pad", 0)) and any(pads):
            # padded zeros count in the mean: an explicit zero PAD, then a pool without padding
            padded = (x.shape[0] + pads[0] + pads[2], x.shape[1] + pads[1] + pads[3], x.shape[2])
            pad = SourceLayer(name="", kind="pad", in_shape=x.shape, out_shape=padded, pads=pads)
            pad_node = type("N", (), {"name": (node.name or node.output[0]) + "_pad",
                                      "output": [node.output[0] + "__pad"], "op_type": "Pad"})
            self.add_layer(pad_node, pad, reads, padded)
            pad.match_output = ""
            reads, in_shape, pads = [pad.name], padded, (0, 0, 0, 0)
        layer = SourceLayer(name="", kind=kind, in_shape=in_shape, out_shape=(0, 0, 0), kernel=kernel,
                            stride=stride, pads=pads)
        self.add_layer(node, layer, reads, (out[0], out[1], x.shape[2]))

    def global_pool(self, node):
        x = self.value(node, node.input[0])
        self.spatial(node, x)
        layer = SourceLayer(name="", kind="global_avg_pool", in_shape=x.shape, out_shape=(1, 1, x.shape[2]))
        self.add_layer(node, layer, [x.layer], (1, 1, x.shape[2]))

    def flatten_to(self, node, x: _Value):
        if x.rank == 2:
            self.values[node.output[0]] = x      # already flat
            return
        h, w, c = x.shape
        chw = (c, h, w) if h * w > 1 and c > 1 else None
        layer = SourceLayer(name="", kind="flatten", in_shape=x.shape, out_shape=(1, 1, h * w * c))
        self.add_layer(node, layer, [x.layer], (1, 1, h * w * c), chw=chw, rank=2)

    def flatten(self, node):
        x = self.value(node, node.input[0])
        if int(self.attrs(node).get("axis", 1)) != 1:
            raise self.err(node, "only axis=1 (keep the batch, flatten the rest) is supported")
        self.flatten_to(node, x)

    def reshape(self, node):
        x = self.value(node, node.input[0])
        shape = [int(v) for v in self.const(node, node.input[1], "the target shape").reshape(-1)]
        total = int(np.prod(x.shape))
        if len(shape) == 2 and shape[0] in (0, -1, 1) and shape[1] in (-1, total) and shape != [-1, -1]:
            return self.flatten_to(node, x)
        if x.rank == 2 and len(shape) == 4 and shape[2:] == [1, 1] and shape[1] in (-1, total):
            if x.chw is None:                    # (N, n) -> (N, n, 1, 1): the same values
                self.values[node.output[0]] = _Value(x.layer, x.shape, None, 4)
                return
        self._refuse_reshape(node, shape)

    def _refuse_reshape(self, node, shape):
        raise self.err(node, f"reshape to {shape}: only flattening to (N, -1) is supported")

    def gemm(self, node):
        a = self.attrs(node)
        x = self.value(node, node.input[0])
        if int(a.get("transA", 0)):
            raise self.err(node, "transA=1 is not supported")
        w = self.const(node, node.input[1], "B (the weight)").astype(np.float64) * float(a.get("alpha", 1.0))
        if int(a.get("transB", 0)):
            w = w.T
        out = int(w.shape[1])
        bias = np.zeros(out)
        if len(node.input) > 2 and node.input[2]:
            bias = np.broadcast_to(self.const(node, node.input[2], "C (the bias)").astype(np.float64).reshape(-1),
                                   (out,)) * float(a.get("beta", 1.0))
        self._dense(node, x, w, bias)

    def matmul(self, node):
        x = self.value(node, node.input[0])
        w = self.const(node, node.input[1], "the second operand (the weight)").astype(np.float64)
        if w.ndim != 2:
            raise self.err(node, f"weight of rank {w.ndim}: only a 2-D weight is supported")
        self._dense(node, x, w, np.zeros(w.shape[1]))

    def _dense(self, node, x: _Value, w: np.ndarray, bias: np.ndarray):
        if x.rank != 2 and x.shape[:2] != (1, 1):
            raise self.err(node, f"reads a {x.shape} value; flatten it first")
        n = int(np.prod(x.shape))
        if w.shape[0] != n:
            raise self.err(node, f"weight has {w.shape[0]} rows, the input has {n} values")
        if x.chw is not None:                    # rows in ONNX's CHW order -> the runtime's HWC order
            c, h, wd = x.chw
            w = w.reshape(c, h, wd, -1).transpose(1, 2, 0, 3).reshape(n, -1)
        out = int(w.shape[1])
        layer = SourceLayer(name="", kind="dense", in_shape=x.shape, out_shape=(1, 1, out),
                            weights=np.ascontiguousarray(w, np.float32), bias=np.asarray(bias, np.float32))
        self.add_layer(node, layer, [x.layer], (1, 1, out), rank=2)

    def pad(self, node):
        a = self.attrs(node)
        x = self.value(node, node.input[0])
        self.spatial(node, x)
        mode = a.get("mode", "constant")
        pads = a.get("pads") if len(node.input) < 2 or not node.input[1] else \
            self.const(node, node.input[1], "pads")
        pads = [int(p) for p in np.asarray(pads).reshape(-1)]
        value = 0.0
        if len(node.input) > 2 and node.input[2]:
            value = float(self.const(node, node.input[2], "the constant value").reshape(-1)[0])
        value = float(a.get("value", value))
        if len(node.input) > 3 and node.input[3]:
            raise self.err(node, "the axes input is not supported")
        if mode != "constant" or value != 0.0:
            raise self.err(node, f"mode {mode!r} value {value:g}: only constant zero padding is supported")
        if len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)) or min(pads) < 0:
            raise self.err(node, f"pads {pads}: only non-negative padding of height and width is supported")
        t, l, b, r = pads[2], pads[3], pads[6], pads[7]
        shape = (x.shape[0] + t + b, x.shape[1] + l + r, x.shape[2])
        layer = SourceLayer(name="", kind="pad", in_shape=x.shape, out_shape=shape, pads=(t, l, b, r))
        self.add_layer(node, layer, [x.layer], shape)

    def constant(self, node):
        a = self.attrs(node)
        for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
            if key in a:
                self.consts[node.output[0]] = np.asarray(a[key])
                return
        raise self.err(node, f"constant attribute {', '.join(a) or '(none)'} is not supported")

    def softmax(self, node):
        x = self.value(node, node.input[0])
        out = self.graph.output[0].name
        if self._resolve(out) != node.output[0] or x.rank != 2:
            raise self.err(node, "Softmax is supported only as the model's last op, on logits")
        self.head_activation = "softmax"
        self.values[node.output[0]] = x

    # ---- the walk ----------------------------------------------------------------------------------
    def run(self) -> None:
        table: dict[str, Callable] = {
            "Conv": self.conv, "BatchNormalization": self.batchnorm,
            "Relu": lambda n: self.activation(n, Act.RELU), "Sigmoid": lambda n: self.activation(n, Act.SIGMOID),
            "HardSwish": lambda n: self.activation(n, Act.HARD_SWISH), "HardSigmoid": self.hard_sigmoid,
            "Clip": self.clip, "Add": self.add, "Mul": self.mul, "Concat": self.concat,
            "MaxPool": lambda n: self.pool(n, "max_pool"), "AveragePool": lambda n: self.pool(n, "avg_pool"),
            "GlobalAveragePool": self.global_pool, "Flatten": self.flatten, "Reshape": self.reshape,
            "Gemm": self.gemm, "MatMul": self.matmul, "Pad": self.pad, "Constant": self.constant,
            "Softmax": self.softmax,
        }
        for node in self.graph.node:
            if node.domain not in ("", "ai.onnx"):
                raise self.err(node, f"op domain {node.domain!r} is not supported")
            if node.op_type in ("Identity", "Dropout"):
                if node.op_type == "Dropout" and len(node.output) > 1 and node.output[1] and \
                        self.readers.get(node.output[1]):
                    raise self.err(node, "the mask output is read; only inference Dropout is supported")
                continue
            fn = table.get(node.op_type)
            if fn is None:
                raise self.err(node, "op type not supported by edgemerge's ONNX importer (supported: "
                                     f"{', '.join(sorted(table))}, Identity, Dropout)")
            fn(node)


def _dim(d) -> int | str | None:
    if d.HasField("dim_value"):
        return int(d.dim_value)
    return d.dim_param or None


def load_onnx_model(path: Path) -> SourceModel:
    from edgemerge.extras import require

    require("onnx", "reading ONNX models")
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError, UnicodeDecodeError) as e:
        raise _fail(path, f"not a readable ONNX model (truncated or corrupt: {e})") from None
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise _fail(path, "weights in external data files are not supported; export with the weights inside")
    opset = next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise _fail(path, f"opset {opset} is not supported (edgemerge reads opsets {MIN_OPSET}-{MAX_OPSET}; "
                          f"export with opset_version between them)")
    try:
        onnx.checker.check_model(model)
    except Exception as e:   # onnx.checker.ValidationError and protobuf errors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise _fail(path, f"not a valid ONNX model ({first})") from None
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise _fail(path, f"has {len(inputs)} inputs and {len(graph.output)} outputs; expected one of each")
    x = inputs[0]
    tt = x.type.tensor_type
    if tt.elem_type != onnx.TensorProto.FLOAT:
        raise _fail(path, f"input {printable(x.name)} is not float32")
    dims = [_dim(d) for d in tt.shape.dim]
    if len(dims) != 4:
        raise _fail(path, f"input {printable(x.name)} has shape {dims}; expected N x C x H x W")
    for axis, label in zip(dims[1:], ("channel count", "height", "width")):
        if not isinstance(axis, int) or axis < 1:
            raise _fail(path, f"input {printable(x.name)} has a dynamic {label}; export with a fixed size "
                              "(only the batch dimension may be dynamic)")
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise _fail(path, f"shape inference failed ({first})") from None
    c, h, w = dims[1:]
    builder = _Builder(path, model, opset)
    builder.values[x.name] = _Value(MODEL_INPUT, (h, w, c))
    builder.run()
    out = builder._resolve(graph.output[0].name)
    if out not in builder.values or builder.values[out].layer == MODEL_INPUT:
        raise _fail(path, "the output is not computed from the input by supported ops")
    final = builder.values[out]
    if final.chw is not None:
        raise _fail(path, "the output is a flattened C x H x W value; end with a Gemm/MatMul or pool first")
    layers = builder.layers
    # keep only the layers the output depends on, in order (a dropped Softmax's input is the output)
    needed, stack = set(), [final.layer]
    while stack:
        name = stack.pop()
        if name in needed or name == MODEL_INPUT:
            continue
        needed.add(name)
        stack.extend(builder.by_name[name].inputs)
    layers = [layer for layer in layers if layer.name in needed]
    if layers[-1].name != final.layer:
        raise _fail(path, "the output is not the last computed layer")
    src = SourceModel(name=path.stem, path=path, input_shape=(h, w, c), layers=layers,
                      param_bytes=4 * builder.param_count, head_activation=builder.head_activation)
    try:
        src.check_topology()
    except ValueError as e:
        raise _fail(path, str(e)) from None
    return src


__all__ = ["INPUT_LAYOUT", "MAX_OPSET", "MIN_OPSET", "load_onnx_model", "nchw_to_nhwc", "to_nhwc"]
