"""Which layers of which models share a codebook: the layer alignment.

Mergeable layers are a model's conv layers and its dense layers except the last dense layer (the task's
branch head, kept as float). Depthwise convolutions are never merged. On graphs (residual, branching) the
same rules hold in the layers' topological order (SourceModel.layers): shortcut/projection convs are convs
like any other, and point-wise 1x1 convs are E-Conv layers with r over Cin (README "Point-wise and
depthwise layers" has the size figures behind that choice). An alignment is a list of
`LayerGroup`s; each maps task -> layer name, its members are all of one kind (conv with conv, dense with
dense), no layer is in two groups, and for every pair of tasks the groups they share keep both models'
layer order (strictly increasing). Every mergeable layer is in exactly one group; a group with one member
just has its own codebook.

Default alignment (`align_models(sources)`): the i-th conv layers of all models form group i, as far as
each model goes, and likewise the dense layers; a deeper model's leftover layers get groups of their own.
With more than two models each further model is aligned against the groups built so far.

Explicit alignment (`parse_alignment(["fashion:conv1=words:c1", ...])`): exactly the listed layers are
merged (a link may chain several tasks: "a:c1=b:c1=c:conv"); every other mergeable layer gets its own group.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Literal, Mapping, Sequence

from edgemerge.errors import AlignmentError
from edgemerge.importers import SourceLayer, SourceModel

MergeKind = Literal["conv", "dense"]
MERGE_KINDS: tuple[str, ...] = ("conv", "dense")


@dataclass(frozen=True)
class LayerRef:
    """A layer of one task's model, written "task:layer"."""
    task: str
    layer: str

    def __str__(self) -> str:
        return f"{self.task}:{self.layer}"


# One explicit alignment item: layers (of different tasks) to merge into one group.
AlignmentLink = tuple[LayerRef, ...]


@dataclass
class LayerGroup:
    """Layers of several tasks that share one codebook (and therefore one segment length r and size C)."""
    kind: MergeKind
    members: dict[str, str] = field(default_factory=dict)     # task -> layer name, in task order
    name: str = ""

    def refs(self) -> list[LayerRef]:
        return [LayerRef(task, layer) for task, layer in self.members.items()]

    def __str__(self) -> str:
        return "=".join(str(ref) for ref in self.refs())


def mergeable_layers(model: SourceModel, kind: MergeKind | None = None) -> list[SourceLayer]:
    """The layers of `model` that can share codebooks: conv layers and non-head dense layers, in order."""
    head = model.head
    return [layer for layer in model.layers
            if layer.kind in MERGE_KINDS and layer is not head and (kind is None or layer.kind == kind)]


def parse_layer_ref(text: str) -> LayerRef:
    task, sep, layer = text.strip().partition(":")
    if not sep or not task or not layer:
        raise AlignmentError(f"alignment item {text!r}: expected TASK:LAYER")
    return LayerRef(task, layer)


def parse_alignment(items: Sequence[str]) -> list[AlignmentLink]:
    """Parses explicit alignment items "TASK:LAYER=TASK:LAYER[=TASK:LAYER...]" (e.g. from the CLI).
    Only the syntax is checked here; `align_models` checks the layers against the models."""
    if isinstance(items, str):
        items = [items]
    links: list[AlignmentLink] = []
    seen: set[frozenset[LayerRef]] = set()
    for item in items:
        parts = item.split("=")
        if len(parts) < 2:
            raise AlignmentError(f"alignment item {item!r}: expected TASK:LAYER=TASK:LAYER")
        link = tuple(parse_layer_ref(p) for p in parts)
        tasks = [ref.task for ref in link]
        repeated = sorted({t for t in tasks if tasks.count(t) > 1})
        if repeated:
            raise AlignmentError(f"alignment item {item!r}: more than one layer of task {repeated[0]!r}; "
                                 "a group merges layers of different tasks")
        if frozenset(link) in seen:
            raise AlignmentError(f"alignment item {item!r} is given twice")
        seen.add(frozenset(link))
        links.append(link)
    return links


def _default_groups(sources: Mapping[str, SourceModel]) -> list[LayerGroup]:
    groups_by_kind: dict[str, list[LayerGroup]] = {kind: [] for kind in MERGE_KINDS}
    for task, model in sources.items():
        for kind in MERGE_KINDS:
            existing = groups_by_kind[kind]
            for i, layer in enumerate(mergeable_layers(model, kind)):   # i-th layer joins the i-th group
                if i == len(existing):
                    existing.append(LayerGroup(kind))
                existing[i].members[task] = layer.name
    return groups_by_kind["conv"] + groups_by_kind["dense"]


