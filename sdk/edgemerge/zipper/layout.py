"""The pair's common architecture: which layers the models share and where the blocks are.

The models read the same input and have the same trunk (layer by layer: kind, shapes, kernel, stride,
padding, activation, and which earlier layers each one reads); their tails (pooling, heads) may differ. The
trunk is cut into blocks, each a run of consecutive layer positions (topological order), block j ending at
the j-th point-wise "project" layer (a 1×1 conv reading a depthwise conv). Block 1 also holds the layers
before the first depthwise conv (the first conv). Round k = 1..L shares blocks 1..k (zipper/rounds.py).

- Chains (MobileNet-v1): a block is [depthwise, point-wise]; its one point-wise conv is what
  `share="pointwise"` shares.
- Graphs (MobileNetV2 inverted-residual blocks): a block is [expand 1×1 (absent in MobileNetV2's first
  block), explicit pad (if any), depthwise 3×3, project 1×1, residual Add]. The expand conv is a 1×1 conv
  inside the block that reads the block's input and feeds the depthwise conv (through pads only); the Add
  is the layer adding the project conv's output to the block's input (present when the shapes match), and
  it ends the block. `share="pointwise"` shares the expand and project convs; `share="block"` every layer of
  the block, the Add included.

`top=True` adds one last block: the convs after the last block and before the first pooling, flatten or dense
layer (MobileNetV2's Conv_1 of 1280 channels, with its activation: the end of keras.applications'
`include_top=False` feature extractor), so that round L + 1 shares the whole feature extractor and only the
classifiers stay per task. At a small input that conv is a large share of the time (a matrix-vector product
over all its weights, per task).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from edgemerge.errors import EdgemergeError
from edgemerge.importers import SourceLayer, SourceModel
from edgemerge.importers.source_model import MODEL_INPUT

SHARE_MODES = ("pointwise", "block")
DEFAULT_SHARE = "pointwise"
SPATIAL_KINDS = ("conv", "depthwise", "max_pool", "avg_pool")


def file_name(model: SourceModel) -> str:
    return Path(model.path).name if model.path else model.name


@dataclass(frozen=True)
class Block:
    index: int                        # 1-based
    positions: tuple[int, ...]        # layer positions (consecutive, topological order)
    pointwise: int                    # position of the block's point-wise (project) conv
    expand: int | None = None         # position of the expand 1x1 conv (inverted-residual blocks)
    add: int | None = None            # position of the residual Add (when the block has one)

    @property
    def pointwise_convs(self) -> tuple[int, ...]:
        """What share="pointwise" shares: the expand (if any) and project convs."""
        return (self.pointwise,) if self.expand is None else (self.expand, self.pointwise)


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
            return [p for b in self.blocks[:k] for p in b.pointwise_convs]
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


def check_pair(models: Mapping[str, SourceModel], top: bool = False) -> PairLayout:
    """Checks that the models can be zippered and finds their blocks (and the top block, `top`: see the module
    docstring). Raises EdgemergeError naming the first layer where two architectures differ."""
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
    blocks = find_blocks(first)
    if not blocks:
        raise EdgemergeError(f"{first_task} ({file_name(first)}) has no depthwise-separable block (a depthwise "
                             "conv followed by a 1x1 conv): nothing to zipper")
    if top:
        last = top_block(first, blocks)
        if last is None:
            raise EdgemergeError(f"{first_task} ({file_name(first)}) has no conv between its last block and its "
                                 "pooling or classifier: no top block to share (leave out --top)")
        blocks.append(last)
    trunk_end = blocks[-1].positions[-1] + 1
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
            if input_positions(first, i) != input_positions(other, i):
                raise EdgemergeError(
                    f"architectures differ at layer {i + 1}: {first_task}:{a.name} reads "
                    f"{_describe_inputs(first, i)}, {task}:{b.name} reads {_describe_inputs(other, i)}")
        if len(other.layers) == trunk_end:
            raise EdgemergeError(f"{task} ({file_name(other)}) ends with its last point-wise conv: a model needs "
                                 "its own layers (a head) after the shared trunk")
    if len(first.layers) == trunk_end:
        raise EdgemergeError(f"{first_task} ({file_name(first)}) ends with its last point-wise conv: a model "
                             "needs its own layers (a head) after the shared trunk")
    return PairLayout(tasks, blocks)


def input_positions(model: SourceModel, position: int) -> tuple[int, ...]:
    """The positions of the layers `position` reads (-1: the model input)."""
    return tuple(-1 if name == MODEL_INPUT else model.position(name) for name in model.inputs_of(position))


def _describe_inputs(model: SourceModel, position: int) -> str:
    return ", ".join("the model input" if p < 0 else f"layer {p + 1} ({model.layers[p].name})"
                     for p in input_positions(model, position))


def _is_pointwise_conv(layer: SourceLayer) -> bool:
    return layer.kind == "conv" and tuple(layer.kernel) == (1, 1) and tuple(layer.stride) == (1, 1)


TOP_KINDS = ("conv", "activation", "pad")


def top_block(model: SourceModel, blocks: list[Block]) -> Block | None:
    """The layers after the last block up to the first that is not a conv, activation or pad (pooling, flatten,
    dense), as one more block ending at its last conv; None when they hold no conv."""
    start = blocks[-1].positions[-1] + 1
    end = start
    while end < len(model.layers) and model.layers[end].kind in TOP_KINDS:
        end += 1
    convs = [p for p in range(start, end) if model.layers[p].kind == "conv"]
    if not convs:
        return None
    end = convs[-1] + 1                 # an activation after the last conv goes with the per-task rest
    return Block(len(blocks) + 1, tuple(range(start, end)), convs[-1])


def find_blocks(model: SourceModel) -> list[Block]:
    """The blocks of one model (see the module docstring); [] when it has no depthwise-separable block."""
    layers = model.layers
    readers = model.consumers()
    blocks: list[Block] = []
    start = 0
    for p, layer in enumerate(layers):
        inputs = input_positions(model, p)
        if not (layer.kind == "conv" and tuple(layer.kernel) == (1, 1) and len(inputs) == 1 and inputs[0] >= 0
                and layers[inputs[0]].kind == "depthwise"):
            continue
        expand = add = None
        if not model.is_chain:
            # back from the depthwise conv through explicit pads: an expand conv inside this block?
            src = input_positions(model, inputs[0])[0]
            while src >= start and layers[src].kind == "pad":
                src = input_positions(model, src)[0]
            if src >= start and _is_pointwise_conv(layers[src]):
                expand, block_input = src, input_positions(model, src)[0]
            else:
                block_input = src
            for r in readers.get(layer.name, []):
                if layers[r].kind == "add" and sorted(input_positions(model, r)) == sorted((p, block_input)):
                    add = r
        end = p if add is None else max(p, add)
        blocks.append(Block(len(blocks) + 1, tuple(range(start, end + 1)), p, expand, add))
        start = end + 1
    return blocks
