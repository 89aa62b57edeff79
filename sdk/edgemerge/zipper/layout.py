"""The pair's common architecture: which layers the models share and where the blocks are.

The models read the same input and have the same trunk (layer by layer: kind, shapes, kernel, stride,
padding, activation); their tails (pooling, heads) may differ. The trunk is cut into blocks, block j ending
at the j-th point-wise layer (a 1×1 conv right after a depthwise conv); block 1 also holds the layers
before the first depthwise conv (the first conv). Round k = 1..L shares blocks 1..k (zipper/rounds.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from edgemerge.errors import EdgemergeError
from edgemerge.importers import SourceLayer, SourceModel

SHARE_MODES = ("pointwise", "block")
DEFAULT_SHARE = "pointwise"
SPATIAL_KINDS = ("conv", "depthwise", "max_pool", "avg_pool")


def file_name(model: SourceModel) -> str:
    return Path(model.path).name if model.path else model.name


@dataclass(frozen=True)
class Block:
    index: int                        # 1-based
    positions: tuple[int, ...]        # layer positions in the chain
    pointwise: int                    # position of the block's point-wise conv


@dataclass
class PairLayout:
    """Where the blocks of the models' common trunk are (layer positions, the same in every model)."""
    tasks: tuple[str, ...]
    blocks: list[Block]

    @property
    def depth(self) -> int:
        """L: the number of blocks (rounds)."""
        return len(self.blocks)

    def shared_positions(self, share: str, k: int) -> list[int]:
        """Positions whose layers are shared after round k."""
        if share not in SHARE_MODES:
            raise EdgemergeError(f"unknown share mode {share!r} (expected {' or '.join(SHARE_MODES)})")
        if not 0 <= k <= self.depth:
            raise EdgemergeError(f"k={k} is outside 0..{self.depth} (the models have {self.depth} blocks)")
        if share == "pointwise":
            return [b.pointwise for b in self.blocks[:k]]
        return [p for b in self.blocks[:k] for p in b.positions]


def _describe(layer: SourceLayer) -> str:
    text = f"{layer.kind}"
    if layer.kind in SPATIAL_KINDS:
        text += f" {layer.kernel[0]}x{layer.kernel[1]} stride {layer.stride[0]}x{layer.stride[1]} pads {layer.pads}"
    text += f", in {'x'.join(map(str, layer.in_shape))}, out {'x'.join(map(str, layer.out_shape))}"
    if layer.weights is not None:
        text += f", weights {'x'.join(map(str, layer.weights.shape))}"
    return text + f", activation {layer.activation.name.lower()}"


def _signature(layer: SourceLayer) -> tuple:
    return (layer.kind, tuple(layer.in_shape), tuple(layer.out_shape), tuple(layer.kernel), tuple(layer.stride),
            tuple(layer.pads), int(layer.activation),
            None if layer.weights is None else tuple(layer.weights.shape))


def check_pair(models: Mapping[str, SourceModel]) -> PairLayout:
    """Checks that the models can be zippered and finds their blocks. Raises EdgemergeError naming the first
    layer where two architectures differ."""
    tasks = tuple(models)
    if len(tasks) < 2:
        raise EdgemergeError(f"zippering needs at least two models, got {len(tasks)}")
    first_task = tasks[0]
    first = models[first_task]
    for task in tasks[1:]:
        other = models[task]
        if tuple(other.input_shape) != tuple(first.input_shape):
            raise EdgemergeError(
                f"the models read different inputs: {first_task} ({file_name(first)}) "
                f"{'x'.join(map(str, first.input_shape))}, {task} ({file_name(other)}) "
                f"{'x'.join(map(str, other.input_shape))}; zippering needs the same input")
    # The trunk: up to the last point-wise conv of the first model (its blocks are found below).
    pointwise = [i for i, layer in enumerate(first.layers)
                 if layer.kind == "conv" and tuple(layer.kernel) == (1, 1) and i > 0
                 and first.layers[i - 1].kind == "depthwise"]
    if not pointwise:
        raise EdgemergeError(f"{first_task} ({file_name(first)}) has no depthwise-separable block (a depthwise "
                             "conv followed by a 1x1 conv): nothing to zipper")
    trunk_end = pointwise[-1] + 1
    for task in tasks[1:]:
        other = models[task]
        for i in range(trunk_end):
            if i >= len(other.layers):
                raise EdgemergeError(
                    f"architectures differ at layer {i + 1}: {first_task}:{first.layers[i].name} "
                    f"({_describe(first.layers[i])}) has no counterpart, {task} ({file_name(other)}) "
                    f"ends after {len(other.layers)} layers")
            a, b = first.layers[i], other.layers[i]
            if _signature(a) != _signature(b):
                raise EdgemergeError(
                    f"architectures differ at layer {i + 1}: {first_task}:{a.name} ({_describe(a)}) vs "
                    f"{task}:{b.name} ({_describe(b)})")
        if len(other.layers) == trunk_end:
            raise EdgemergeError(f"{task} ({file_name(other)}) ends with its last point-wise conv: a model needs "
                                 "its own layers (a head) after the shared trunk")
    if len(first.layers) == trunk_end:
        raise EdgemergeError(f"{first_task} ({file_name(first)}) ends with its last point-wise conv: a model "
                             "needs its own layers (a head) after the shared trunk")
    blocks, start = [], 0
    for j, p in enumerate(pointwise, start=1):
        blocks.append(Block(j, tuple(range(start, p + 1)), p))
        start = p + 1
    return PairLayout(tasks, blocks)