def _check_ref(sources: Mapping[str, SourceModel], ref: LayerRef) -> SourceLayer:
    model = sources.get(ref.task)
    if model is None:
        raise AlignmentError(f"alignment: unknown task {ref.task!r} in {ref} (tasks: {', '.join(sources)})")
    mergeable = mergeable_layers(model)
    try:
        layer = model.layer(ref.layer)
    except KeyError:
        raise AlignmentError(f"alignment: task {ref.task!r} has no layer {ref.layer!r} (mergeable layers: "
                             f"{', '.join(l.name for l in mergeable) or 'none'})") from None
    if layer is model.head:
        raise AlignmentError(f"alignment: {ref} is the task's head (its last dense layer), which stays per "
                             "task and is never merged")
    if layer.kind not in MERGE_KINDS:
        raise AlignmentError(f"alignment: {ref} is a {layer.kind} layer; only conv and dense layers merge "
                             f"(mergeable layers of {ref.task!r}: {', '.join(l.name for l in mergeable)})")
    return layer


def _explicit_groups(sources: Mapping[str, SourceModel], links: Sequence[AlignmentLink]) -> list[LayerGroup]:
    # Union the links into groups: a link sharing a layer with an earlier group extends it.
    group_of: dict[LayerRef, LayerGroup] = {}
    for link in links:
        kinds = {str(ref): _check_ref(sources, ref).kind for ref in link}
        if len(set(kinds.values())) > 1:
            raise AlignmentError(f"alignment {'='.join(map(str, link))}: layers of different kinds cannot merge ("
                                 + ", ".join(f"{ref} is {kind}" for ref, kind in kinds.items()) + ")")
        joined = {id(group_of[ref]): group_of[ref] for ref in link if ref in group_of}
        group = LayerGroup(kinds[str(link[0])])
        for ref in [ref for old in joined.values() for ref in old.refs()] + list(link):
            if group.members.get(ref.task, ref.layer) != ref.layer:
                raise AlignmentError(f"alignment: {ref} and {ref.task}:{group.members[ref.task]} would merge into "
                                     f"one group (through {'='.join(map(str, link))}); a layer can be aligned "
                                     "with at most one layer of each other task")
            group.members[ref.task] = ref.layer
        for ref in group.refs():
            group_of[ref] = group
    # Remaining mergeable layers get their own groups; groups are listed in first-use order.
    groups: list[LayerGroup] = []
    listed: set[int] = set()
    for task, model in sources.items():
        for layer in mergeable_layers(model):
            ref = LayerRef(task, layer.name)
            group = group_of.setdefault(ref, LayerGroup(layer.kind, {task: layer.name}))
            if id(group) not in listed:
                listed.add(id(group))
                groups.append(group)
    for group in groups:      # members in task order
        group.members = {task: group.members[task] for task in sources if task in group.members}
    return groups


def check_order(sources: Mapping[str, SourceModel], groups: Sequence[LayerGroup]) -> None:
    """Raises AlignmentError unless, for every pair of tasks, the groups holding both keep both orders."""
    for task_a, task_b in itertools.combinations(sources, 2):
        shared = [g for g in groups if task_a in g.members and task_b in g.members]
        position_a = sources[task_a].position
        position_b = sources[task_b].position
        shared.sort(key=lambda g: position_a(g.members[task_a]))
        for before, after in zip(shared, shared[1:]):
            if position_b(after.members[task_b]) <= position_b(before.members[task_b]):
                raise AlignmentError(
                    f"alignment crosses: {task_a}:{before.members[task_a]}={task_b}:{before.members[task_b]} and "
                    f"{task_a}:{after.members[task_a]}={task_b}:{after.members[task_b]}; aligned layers must "
                    "keep the layer order of both models")


def _name_groups(groups: Sequence[LayerGroup]) -> None:
    """Group names (codebook tensors are "codebook/<name>"): the layer name where all members share it and
    no other group claims it, else the members joined, e.g. "fashion:conv1+words:c1"."""
    common = [next(iter(set(g.members.values()))) if len(set(g.members.values())) == 1 else None for g in groups]
    for group, name in zip(groups, common):
        unique = name is not None and common.count(name) == 1
        group.name = name if unique else "+".join(str(ref) for ref in group.refs())


def align_models(sources: Mapping[str, SourceModel],
                 links: Sequence[AlignmentLink] | Sequence[str] | None = None) -> list[LayerGroup]:
    """The layer groups for merging `sources` (task -> model): the default in-order alignment, or exactly
    the explicit `links` (from `parse_alignment`, or the raw strings) with every other layer on its own."""
    if links:
        if all(isinstance(link, str) for link in links):
            links = parse_alignment(list(links))
        groups = _explicit_groups(sources, links)
    else:
        groups = _default_groups(sources)
    check_order(sources, groups)
    _name_groups(groups)
    return groups
