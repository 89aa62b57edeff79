"""Merging imported models into one `MergedGraph` (NeuralMerger, Chou et al., IJCAI 2018).

Every task keeps its own input and its own nodes, which follow the task's graph (a chain, or a DAG whose
joins become ADD / CONCAT / MUL nodes reading several values, format v2); what is shared are the codebooks
of aligned layers (`align.py`). A chain gives exactly the v1 graph it always did. Per task:

- conv layers            -> LUT_CONV2D (codebook of the layer's group + the layer's own index map and bias)
- dense layers but head  -> LUT_DENSE  (likewise)
- the head (last dense)  -> DENSE, float; with a preset's `head` (r, C) and a head of at least
                            HEAD_ENCODE_FROM_BYTES float bytes, LUT_DENSE with its own layer-shared codebook
- depthwise convs        -> DEPTHWISE_CONV2D, float; with a preset's `depthwise` (r, C),
                            LUT_DEPTHWISE_CONV2D: one codebook [1, C, r] of r-tap kernel segments for every
                            depthwise layer of a task (docs/FORMAT.md "Clustered depthwise"); depthwise layers
                            are never merged across tasks
- pools, flatten, standalone activations -> MAX_POOL / AVG_POOL / GLOBAL_AVG_POOL / RESHAPE / ACTIVATION
- joins add / concat / mul, explicit pad -> ADD / CONCAT / MUL (inputs in the layer's order) / PAD

Segment length r and codebook size C come from a preset (`PRESETS`), per group, and can be overridden
per group with `layer_rc`; a large codebook of a dense or 1x1 group is held to an eighth of its weights
(ONE_TAP_CAP_FROM_BYTES), and a preset with `one_tap_shared` gives a group of 1x1 convs (and of dense layers
with `one_tap_shared_dense`) whose per-segment codebooks would still cost more than that ONE layer-shared
codebook [1, C, r] (docs/FORMAT.md).
"""
from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from edgemerge.emm.constants import (
    INT8_TABLE_CODEWORDS,
    MAX_TASKS,
    NODE_FLAG_INT8_TABLES,
    NONE,
    TASK_NAME_BYTES,
    Keys,
    Op,
    index_bits,
)
from edgemerge.emm.graph import MergedGraph, Node, Task, Tensor
from edgemerge.errors import EdgemergeError
from edgemerge.importers import SourceLayer, SourceModel
from edgemerge.importers.source_model import JOIN_KINDS, MODEL_INPUT
from edgemerge.merging.align import AlignmentLink, LayerGroup, align_models
from edgemerge.merging.encode import GroupSpec, encode_groups, validate_rc

try:
    from edgemerge import __version__ as TOOL_VERSION
except ImportError:          # pragma: no cover - package without a version
    TOOL_VERSION = "0.1.0"


@dataclass(frozen=True)
class Preset:
    """Segment length r and codebook size C per layer role. Starting points from the paper's LeNet
    settings; a group shares one (r, C), and r is clipped to the deepest member's input depth."""
    first_conv_narrow: tuple[int, int]   # a model's first conv, input depth <= FIRST_CONV_NARROW_DEPTH
    first_conv_wide: tuple[int, int]     # a model's first conv on a deeper input
    conv: tuple[int, int]                # every other conv layer
    dense: tuple[int, int]               # dense layers (the head is never encoded)
    # every encoded layer with r > 1 uses C = 16 with int8 tables (docs/FORMAT.md "int8 tables")
    int8_tables: bool = False
    # (r, C) of a one-tap group of 1x1 convs whose per-segment codebooks would cost more than
    # 1/ONE_TAP_CODEBOOK_SHARE of its float weights (and at least ONE_TAP_SHARED_FROM_BYTES): ONE layer-shared
    # codebook [1, C, r] for all its segments instead (docs/FORMAT.md "Layer-shared codebooks"); None:
    # per-segment codebooks only. one_tap_shared_dense: groups of dense layers (not the head) too.
    one_tap_shared: tuple[int, int] | None = None
    one_tap_shared_dense: bool = False
    # one_tap_shared_when_smaller: share a group's codebook whenever the layer-shared codebook and its index
    # maps take fewer bytes than the per-segment ones (instead of the 1/8-of-the-weights rule above).
    one_tap_shared_when_smaller: bool = False
    # a group mixing one-tap layers with larger kernels shares a codebook only from this many float weight bytes
    mixed_shared_from_bytes: int = 32 * 1024
    # (r, C) of clustered depthwise kernels (LUT_DEPTHWISE_CONV2D): one codebook [1, C, r] per task, shared by
    # all that task's depthwise layers; r = 1 clusters single taps; None: depthwise layers stay float.
    depthwise: tuple[int, int] | None = None
    # (r, C) of a layer-shared codebook [1, C, r] for a task's head (its last dense layer, never merged across
    # tasks) whose float weights are at least HEAD_ENCODE_FROM_BYTES; None: heads stay float.
    head: tuple[int, int] | None = None


