"""The framework-independent form of one imported source model: layers in topological order, each with
float32 weights (BatchNorm folded), explicit padding and a fused activation, reading the outputs of earlier
layers (a chain, or a graph with branches: residual ADD, CONCAT, squeeze-and-excite MUL).

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
                    "activation", "add", "concat", "mul", "pad"]
LAYER_KINDS: tuple[str, ...] = ("conv", "depthwise", "dense", "max_pool", "avg_pool", "global_avg_pool",
                                "flatten", "activation", "add", "concat", "mul", "pad")
# Kinds that join several inputs (docs/FORMAT.md v2: ADD, CONCAT, MUL); every other kind reads one.
JOIN_KINDS: tuple[str, ...] = ("add", "concat", "mul")
# The name `SourceLayer.inputs` uses for the model's input.
MODEL_INPUT = "@input"
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
    # The layers whose outputs this one reads, by name, in order (MODEL_INPUT for the model's input). Empty:
    # the layer before it in `SourceModel.layers` (or the model input for the first), i.e. a chain. Joins
    # (JOIN_KINDS) list every input; "mul" puts the (H, W, C) value first and the (1, 1, C) gate second
    # when it broadcasts. "pad" uses `pads` (zeros). Always read it through `SourceModel.inputs_of`.
    inputs: tuple[str, ...] = ()

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

    def inputs_of(self, position: int) -> tuple[str, ...]:
        """The names layer `position` reads (MODEL_INPUT for the model's input), chains made explicit."""
        layer = self.layers[position]
        if layer.inputs:
            return layer.inputs
        return (self.layers[position - 1].name,) if position > 0 else (MODEL_INPUT,)

    def consumers(self) -> dict[str, list[int]]:
        """name (or MODEL_INPUT) -> positions of the layers that read it, in order."""
        out: dict[str, list[int]] = {}
        for i in range(len(self.layers)):
            for name in self.inputs_of(i):
                out.setdefault(name, []).append(i)
        return out

    @property
    def is_chain(self) -> bool:
        """Every layer reads the one before it (what format v1 and the first importers handled)."""
        return all(self.inputs_of(i) == ((self.layers[i - 1].name,) if i else (MODEL_INPUT,))
                   for i in range(len(self.layers)))

    def check_topology(self) -> None:
        """Raises ValueError unless every input names the model input or an EARLIER layer, names are unique
        and the last layer is the only one nobody reads (the model's single output)."""
        seen = {MODEL_INPUT}
        for i, layer in enumerate(self.layers):
            if layer.name in seen:
                raise ValueError(f"model {self.name!r}: layer name {layer.name!r} is used twice")
            for name in self.inputs_of(i):
                if name not in seen:
                    raise ValueError(f"model {self.name!r}: layer {layer.name!r} reads {name!r}, which is not an "
                                     "earlier layer (layers must be in topological order)")
            seen.add(layer.name)
        read = self.consumers()
        dangling = [layer.name for layer in self.layers[:-1] if layer.name not in read]
        if dangling:
            raise ValueError(f"model {self.name!r}: layer(s) {', '.join(dangling)} feed nothing; a source model "
                             "has one output, its last layer")

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


__all__ = ["JOIN_KINDS", "LAYER_KINDS", "MODEL_INPUT", "WEIGHTED_KINDS", "SourceLayer", "SourceModel",
           "conv_output_size", "same_padding"]
