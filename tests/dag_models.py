"""Hand-built DAG source models of two different architectures (random weights), for merging, calibrating and
running residual/branching graphs before the functional-graph importers exist:

- `resnet_like`: conv-relu stem, a residual block with an identity Add (ReLU on the Add), a downsampling
  block with a 1x1 stride-2 projection shortcut, global average pool, dense head;
- `mobilenet_like`: conv-relu6 stem, an inverted-residual block (expand 1x1 relu6, depthwise 3x3 relu6,
  project 1x1, Add), an explicit PAD + stride-2 depthwise, a squeeze-and-excite gate (GAP, 1x1 relu,
  1x1 hard-sigmoid, MUL), a CONCAT with the block's input side, a 1x1 hard-swish conv, GAP, dense head.

Together they use every format-v2 op (ADD, CONCAT, MUL with broadcast, PAD) and the new activations.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgemerge.emm.constants import Act
from edgemerge.emm.shapes import conv_output_size, same_padding
from edgemerge.importers.source_model import MODEL_INPUT, SourceLayer, SourceModel

HW = 8


def _he(rng, shape, fan_in):
    return (rng.normal(size=shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def _same_pads(h, w, k, stride):
    (top, bottom), (left, right) = same_padding(h, k, stride), same_padding(w, k, stride)
    return top, left, bottom, right      # Keras padding="same", so Keras rebuilds of these models agree


class _Builder:
    def __init__(self, name: str, rng: np.random.Generator, input_shape=(HW, HW, 3)):
        self.rng, self.name, self.input_shape = rng, name, tuple(input_shape)
        self.layers: list[SourceLayer] = []
        self.shapes = {MODEL_INPUT: self.input_shape}

    def _add(self, layer: SourceLayer) -> str:
        layer.match_output = layer.name
        self.layers.append(layer)
        self.shapes[layer.name] = layer.out_shape
        return layer.name

    def conv(self, name, src, cout, k=1, stride=1, act=Act.NONE, same=True):
        h, w, cin = self.shapes[src]
        pads = _same_pads(h, w, k, stride) if same else (0, 0, 0, 0)
        oh, ow = conv_output_size(h, k, stride, pads[0], pads[2]), conv_output_size(w, k, stride, pads[1], pads[3])
        return self._add(SourceLayer(name, "conv", (h, w, cin), (oh, ow, cout), _he(self.rng, (k, k, cin, cout), k * k * cin),
                                     (self.rng.normal(size=cout) * 0.1).astype(np.float32), (k, k), (stride, stride),
                                     pads, act, inputs=(src,)))

    def depthwise(self, name, src, k=3, stride=1, act=Act.NONE, pads=None):
        h, w, c = self.shapes[src]
        pads = _same_pads(h, w, k, stride) if pads is None else pads
        oh, ow = conv_output_size(h, k, stride, pads[0], pads[2]), conv_output_size(w, k, stride, pads[1], pads[3])
        return self._add(SourceLayer(name, "depthwise", (h, w, c), (oh, ow, c), _he(self.rng, (k, k, c, 1), k * k),
                                     (self.rng.normal(size=c) * 0.1).astype(np.float32), (k, k), (stride, stride),
                                     pads, act, inputs=(src,)))

    def join(self, name, kind, srcs, act=Act.NONE):
        shapes = [self.shapes[s] for s in srcs]
        if kind == "concat":
            out = (*shapes[0][:2], sum(s[2] for s in shapes))
        else:
            out = max(shapes, key=lambda s: s[0] * s[1])
        return self._add(SourceLayer(name, kind, shapes[0], tuple(out), activation=act, inputs=tuple(srcs)))

    def pad(self, name, src, pads):
        h, w, c = self.shapes[src]
        return self._add(SourceLayer(name, "pad", (h, w, c), (h + pads[0] + pads[2], w + pads[1] + pads[3], c),
                                     pads=tuple(pads), inputs=(src,)))

    def gap(self, name, src):
        h, w, c = self.shapes[src]
        return self._add(SourceLayer(name, "global_avg_pool", (h, w, c), (1, 1, c), inputs=(src,)))

    def dense(self, name, src, out):
        n = int(np.prod(self.shapes[src]))
        return self._add(SourceLayer(name, "dense", self.shapes[src], (1, 1, out), _he(self.rng, (n, out), n),
                                     (self.rng.normal(size=out) * 0.1).astype(np.float32), inputs=(src,)))

    def model(self) -> SourceModel:
        model = SourceModel(self.name, Path(f"{self.name}.keras"), self.input_shape, self.layers,
                            param_bytes=4 * sum(l.weights.size + l.bias.size for l in self.layers if l.weights is not None),
                            head_activation="softmax")
        model.check_topology()
        return model


def resnet_like(seed: int = 0, classes: int = 5, width: int = 8) -> SourceModel:
    b = _Builder("resnet_like", np.random.default_rng(seed))
    stem = b.conv("stem", MODEL_INPUT, width, k=3, act=Act.RELU)
    c1 = b.conv("b1_c1", stem, width, k=3, act=Act.RELU)
    c2 = b.conv("b1_c2", c1, width, k=3)
    a1 = b.join("b1_add", "add", (c2, stem), act=Act.RELU)
    d1 = b.conv("b2_c1", a1, 2 * width, k=3, stride=2, act=Act.RELU)
    d2 = b.conv("b2_c2", d1, 2 * width, k=3)
    proj = b.conv("b2_proj", a1, 2 * width, k=1, stride=2)
    a2 = b.join("b2_add", "add", (d2, proj), act=Act.RELU)
    b.dense("head", b.gap("gap", a2), classes)
    return b.model()


def mobilenet_like(seed: int = 1, classes: int = 4, width: int = 8) -> SourceModel:
    b = _Builder("mobilenet_like", np.random.default_rng(seed))
    stem = b.conv("stem", MODEL_INPUT, width, k=3, act=Act.RELU6)
    e = b.conv("ir1_expand", stem, 3 * width, act=Act.RELU6)
    d = b.depthwise("ir1_dw", e, act=Act.RELU6)
    p = b.conv("ir1_project", d, width)
    a = b.join("ir1_add", "add", (p, stem))
    e2 = b.conv("ir2_expand", a, 3 * width, act=Act.RELU6)
    padded = b.pad("ir2_pad", e2, (0, 0, 1, 1))                  # MobileNetV2's ZeroPadding2D before stride 2
    d2 = b.depthwise("ir2_dw", padded, stride=2, act=Act.RELU6, pads=(0, 0, 0, 0))
    squeeze = b.conv("se_reduce", b.gap("se_gap", d2), width, act=Act.RELU)
    gate = b.conv("se_expand", squeeze, 3 * width, act=Act.HARD_SIGMOID)
    excited = b.join("se_mul", "mul", (d2, gate))
    side = b.conv("side", a, width, stride=2, act=Act.SWISH)
    cat = b.join("cat", "concat", (excited, side))
    top = b.conv("top", cat, 2 * width, act=Act.HARD_SWISH)
    b.dense("head", b.gap("gap", top), classes)
    return b.model()


def dag_pair(width: int = 8) -> dict[str, SourceModel]:
    return {"res": resnet_like(width=width), "mnv": mobilenet_like(width=width)}


_KERAS_ACTIVATIONS = {Act.NONE: None, Act.RELU: "relu", Act.RELU6: "relu6", Act.SIGMOID: "sigmoid",
                      Act.HARD_SIGMOID: "hard_sigmoid", Act.HARD_SWISH: "hard_silu", Act.SWISH: "silu"}


def to_keras(source: SourceModel):
    """The functional Keras model a `SourceModel` of this module stands for (same weights; every layer's output
    under the layer's name, after its activation; softmax on the head), as a user's residual .keras file would
    be: Conv2D / DepthwiseConv2D behind an explicit ZeroPadding2D, Add / Multiply / Concatenate, keep-dims
    global average pools, Flatten + Dense head."""
    import keras

    x_in = keras.Input(shape=source.input_shape, name="image")
    values = {MODEL_INPUT: x_in}
    for i, layer in enumerate(source.layers):
        xs = [values[n] for n in source.inputs_of(i)]
        act = _KERAS_ACTIVATIONS[layer.activation]
        top, left, bottom, right = layer.pads
        if layer.kind in ("conv", "depthwise"):
            x = xs[0]
            if any(layer.pads):
                x = keras.layers.ZeroPadding2D(((top, bottom), (left, right)), name=f"{layer.name}_pad")(x)
            if layer.kind == "conv":
                keras_layer = keras.layers.Conv2D(layer.weights.shape[3], layer.kernel, layer.stride, activation=act,
                                                  name=layer.name)
            else:
                keras_layer = keras.layers.DepthwiseConv2D(layer.kernel, layer.stride, activation=act, name=layer.name)
            y = keras_layer(x)
            keras_layer.set_weights([layer.weights, layer.bias])
        elif layer.kind == "dense":
            keras_layer = keras.layers.Dense(layer.weights.shape[1], activation=act, name=layer.name)
            y = keras_layer(keras.layers.Flatten(name=f"{layer.name}_flat")(xs[0]))
            keras_layer.set_weights([layer.weights, layer.bias])
        else:
            joined = {"add": lambda n: keras.layers.Add(name=n)(xs), "mul": lambda n: keras.layers.Multiply(name=n)(xs),
                      "concat": lambda n: keras.layers.Concatenate(name=n)(xs),
                      "pad": lambda n: keras.layers.ZeroPadding2D(((top, bottom), (left, right)), name=n)(xs[0]),
                      "global_avg_pool": lambda n: keras.layers.GlobalAveragePooling2D(keepdims=True, name=n)(xs[0])}
            if act is None:
                y = joined[layer.kind](layer.name)
            else:        # Keras joins carry no activation: the named output is the Activation after it
                y = keras.layers.Activation(act, name=layer.name)(joined[layer.kind](f"{layer.name}_pre"))
        values[layer.name] = y
    probs = keras.layers.Softmax(name="probs")(values[source.layers[-1].name])
    return keras.Model(x_in, probs, name=source.name)


def dag_pair_files(directory: Path, samples: int):
    """dag_pair() saved as functional .keras originals, with calibration sets of `samples` random inputs each,
    labelled by the originals: (sources, {task: .keras path}, {task: .npz path})."""
    sources, originals, calib = dag_pair(), {}, {}
    rng = np.random.default_rng(0)
    for task, source in sources.items():
        model = to_keras(source)
        originals[task] = directory / f"{task}.keras"
        model.save(originals[task])
        x = rng.normal(size=(samples, *source.input_shape)).astype(np.float32)
        calib[task] = directory / f"{task}.npz"
        np.savez(calib[task], x=x, y=np.argmax(model.predict(x, verbose=0), axis=1).astype(np.int64))
    return sources, originals, calib
