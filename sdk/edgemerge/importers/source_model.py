"""The framework-independent form of one imported source model: a single chain of layers, each with
float32 weights (BatchNorm folded), explicit padding and a fused activation.

Every importer (Keras, TFLite) produces a `SourceModel`; alignment, encoding and merging only ever see this
form. `executors.numpy_exec.forward_numpy` runs it, which is how importers are checked against their
framework. The padding rules are `emm.shapes` (re-exported here for the importers).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from edgemerge.emm.constants import Act
from edgemerge.emm.shapes import conv_output_size, same_padding

Shape3 = tuple[int, int, int]
LayerKind = Literal["conv", "depthwise", "dense", "max_pool", "avg_pool", "global_avg_pool", "flatten",
                    "activation"]
LAYER_KINDS: tuple[str, ...] = ("conv", "depthwise", "dense", "max_pool", "avg_pool", "global_avg_pool",
                                "flatten", "activation")
# Layer kinds that carry weights (and can therefore absorb a following BatchNormalization).
WEIGHTED_KINDS: tuple[str, ...] = ("conv", "depthwise", "dense")


@dataclass
class SourceLayer:
    """One layer of an imported model.

    weights: conv [KH, KW, Cin, Cout]; depthwise [KH, KW, C, M]; dense [In, Out]; float32, BatchNorm folded;
    None for layers without weights. Shapes are (h, w, c); a flat vector is (1, 1, n).
    """
    name: str
    kind: LayerKind
    in_shape: Shape3
    out_shape: Shape3
    weights: np.ndarray | None = None
    bias: np.ndarray | None = None
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)     # top, left, bottom, right
    activation: Act = Act.NONE
    # Names of the framework layers folded or fused into this one (BatchNormalization, ReLU, ...).
    fused: tuple[str, ...] = ()
    # Name of the framework layer whose output equals this layer's output ("" where none does, e.g. when
    # the final softmax was dropped).
    match_output: str = ""

    @property
    def depth(self) -> int:
        """Length of a kernel along its input: Cin for convolutions, In for dense layers."""
        if self.weights is None:
            raise ValueError(f"layer {self.name!r} ({self.kind}) has no weights")
        return int(self.weights.shape[2] if self.weights.ndim == 4 else self.weights.shape[0])


@dataclass
class SourceModel:
    """An imported model. `param_bytes` is the float32 size of all its parameters as the framework counts
    them (BatchNorm statistics included), i.e. what the merged file is compared with."""
    name: str
    path: Path
    input_shape: Shape3
    layers: list[SourceLayer] = field(default_factory=list)
    param_bytes: int = 0
    head_activation: str = "linear"       # the dropped final activation: "softmax" or "linear"

    def layer(self, name: str) -> SourceLayer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"model {self.name!r} has no layer {name!r}")

    def position(self, name: str) -> int:
        for i, layer in enumerate(self.layers):
            if layer.name == name:
                return i
        raise KeyError(f"model {self.name!r} has no layer {name!r}")

    @property
    def output_shape(self) -> Shape3:
        return self.layers[-1].out_shape if self.layers else self.input_shape

    @property
    def head(self) -> SourceLayer | None:
        """The model's last dense layer: its per-task branch head, kept as float and never merged."""
        for layer in reversed(self.layers):
            if layer.kind == "dense":
                return layer
        return None


__all__ = ["LAYER_KINDS", "WEIGHTED_KINDS", "SourceLayer", "SourceModel", "conv_output_size", "same_padding"]