# A first conv on at most this many input channels (grey, RGB, RGBA) is encoded per channel (r = 1).
FIRST_CONV_NARROW_DEPTH = 4

# Kernels of one spatial tap (dense layers, point-wise 1x1 convs) have one segment vector per output channel,
# so a per-segment codebook of C codewords costs C / outputs of the float weights it replaces: C = 64 on the
# bundled words model's 1024x256 dense layer is a 256 KiB codebook, most of a merged file. Where such a codebook
# would pass ONE_TAP_CAP_FROM_BYTES, C is held to 1/ONE_TAP_CODEBOOK_SHARE of the group's vectors (a power of
# two, never below ONE_TAP_MIN_CODEWORDS). Smaller codebooks cost little in bytes and keep the preset's C (its
# accuracy); larger kernels have KH*KW vectors per output channel and are not capped.
ONE_TAP_CAP_FROM_BYTES = 128 * 1024
ONE_TAP_CODEBOOK_SHARE = 8
ONE_TAP_MIN_CODEWORDS = 32
# A preset's one_tap_shared applies to one-tap groups whose per-segment codebooks would cost more than
# 1/ONE_TAP_CODEBOOK_SHARE of their weights (the capped ones above cost exactly that and keep theirs) and at
# least this many bytes: below it, the pooled codebook saves nothing (MobileNetV2's first blocks: C is
# clipped to the few pooled vectors and the longer index map costs more than the codebook saves).
ONE_TAP_SHARED_FROM_BYTES = 4 * 1024
# Preset.mixed_shared_from_bytes: a group that mixes one-tap layers with larger kernels (a MobileNetV2 1x1 aligned
# with a ResNet 3x3) is shared only from that many float weight bytes on. accu (32 KiB): a smaller group's kxk
# member fits its per-segment codebooks better before calibration (tests/model_factory's trained trio loses 16
# points on one task at accu when its 17,696-byte conv2 + pw1 + a2 group is shared); examples/residual_pair's
# three mixed groups of 38 to 150 KB are shared (3.97x -> 4.5x). light (8 KiB), which relies on calibration:
# residual_pair's words task after 600 steps loses 2.14 points with 32 KiB, 1.64 with 8 KiB (all six shared).

# A head is encoded (Preset.head) only from this size on: a small head costs little as float and is the layer
# closest to the loss. A MobileNetV2's 1280 x 10 head is 51,200 bytes; the bundled LeNet's 1024 x 10 (40,960)
# and words model's heads stay float, so the bundled example's merges are unchanged.
HEAD_ENCODE_FROM_BYTES = 48 * 1024
# A task's depthwise layers are clustered (Preset.depthwise) only when their float weights together take at least
# this many bytes: below it the saving is a few KiB, and small depthwise layers (the stand-ins of the tests, the
# first blocks of a tiny net) keep their exact weights. A MobileNetV2 at alpha 0.35 has 93,888 bytes of them.
DEPTHWISE_ENCODE_FROM_BYTES = 16 * 1024

PRESETS: dict[str, Preset] = {
    # accuracy first: fine segments, large codebooks.
    # Groups of 1x1 convs whose per-segment codebooks would cost more than an eighth of their weights get one
    # layer-shared codebook (r, C) = (4, 256): measured on MobileNetV2 (alpha 0.35) + the words model, 300
    # calibration steps each: 1,063,144 -> 632,680 bytes (2.68x -> 4.50x the float originals) at equal or better
    # test accuracy (Fashion 87.20 -> 87.56 %, words 96.79 % both; originals 83.97 %, 96.57 %)
    # (examples/mobilenetv2_share/measure.py). Dense groups keep per-segment codebooks: no measured model had
    # a dense group that qualifies. The bundled fashion + words pair has no such group either.
    # Depthwise kernels clustered tap by tap, 32 codewords (5-bit indices, 14.7 KB for the 23,472 depthwise
    # weights of examples/residual_pair's MobileNetV2, relative error 0.05; docs/FORMAT.md "Clustered depthwise").
    "accu": Preset(first_conv_narrow=(1, 64), first_conv_wide=(4, 64), conv=(8, 128), dense=(16, 64),
                   one_tap_shared=(4, 256), depthwise=(1, 32)),
    # size first: long segments, small codebooks. Layer-shared codebooks (4, 256) as accu measured on the
    # mobilenetv2_share pair at light: 955,432 -> 575,784 bytes (2.98x -> 4.94x), Fashion 86.29 -> 87.10 %,
    # words 95.14 -> 95.21 %. For MobileNetV2-size graphs (examples/residual_pair, issue 15: light >= 8x the
    # float originals): layer-shared codebooks of 64 codewords wherever they take fewer bytes than per-segment
    # ones (the point-wise convs, their groups with another model's 3x3 convs, the 320 -> 1280 conv), depthwise
    # taps in 16 codewords (4-bit, relative error 0.09), and a head of 48 KiB or more with its own codebook
    # (r, C) = (4, 64). The bundled LeNet + words pair has no point-wise conv, depthwise conv or head that
    # large: its merge is unchanged.
    "light": Preset(first_conv_narrow=(1, 32), first_conv_wide=(4, 32), conv=(16, 64), dense=(32, 32),
                    one_tap_shared=(4, 64), one_tap_shared_when_smaller=True, mixed_shared_from_bytes=8 * 1024,
                    depthwise=(1, 16), head=(4, 64)),
    # light with 16 codewords, 4-bit indices and int8 tables in every layer that runs a table (r > 1): the
    # runtime looks tables up with byte shuffles (pshufb, vqtbl1q) and sums in integers. Layers with r = 1
    # (a narrow first conv) keep light's float setting: the runtime decodes them into a plain convolution,
    # which is faster than any table there, so int8 tables would cost accuracy for nothing.
    "light4": Preset(first_conv_narrow=(1, 32), first_conv_wide=(4, 16), conv=(16, 16), dense=(32, 16),
                     int8_tables=True),
}

