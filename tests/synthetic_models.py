"""Imported-model stand-ins built directly as `SourceModel`s (no Keras, no training) for alignment, encoder
and merge tests. Shapes are computed like the importer does, so `forward_numpy` runs them."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgemerge.emm.constants import Act
from edgemerge.importers import SourceLayer, SourceModel, same_padding


def conv(name, cout, kernel=3, stride=1, padding="same", act=Act.RELU, bias=True):
    return dict(kind="conv", name=name, cout=cout, kernel=kernel, stride=stride, padding=padding, act=act, bias=bias)


def depthwise(name, multiplier=2, kernel=3, stride=1, padding="same", act=Act.RELU6):
    return dict(kind="depthwise", name=name, multiplier=multiplier, kernel=kernel, stride=stride, padding=padding,
                act=act, bias=True)


def pool(name, kind="max_pool", kernel=2, stride=2, padding="valid"):
    return dict(kind=kind, name=name, kernel=kernel, stride=stride, padding=padding)


def gap(name="gap"):
    return dict(kind="global_avg_pool", name=name)


def flatten(name="flatten"):
    return dict(kind="flatten", name=name)


def dense(name, out, act=Act.RELU, bias=True):
    return dict(kind="dense", name=name, out=out, act=act, bias=bias)


def activation(name, act=Act.RELU):
    return dict(kind="activation", name=name, act=act)


def chain_model(task: str, input_shape: tuple[int, int, int], specs: list[dict], *, seed: int = 0,
                levels: np.ndarray | None = None) -> SourceModel:
    """A SourceModel from layer specs. Weights are normal(0, 1/sqrt(fan_in)), or drawn from `levels` (a few
    values, so that segment vectors repeat and encoding can be exact)."""
    rng = np.random.default_rng(seed)

    def weights(shape, fan_in):
        if levels is not None:
            return rng.choice(np.asarray(levels, np.float32), size=shape).astype(np.float32)
        return (rng.normal(size=shape) / np.sqrt(fan_in)).astype(np.float32)

    layers = []
    h, w, c = input_shape
    for spec in specs:
        kind, name = spec["kind"], spec["name"]
        layer = SourceLayer(name, kind, (h, w, c), (h, w, c), match_output=name)
        if kind in ("conv", "depthwise", "max_pool", "avg_pool"):
            k, s = spec["kernel"], spec["stride"]
            if spec["padding"] == "same":
                (top, bottom), (left, right) = same_padding(h, k, s), same_padding(w, k, s)
            else:
                top = bottom = left = right = 0
            oh, ow = (h + top + bottom - k) // s + 1, (w + left + right - k) // s + 1
            layer.kernel, layer.stride, layer.pads = (k, k), (s, s), (top, left, bottom, right)
            if kind == "conv":
                layer.weights = weights((k, k, c, spec["cout"]), k * k * c)
                c = spec["cout"]
            elif kind == "depthwise":
                layer.weights = weights((k, k, c, spec["multiplier"]), k * k)
                c = c * spec["multiplier"]
            h, w = oh, ow
        elif kind == "global_avg_pool":
            h = w = 1
        elif kind == "flatten":
            h, w, c = 1, 1, h * w * c
        elif kind == "dense":
            layer.weights = weights((h * w * c, spec["out"]), h * w * c)
            h, w, c = 1, 1, spec["out"]
        if spec.get("bias"):
            layer.bias = (rng.normal(size=c) * 0.1).astype(np.float32)
        layer.activation = spec.get("act", Act.NONE)
        layer.out_shape = (h, w, c)
        layers.append(layer)
    param_bytes = 4 * sum(l.weights.size + (l.bias.size if l.bias is not None else 0)
                          for l in layers if l.weights is not None)
    return SourceModel(task, Path(f"{task}.keras"), tuple(input_shape), layers, param_bytes)


def lenet_like(task="a", seed=0, levels=None, classes=10) -> SourceModel:
    """conv c1, pool, conv c2, pool, flatten, dense d1, head d2."""
    return chain_model(task, (16, 16, 1), [
        conv("c1", 6, kernel=5, padding="valid"), pool("p1"), conv("c2", 12, kernel=3, padding="valid", bias=False),
        pool("p2", kernel=2, stride=2), flatten(), dense("d1", 32), dense("d2", classes, act=Act.NONE),
    ], seed=seed, levels=levels)


def mobile_like(task="b", seed=1, levels=None, classes=4) -> SourceModel:
    """conv k1 (stride 2), depthwise, conv k2, avg pool (same), conv k3, gap, dense e1, e2, head e3."""
    return chain_model(task, (16, 16, 3), [
        conv("k1", 8, stride=2), depthwise("dw"), conv("k2", 16, kernel=1),
        pool("ap", kind="avg_pool", kernel=3, stride=2, padding="same"), conv("k3", 20, act=Act.RELU6),
        gap(), dense("e1", 24), dense("e2", 16, act=Act.RELU6), dense("e3", classes, act=Act.NONE),
    ], seed=seed, levels=levels)
