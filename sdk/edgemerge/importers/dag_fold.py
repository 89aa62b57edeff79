"""Folding passes every importer runs on the layer graph it read, before handing out a `SourceModel`.

Importers first translate each framework layer / operator into one `SourceLayer` with explicit `inputs` (no
fusion while reading: in a graph with branches, whether a BatchNormalization, an activation or a zero padding
may be folded into the layer before it depends on who else reads that layer, which is only known once the
whole graph is read). These passes then fold, in this order:

1. `fold_batch_norms`: a "bn" layer (temporary kind: `weights` holds the per-channel scale, `bias` the shift)
   into the conv / depthwise / dense that produces its input, when that layer has no activation and no
   other reader. Anything else is refused (`UnsupportedLayerError` naming the layer), e.g. a BatchNorm after
   an Add: it cannot become part of a weighted layer.
2. `fold_pads`: a zero "pad" layer into the conv / depthwise that is its only reader, when the summed pads
   stay smaller than the kernel (docs/FORMAT.md: a conv's pads are smaller than its kernel); else the pad
   stays a PAD layer.
3. `fuse_activations`: a standalone "activation" layer into the layer producing its input (weighted layers,
   activations and joins) when it is that layer's only reader and the two activations compose into one.

Readers are always recomputed from `inputs`, so the passes are correct for chains and graphs alike.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from edgemerge.emm.constants import Act
from edgemerge.importers.source_model import JOIN_KINDS, MODEL_INPUT, WEIGHTED_KINDS, SourceLayer

# kinds a following standalone activation may be fused into (their node applies its activation last)
FUSABLE_KINDS: tuple[str, ...] = (*WEIGHTED_KINDS, "activation", *JOIN_KINDS)


def compose(first: Act, then: Act) -> Act | None:
    """The single activation equal to applying `first` and then `then`, or None when there is none (relu and
    relu6 compose to relu6; anything after NONE is itself)."""
    if first == Act.NONE:
        return then
    if then == Act.NONE:
        return first
    if first in (Act.RELU, Act.RELU6) and then in (Act.RELU, Act.RELU6):
        return Act.RELU6 if Act.RELU6 in (first, then) else Act.RELU
    return None


def _readers(layers: list[SourceLayer], name: str) -> list[SourceLayer]:
    return [layer for layer in layers if name in layer.inputs]


def _bypass(layers: list[SourceLayer], removed: SourceLayer, replacement: str) -> None:
    """Drops `removed` from the list; every layer that read it reads `replacement` instead."""
    layers.remove(removed)
    for layer in layers:
        if removed.name in layer.inputs:
            layer.inputs = tuple(replacement if n == removed.name else n for n in layer.inputs)


def _producer(layers: list[SourceLayer], name: str) -> SourceLayer | None:
    for layer in layers:
        if layer.name == name:
            return layer
    return None


def fold_batch_norms(layers: list[SourceLayer], refuse: Callable[[SourceLayer, str], Exception]) -> None:
    """Pass 1 (see the module docstring). `refuse(bn_layer, why)` builds the error for a BN that cannot fold."""
    for bn in [layer for layer in layers if layer.kind == "bn"]:
        source = bn.inputs[0]
        previous = _producer(layers, source)
        if previous is None or previous.kind not in WEIGHTED_KINDS or previous.activation != Act.NONE:
            follows = f"layer '{previous.name}' ({previous.kind})" if previous else "the model input"
            raise refuse(bn, f"cannot be folded: it follows {follows}; only a BatchNormalization directly after "
                             "a Conv2D, DepthwiseConv2D or Dense without activation can be folded into it")
        others = [r.name for r in _readers(layers, source) if r is not bn]
        if others:
            raise refuse(bn, f"cannot be folded: the output of '{previous.name}' also feeds "
                             f"{', '.join(others)}; a BatchNormalization folds only into a layer it alone reads")
        scale, shift = bn.weights.astype(np.float64), bn.bias.astype(np.float64)
        weights = previous.weights.astype(np.float64)
        if previous.kind == "depthwise":                           # channel c·M + m scales kernel[..., c, m]
            weights = weights * scale.reshape(weights.shape[2], weights.shape[3])
        else:
            weights = weights * scale
        bias = previous.bias.astype(np.float64) if previous.bias is not None else np.zeros(scale.size)
        previous.weights = weights.astype(np.float32)
        previous.bias = (bias * scale + shift).astype(np.float32)
        previous.fused += (bn.name, *bn.fused)
        previous.match_output = bn.match_output
        _bypass(layers, bn, previous.name)


def fold_pads(layers: list[SourceLayer]) -> None:
    """Pass 2 (see the module docstring)."""
    for pad in [layer for layer in layers if layer.kind == "pad"]:
        if pad.activation != Act.NONE:
            continue
        readers = _readers(layers, pad.name)
        if len(readers) != 1 or readers[0].kind not in ("conv", "depthwise") or readers[0].inputs != (pad.name,):
            continue
        conv = readers[0]
        pads = tuple(a + b for a, b in zip(pad.pads, conv.pads))
        kh, kw = conv.kernel
        if pads[0] >= kh or pads[2] >= kh or pads[1] >= kw or pads[3] >= kw:
            continue
        conv.pads, conv.in_shape = pads, pad.in_shape
        conv.fused += (pad.name,)
        _bypass(layers, pad, pad.inputs[0])


def fuse_activations(layers: list[SourceLayer]) -> None:
    """Pass 3 (see the module docstring)."""
    for act in [layer for layer in layers if layer.kind == "activation"]:
        if act not in layers:
            continue
        previous = _producer(layers, act.inputs[0])
        if previous is None or previous.kind not in FUSABLE_KINDS or _readers(layers, previous.name) != [act]:
            continue
        composed = compose(previous.activation, act.activation)
        if composed is None:
            continue
        previous.activation = composed
        previous.fused += (act.name, *act.fused)
        if act.match_output:
            previous.match_output = act.match_output
        _bypass(layers, act, previous.name)


def drop_implicit_inputs(layers: list[SourceLayer]) -> None:
    """Clears `inputs` where it names just the layer before (or the model input for the first): a chain keeps
    the form the chain importers always produced."""
    for i, layer in enumerate(layers):
        if layer.inputs == ((layers[i - 1].name,) if i else (MODEL_INPUT,)):
            layer.inputs = ()


__all__ = ["FUSABLE_KINDS", "compose", "drop_implicit_inputs", "fold_batch_norms", "fold_pads", "fuse_activations"]