_TASK_NAME = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass
class GroupReport:
    """What encoding one layer group produced."""
    name: str
    kind: str
    members: list[str]                       # "task:layer"
    seg_len: int                             # r
    codewords: int                           # C
    relative_error: dict[str, float]         # per member: ||W − Ŵ||_F / ||W||_F
    codebook_bytes: int
    index_bytes: int
    original_bytes: int                      # float32 bytes of the members' weights
    int8_tables: bool = False                # C = 16, int8 tables at run time
    shared_codebook: bool = False            # one layer-shared codebook [1, C, r] for every segment

    @property
    def bytes(self) -> int:
        return self.codebook_bytes + self.index_bytes

    def to_dict(self) -> dict:
        out = asdict(self)
        out["bytes"] = self.bytes
        return out


@dataclass
class MergeResult:
    graph: MergedGraph
    report: list[GroupReport] = field(default_factory=list)
    groups: list[LayerGroup] = field(default_factory=list)
    encode_seconds: float = 0.0              # k-means time of all groups together


def _is_first_conv(model: SourceModel, layer_name: str) -> bool:
    first = next((layer for layer in model.layers if layer.kind == "conv"), None)
    return first is not None and first.name == layer_name


def preset_rc(preset: Preset, group: LayerGroup, sources: Mapping[str, SourceModel]) -> tuple[int, int]:
    """(r, C) of a group from the preset; r is clipped to the deepest member's input depth, and C to the
    number of vectors a segment has (a larger codebook could only hold unused codewords)."""
    members = [sources[task].layer(layer) for task, layer in group.members.items()]
    depth = max(layer.depth for layer in members)
    # vectors per segment: one per (ky, kx, output channel) of every member
    vectors = sum(int(np.prod(layer.weights.shape)) // layer.depth for layer in members)
    if group.kind == "dense":
        r, c = preset.dense
    elif any(_is_first_conv(sources[task], layer) for task, layer in group.members.items()):
        r, c = preset.first_conv_narrow if depth <= FIRST_CONV_NARROW_DEPTH else preset.first_conv_wide
    else:
        r, c = preset.conv
    if (all(_is_one_tap(layer) for layer in members)
            and _per_segment_codebook_bytes(depth, min(r, depth), min(c, vectors)) > ONE_TAP_CAP_FROM_BYTES):
        c = min(c, max(ONE_TAP_MIN_CODEWORDS, _power_of_two_floor(vectors // ONE_TAP_CODEBOOK_SHARE)))
    return min(r, depth), max(2, min(c, vectors))


def shared_rc(preset: Preset, group: LayerGroup, sources: Mapping[str, SourceModel],
              rc: tuple[int, int]) -> tuple[int, int] | None:
    """(r, C) of a layer-shared codebook for the group, or None to keep per-segment codebooks `rc`: only
    for a preset with one_tap_shared, a group with a one-tap member (mixed with larger kernels: of at least
    the preset's mixed_shared_from_bytes float weights), per-segment codebooks of at least ONE_TAP_SHARED_FROM_BYTES, and
    then either (one_tap_shared_when_smaller) a shared setting that takes fewer codebook + index bytes, or
    per-segment codebooks that would cost more than 1/ONE_TAP_CODEBOOK_SHARE of the members' float weights
    (where sharing pays: MobileNetV2's expand and project convs). C is clipped to the pooled vectors, r to
    the deepest member's depth."""
    if preset.one_tap_shared is None or (group.kind == "dense" and not preset.one_tap_shared_dense):
        return None
    members = [sources[task].layer(layer) for task, layer in group.members.items()]
    # a group with at least one one-tap member: a point-wise conv aligned with another model's 3x3 conv (a
    # MobileNetV2 with a ResNet) would otherwise pay per-segment codebooks sized for the 3x3's many vectors
    if not any(_is_one_tap(layer) for layer in members):
        return None
    r, c = rc
    depth = max(layer.depth for layer in members)
    weight_bytes = sum(4 * int(layer.weights.size) for layer in members)
    if not all(_is_one_tap(layer) for layer in members) and weight_bytes < preset.mixed_shared_from_bytes:
        return None
    per_segment_bytes = _per_segment_codebook_bytes(depth, r, c)
    shared_r, shared_c = preset.one_tap_shared
    shared_r = min(shared_r, depth)
    pooled = sum(int(layer.weights.size) // layer.depth * -(-layer.depth // shared_r) for layer in members)
    shared = shared_r, max(2, min(shared_c, pooled))
    if per_segment_bytes < ONE_TAP_SHARED_FROM_BYTES:     # below it a shared codebook saves nothing worth it
        return None
    if preset.one_tap_shared_when_smaller:
        def total(r_: int, c_: int, codebook_bytes: int) -> int:
            vectors = sum(int(layer.weights.size) // layer.depth * -(-layer.depth // r_) for layer in members)
            return codebook_bytes + (vectors * index_bits(c_) + 7) // 8
        smaller = total(*shared, 4 * shared[0] * shared[1]) < total(r, c, per_segment_bytes)
        return shared if smaller else None
    if per_segment_bytes <= weight_bytes // ONE_TAP_CODEBOOK_SHARE:
        return None
    return shared


def _per_segment_codebook_bytes(depth: int, r: int, c: int) -> int:
    """Float32 bytes of per-segment codebooks: S = ceil(depth / r) segments x C codewords x r values."""
    return 4 * -(-depth // r) * c * r


def _is_one_tap(layer: SourceLayer) -> bool:
    """A dense layer or a 1x1 conv: one segment vector per output channel (ONE_TAP_CODEBOOK_SHARE)."""
    return layer.weights.ndim == 2 or tuple(layer.weights.shape[:2]) == (1, 1)


def _power_of_two_floor(n: int) -> int:
    return 1 << (max(1, int(n)).bit_length() - 1)


def _resolve_layer_rc(layer_rc: Mapping[str, tuple], groups: Sequence[LayerGroup],
                      sources: Mapping[str, SourceModel]) -> dict[int, tuple]:
    """Maps every `layer_rc` key ("task:layer", a bare layer name, or a group name) to its group's index and
    its (r, C), or (r, C, True) for a layer-shared codebook."""
    by_key: dict[str, set[int]] = {}
    for i, group in enumerate(groups):
        by_key.setdefault(group.name, set()).add(i)
        for task, layer in group.members.items():
            by_key.setdefault(f"{task}:{layer}", set()).add(i)
            by_key.setdefault(layer, set()).add(i)
    resolved: dict[int, tuple] = {}
    for key, rc in layer_rc.items():
        try:
            if isinstance(rc, str) or len(rc) not in (2, 3) or (len(rc) == 3 and not isinstance(rc[2], bool)):
                raise ValueError
            r, c = (int(v) for v in rc[:2])
        except (TypeError, ValueError):
            raise EdgemergeError(f"layer_rc {key!r}: expected (r, C) or (r, C, shared), got {rc!r}") from None
        setting = (r, c, True) if len(rc) == 3 and rc[2] else (r, c)
        try:
            validate_rc(r, c, where=f"layer_rc {key!r}")
        except ValueError as e:
            raise EdgemergeError(str(e)) from None
        hits = by_key.get(key)
        if not hits:
            task, _, layer = key.partition(":")
            model = sources.get(task)
            if model is not None and any(l.name == layer for l in model.layers):
                raise EdgemergeError(f"layer_rc {key!r}: that layer is not encoded (only conv layers and dense "
                                     "layers other than the head share codebooks)")
            raise EdgemergeError(f"layer_rc {key!r}: no merged layer of that name (merged layers: "
                                 f"{', '.join(str(ref) for g in groups for ref in g.refs())})")
        if len(hits) > 1:
            raise EdgemergeError(f"layer_rc {key!r}: the name is ambiguous, it names layers of "
                                 f"{len(hits)} groups; use TASK:LAYER")
        group_index = next(iter(hits))
        if group_index in resolved and resolved[group_index] != setting:
            raise EdgemergeError(f"layer_rc {key!r}: group {groups[group_index].name!r} is given two different "
                                 f"settings, {resolved[group_index]} and {setting}")
        resolved[group_index] = setting
    return resolved


def _resolve_int8_tables(names: Sequence[str], groups: Sequence[LayerGroup],
                         sources: Mapping[str, SourceModel]) -> set[int]:
    """Group indices named by `names` (as for layer_rc: "task:layer", a unique layer name, a group name)."""
    chosen: set[int] = set()
    for name in names:
        try:
            chosen.update(_resolve_layer_rc({name: (1, 16)}, groups, sources))
        except EdgemergeError as e:
            raise EdgemergeError(str(e).replace("layer_rc", "int8_tables", 1)) from None
    return chosen


def _int8_rc(group: LayerGroup, rc: tuple[int, int], sources: Mapping[str, SourceModel], explicit: bool,
             overridden: bool) -> tuple[int, int] | None:
    """(r, 16) for a group that gets int8 tables, or None where it does not. A group named explicitly must be
    able to (at least 16 vectors per segment for k-means' 16 codewords, no layer_rc with C != 16); one that
    a blanket rule picked ("all", the light4 preset) is skipped instead."""
    r, c = rc
    if overridden and c != INT8_TABLE_CODEWORDS:
        if not explicit:         # a blanket rule yields to an explicit layer_rc (e.g. an r/C search)
            return None
        raise EdgemergeError(f"group {group.name!r}: int8 tables need C = {INT8_TABLE_CODEWORDS}, layer_rc gives "
                             f"C = {c}")
    members = [sources[task].layer(layer) for task, layer in group.members.items()]
    vectors = sum(int(np.prod(layer.weights.shape)) // layer.depth for layer in members)
    if vectors < INT8_TABLE_CODEWORDS:
        if explicit:
            raise EdgemergeError(f"group {group.name!r}: int8 tables need 16 codewords, the group has only "
                                 f"{vectors} vectors per segment")
        return None
    return r, INT8_TABLE_CODEWORDS


def _check_sources(sources: Mapping[str, SourceModel]) -> None:
    if not sources:
        raise EdgemergeError("nothing to merge: no source models")
    if len(sources) > MAX_TASKS:
        raise EdgemergeError(f"{len(sources)} models exceed the limit of {MAX_TASKS} tasks")
    for task, model in sources.items():
        if not _TASK_NAME.fullmatch(task) or len(task.encode()) >= TASK_NAME_BYTES:
            raise EdgemergeError(f"task name {task!r}: 1..{TASK_NAME_BYTES - 1} characters of "
                                 "[A-Za-z0-9_.-] required")
        if not model.layers:
            raise EdgemergeError(f"task {task!r}: model {model.name!r} has no layers")
        try:
            model.check_topology()
        except ValueError as e:
            raise EdgemergeError(f"task {task!r}: {e}") from None


def depthwise_groups(sources: Mapping[str, SourceModel],
                     setting: tuple[int, int] | None) -> list[tuple[str, GroupSpec]]:
    """(name, spec) of the clustered depthwise codebooks, one per task: every depthwise layer's weights as
    [KH·KW, Cin·M] (a dense-like layer whose r-tap segments are the vectors; one layer-shared codebook [1, C, r]),
    `setting` = (r, C), r cut to the largest divisor of each kernel's taps (a layer whose taps r does not divide
    gets r = 1), C clipped to the number of vectors; only tasks whose depthwise weights take at least
    DEPTHWISE_ENCODE_FROM_BYTES. Empty when `setting` is None."""
    if setting is None:
        return []
    r, codewords = setting
    out = []
    for task, model in sources.items():
        depthwise_bytes = sum(4 * layer.weights.size for layer in model.layers if layer.kind == "depthwise")
        if depthwise_bytes < DEPTHWISE_ENCODE_FROM_BYTES:
            continue
        by_r: dict[int, dict[str, np.ndarray]] = {}
        for layer in model.layers:
            if layer.kind == "depthwise":
                kh, kw = layer.weights.shape[:2]
                seg = r if (kh * kw) % r == 0 else 1
                by_r.setdefault(seg, {})[f"{task}:{layer.name}"] = layer.weights.reshape(kh * kw, -1)
        for seg, weights in by_r.items():
            vectors = sum(w.size // seg for w in weights.values())
            out.append((f"{task}:depthwise" + ("" if len(by_r) == 1 else f"-r{seg}"),
                        GroupSpec(weights, seg, max(2, min(codewords, vectors)), shared=True)))
    return out


def head_groups(sources: Mapping[str, SourceModel], setting: tuple[int, int] | None) -> list[tuple[str, GroupSpec]]:
    """(name, spec) of the encoded heads: each task's head of at least HEAD_ENCODE_FROM_BYTES float bytes alone
    with one layer-shared codebook [1, C, r], `setting` = (r, C), r cut to the head's input size and C to its
    segment vectors. Empty when `setting` is None."""
    if setting is None:
        return []
    out = []
    for task, model in sources.items():
        head = model.head
        if head is None or head.kind != "dense" or 4 * head.weights.size < HEAD_ENCODE_FROM_BYTES:
            continue
        r = min(setting[0], head.weights.shape[0])
        vectors = -(-head.weights.shape[0] // r) * head.weights.shape[1]
        out.append((f"{task}:{head.name}",
                    GroupSpec({f"{task}:{head.name}": head.weights}, r, max(2, min(setting[1], vectors)), shared=True)))
    return out


def _index_bytes(index: np.ndarray, codewords: int) -> int:
    return (int(index.size) * index_bits(codewords) + 7) // 8


# Source-layer kinds that read no weights, by the op that computes them (joins and PAD: format v2).
_PLAIN_OPS: dict[str, Op] = {"max_pool": Op.MAX_POOL, "avg_pool": Op.AVG_POOL, "global_avg_pool": Op.GLOBAL_AVG_POOL,
                             "flatten": Op.RESHAPE, "activation": Op.ACTIVATION, "add": Op.ADD,
                             "concat": Op.CONCAT, "mul": Op.MUL, "pad": Op.PAD}


def _add_layer_node(graph: MergedGraph, task: str, layer: SourceLayer, values: Sequence[int], *, is_head: bool,
                    lut: tuple[int, int, int, np.ndarray] | None, int8_tables: bool = False,
                    depthwise_lut: tuple[int, int, int, np.ndarray] | None = None) -> int:
    """Appends the node of one source layer reading `values` (one value id, or every input of a join in
    order); `lut` = (codebook tensor id, r, C, index map) for encoded layers, `depthwise_lut` likewise for a
    clustered depthwise layer (index map [Cin, M]). Returns the value id the node produces."""
    prefix = f"{task}/{layer.name}"
    node = Node(name=prefix, op=Op.RESHAPE, input=values[0], out_shape=tuple(layer.out_shape),
                activation=layer.activation, sources=(f"{task}:{layer.name}",),
                match_output=f"{task}:{layer.match_output}" if layer.match_output else "")
    if layer.kind in ("conv", "depthwise", "max_pool", "avg_pool"):
        node.kernel, node.stride, node.pads = tuple(layer.kernel), tuple(layer.stride), tuple(layer.pads)
    elif layer.kind == "pad":
        node.pads = tuple(layer.pads)          # FORMAT.md: PAD keeps kernel/stride 1
    if len(values) > 1:
        if layer.kind not in JOIN_KINDS:       # defensive: SourceModel.inputs_of gives one name otherwise
            raise EdgemergeError(f"{task}:{layer.name}: a {layer.kind} layer reads one input, not {len(values)}")
        node.inputs = tuple(values)

    def bias_tensor(size: int) -> int:
        bias = layer.bias if layer.bias is not None else np.zeros(size, np.float32)
        return graph.add_tensor(Tensor.f32(f"{prefix}/bias", bias))

    if layer.kind in ("conv", "dense") and (not is_head or lut is not None):
        if lut is None:
            raise EdgemergeError(f"{task}:{layer.name} is in no layer group")   # defensive: align covers all
        codebook, r, c, index = lut
        node.op = Op.LUT_CONV2D if layer.kind == "conv" else Op.LUT_DENSE
        node.seg_len, node.codewords, node.weight = r, c, codebook
        node.index = graph.add_tensor(Tensor.index(f"{prefix}/index", index, c))
        node.flags = NODE_FLAG_INT8_TABLES if int8_tables else 0
        node.bias = bias_tensor(layer.out_shape[2])       # always present for LUT ops (zeros if none)
    elif layer.kind == "depthwise" and depthwise_lut is not None:
        codebook, r, c, index = depthwise_lut
        node.op = Op.LUT_DEPTHWISE_CONV2D
        node.seg_len, node.codewords, node.weight = r, c, codebook
        node.index = graph.add_tensor(Tensor.index(f"{prefix}/index", index, c))
        node.bias = bias_tensor(layer.out_shape[2]) if layer.bias is not None else NONE
    elif layer.kind in ("dense", "depthwise"):
        node.op = Op.DENSE if layer.kind == "dense" else Op.DEPTHWISE_CONV2D
        node.weight = graph.add_tensor(Tensor.f32(f"{prefix}/weights", layer.weights))
        node.bias = bias_tensor(layer.out_shape[2]) if layer.bias is not None else NONE
    elif layer.kind == "conv":
        raise EdgemergeError(f"{task}:{layer.name}: a conv layer cannot be a head")   # defensive
    else:
        node.op = _PLAIN_OPS[layer.kind]
    return graph.add_node(node)


def _write_metadata(graph: MergedGraph, sources: Mapping[str, SourceModel], preset: str, seed: int,
                    kmeans_inits: int) -> None:
    """The META keys of docs/FORMAT.md."""
    meta = source_metadata({task: (model.path.name, model.param_bytes) for task, model in sources.items()})
    meta.update(graph.name_metadata())
    meta[Keys.Merge.PRESET] = preset
    meta[Keys.Merge.SEED] = int(seed)
    meta[Keys.Merge.KMEANS_INITS] = int(kmeans_inits)
    graph.metadata.update(meta)


def source_metadata(sources: Mapping[str, tuple[str, int]]) -> dict[str, int | float | str]:
    """The provenance keys every written model carries: tool version, original size, and per source task
    (in task order) its file name and parameter bytes. `sources`: task -> (file name, parameter bytes)."""
    meta: dict[str, int | float | str] = {
        Keys.General.TOOL_VERSION: str(TOOL_VERSION),
        Keys.General.ORIGINAL_BYTES: int(sum(param_bytes for _, param_bytes in sources.values())),
        Keys.Source.COUNT: len(sources),
    }
    for i, (task, (file_name, param_bytes)) in enumerate(sources.items()):
        meta[Keys.Source.TASK.format(i=i)] = task
        meta[Keys.Source.FILE.format(i=i)] = file_name
        meta[Keys.Source.PARAM_BYTES.format(i=i)] = int(param_bytes)
    return meta


def merge_models(sources: Mapping[str, SourceModel], preset: str = "accu",
                 layer_rc: Mapping[str, tuple[int, int]] | None = None,
                 alignment: Sequence[AlignmentLink] | Sequence[str] | None = None, seed: int = 0,
                 kmeans_inits: int = 4, n_jobs: int | None = None,
                 int8_tables: Sequence[str] | None = None) -> MergeResult:
    """Merges `sources` (task -> imported model, in task order) into one multi-task graph.

    preset: a key of PRESETS ("accu" or "light") giving (r, C) per layer role.
    layer_rc: per-group overrides {name: (r, C)} or {name: (r, C, True)} for a layer-shared codebook; a name
        is any member's "task:layer", a layer name that is unique, or a group name. r is used as given
        (1..256), C in 2..65536.
    alignment: explicit alignment links (`align.parse_alignment`, or the raw "a:x=b:y" strings); None for
        the default in-order alignment.
    seed, kmeans_inits: k-means initialisations per segment and their seed (lowest inertia kept).
    n_jobs: k-means worker processes (see `encode.encode_groups`).
    int8_tables: groups (named as for layer_rc, or "all") encoded with C = 16 and flagged for int8 tables at
        run time (docs/FORMAT.md "int8 tables"); a preset with int8_tables (light4) flags every group.
    """
    _check_sources(sources)
    if preset not in PRESETS:
        raise EdgemergeError(f"unknown preset {preset!r} (presets: {', '.join(PRESETS)})")
    if kmeans_inits < 1:
        raise EdgemergeError(f"kmeans_inits={kmeans_inits}: at least one k-means initialisation is needed")
    groups = align_models(sources, alignment)
    overrides = _resolve_layer_rc(layer_rc or {}, groups, sources)
    settings: list[tuple[int, int]] = []
    shared_groups: set[int] = set()
    for i, group in enumerate(groups):
        if i in overrides:
            settings.append(tuple(overrides[i][:2]))
            if len(overrides[i]) == 3:
                shared_groups.add(i)
            continue
        rc = preset_rc(PRESETS[preset], group, sources)
        shared = shared_rc(PRESETS[preset], group, sources, rc)
        settings.append(shared or rc)
        if shared:
            shared_groups.add(i)
    int8_names = list(int8_tables or [])
    named_int8 = _resolve_int8_tables([n for n in int8_names if n != "all"], groups, sources)
    int8_groups: set[int] = set()
    for i, group in enumerate(groups):
        if i in named_int8 or "all" in int8_names or (PRESETS[preset].int8_tables and settings[i][0] > 1):
            rc = _int8_rc(group, settings[i], sources, explicit=i in named_int8, overridden=i in overrides)
            if rc is not None:
                settings[i] = rc
                int8_groups.add(i)

    started = time.perf_counter()
    specs = [GroupSpec({f"{task}:{layer}": sources[task].layer(layer).weights for task, layer in g.members.items()},
                       r, c, shared=i in shared_groups) for i, (g, (r, c)) in enumerate(zip(groups, settings))]
    depthwise = depthwise_groups(sources, PRESETS[preset].depthwise)
    heads = head_groups(sources, PRESETS[preset].head)
    extra = [spec for _, spec in depthwise + heads]
    encoded_all = encode_groups(specs + extra, seed=seed, kmeans_inits=kmeans_inits, n_jobs=n_jobs)
    encoded = encoded_all[:len(specs)]
    encoded_depthwise = encoded_all[len(specs):len(specs) + len(depthwise)]
    encoded_heads = encoded_all[len(specs) + len(depthwise):]
    seconds = time.perf_counter() - started

    graph = MergedGraph()
    codebook_ids = [graph.add_tensor(Tensor.f32(f"codebook/{g.name}", e.codebook)) for g, e in zip(groups, encoded)]
    lut_of: dict[str, tuple[int, int, int, np.ndarray]] = {}
    int8_of: set[str] = set()
    report = []
    for gi, (group, enc, codebook_id) in enumerate(zip(groups, encoded, codebook_ids)):
        members = [f"{task}:{layer}" for task, layer in group.members.items()]
        if gi in int8_groups:
            int8_of.update(members)
        for ref in members:
            lut_of[ref] = (codebook_id, enc.seg_len, enc.codewords, enc.layers[ref].index)
        report.append(GroupReport(
            name=group.name, kind=group.kind, members=members, seg_len=enc.seg_len, codewords=enc.codewords,
            relative_error={ref: enc.layers[ref].relative_error for ref in members},
            codebook_bytes=4 * enc.codebook.size,
            index_bytes=sum(_index_bytes(enc.layers[ref].index, enc.codewords) for ref in members),
            original_bytes=sum(4 * sources[t].layer(l).weights.size for t, l in group.members.items()),
            int8_tables=gi in int8_groups, shared_codebook=gi in shared_groups))

    for (name, spec), enc in zip(heads, encoded_heads):
        (ref,) = spec.weights
        lut_of[ref] = (graph.add_tensor(Tensor.f32(f"codebook/{name}", enc.codebook)), enc.seg_len, enc.codewords,
                       enc.layers[ref].index)
        report.append(GroupReport(
            name=name, kind="dense", members=[ref], seg_len=enc.seg_len, codewords=enc.codewords,
            relative_error={ref: enc.layers[ref].relative_error}, codebook_bytes=4 * enc.codebook.size,
            index_bytes=_index_bytes(enc.layers[ref].index, enc.codewords),
            original_bytes=4 * spec.weights[ref].size, shared_codebook=True))
    depthwise_of: dict[str, tuple[int, int, int, np.ndarray]] = {}
    for (name, spec), enc in zip(depthwise, encoded_depthwise):
        codebook_id = graph.add_tensor(Tensor.f32(f"codebook/{name}", enc.codebook))
        for ref in spec.weights:
            kh, kw, cin, m = sources[ref.partition(":")[0]].layer(ref.partition(":")[2]).weights.shape
            index = enc.layers[ref].index.reshape(kh * kw // enc.seg_len, cin, m)
            depthwise_of[ref] = (codebook_id, enc.seg_len, enc.codewords, index)
        report.append(GroupReport(
            name=name, kind="depthwise", members=list(spec.weights), seg_len=enc.seg_len, codewords=enc.codewords,
            relative_error={ref: enc.layers[ref].relative_error for ref in spec.weights},
            codebook_bytes=4 * enc.codebook.size,
            index_bytes=sum(_index_bytes(enc.layers[ref].index, enc.codewords) for ref in spec.weights),
            original_bytes=sum(4 * w.size for w in spec.weights.values()), shared_codebook=True))

    # All inputs first: value ids of nodes count from the number of inputs.
    input_of = {task: graph.add_input(model.input_shape) for task, model in sources.items()}
    for task, model in sources.items():
        # each task's nodes follow its DAG: a layer reads the values of the layers it names (MODEL_INPUT: the
        # task's input); for a chain that is the node before, i.e. exactly the graphs of format v1
        value_of = {MODEL_INPUT: input_of[task]}
        head = model.head
        value = input_of[task]
        for position, layer in enumerate(model.layers):
            value = _add_layer_node(graph, task, layer, [value_of[n] for n in model.inputs_of(position)],
                                    is_head=layer is head, lut=lut_of.get(f"{task}:{layer.name}"),
                                    int8_tables=f"{task}:{layer.name}" in int8_of,
                                    depthwise_lut=depthwise_of.get(f"{task}:{layer.name}"))
            value_of[layer.name] = value
        graph.tasks.append(Task(task, input_of[task], value, int(np.prod(graph.value_shape(value)))))
    _write_metadata(graph, sources, preset, seed, kmeans_inits)
    if int8_groups:
        graph.metadata[Keys.Merge.INT8_TABLES] = ",".join(groups[i].name for i in sorted(int8_groups))
    if shared_groups:
        graph.metadata[Keys.Merge.SHARED_CODEBOOKS] = ",".join(groups[i].name for i in sorted(shared_groups))
    return MergeResult(graph, report, list(groups), encode_seconds=round(seconds, 3))
