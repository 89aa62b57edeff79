"""Layer alignment: the default in-order pairing, explicit alignments, and what is rejected."""
from __future__ import annotations

import itertools

import pytest
from synthetic_models import chain_model, conv, dense, flatten, gap, lenet_like, mobile_like

from edgemerge.emm.constants import Act
from edgemerge.errors import AlignmentError, EdgemergeError
from edgemerge.merging.align import LayerRef, align_models, check_order, mergeable_layers, parse_alignment


def members(groups):
    return [(g.kind, dict(g.members)) for g in groups]


@pytest.fixture
def two():
    return {"a": lenet_like("a"), "b": mobile_like("b")}


def test_mergeable_layers_skip_heads_and_depthwise(two):
    assert [l.name for l in mergeable_layers(two["a"])] == ["c1", "c2", "d1"]
    assert [l.name for l in mergeable_layers(two["b"])] == ["k1", "k2", "k3", "e1", "e2"]
    assert [l.name for l in mergeable_layers(two["b"], "dense")] == ["e1", "e2"]


def test_default_pairs_in_order_and_leaves_leftovers_alone(two):
    groups = align_models(two)
    assert members(groups) == [
        ("conv", {"a": "c1", "b": "k1"}),
        ("conv", {"a": "c2", "b": "k2"}),
        ("conv", {"b": "k3"}),                  # the deeper model's leftover: own codebook
        ("dense", {"a": "d1", "b": "e1"}),
        ("dense", {"b": "e2"}),
    ]
    assert [g.name for g in groups] == ["a:c1+b:k1", "a:c2+b:k2", "k3", "a:d1+b:e1", "e2"]


def test_default_with_three_models_is_incremental(two):
    third = chain_model("c", (8, 8, 2), [conv("k1", 4), flatten(), dense("f1", 8), dense("f2", 8),
                                         dense("f3", 8), dense("head", 3, act=Act.NONE)])
    groups = align_models({**two, "c": third})
    assert members(groups) == [
        ("conv", {"a": "c1", "b": "k1", "c": "k1"}),
        ("conv", {"a": "c2", "b": "k2"}),
        ("conv", {"b": "k3"}),
        ("dense", {"a": "d1", "b": "e1", "c": "f1"}),
        ("dense", {"b": "e2", "c": "f2"}),
        ("dense", {"c": "f3"}),
    ]
    # group names: a shared layer name that no other group uses names the group
    assert groups[2].name == "k3" and groups[5].name == "f3"
    assert groups[0].name == "a:c1+b:k1+c:k1"


def test_model_whose_only_dense_is_the_head():
    only_head = chain_model("h", (8, 8, 1), [conv("x1", 4), gap(), dense("out", 2, act=Act.NONE)])
    other = lenet_like("a")
    groups = align_models({"h": only_head, "a": other})
    assert members(groups) == [("conv", {"h": "x1", "a": "c1"}), ("conv", {"a": "c2"}), ("dense", {"a": "d1"})]


def test_every_mergeable_layer_is_in_exactly_one_group(two):
    for groups in (align_models(two), align_models(two, parse_alignment(["a:c2=b:k3"]))):
        refs = [ref for g in groups for ref in g.refs()]
        assert len(refs) == len(set(refs))
        assert set(refs) == {LayerRef(t, l.name) for t, m in two.items() for l in mergeable_layers(m)}
        check_order(two, groups)


# -- explicit alignment -----------------------------------------------------------------------------
def test_parse_alignment():
    links = parse_alignment(["fashion:conv1=words:c1", "fashion:fc1=words:d1=third:x"])
    assert links == [(LayerRef("fashion", "conv1"), LayerRef("words", "c1")),
                     (LayerRef("fashion", "fc1"), LayerRef("words", "d1"), LayerRef("third", "x"))]


@pytest.mark.parametrize("items,message", [
    (["a:c1"], "expected TASK:LAYER=TASK:LAYER"),
    (["a:c1=b"], "expected TASK:LAYER"),
    (["a:c1=:k1"], "expected TASK:LAYER"),
    (["a:c1=a:c2"], "more than one layer of task 'a'"),
    (["a:c1=b:k1", "b:k1=a:c1"], "is given twice"),
])
def test_parse_alignment_rejects(items, message):
    with pytest.raises(AlignmentError, match=message):
        parse_alignment(items)


def test_explicit_merges_exactly_the_given_pairs(two):
    groups = align_models(two, parse_alignment(["a:c1=b:k2", "a:d1=b:e2"]))
    assert members(groups) == [
        ("conv", {"a": "c1", "b": "k2"}),
        ("conv", {"a": "c2"}),
        ("dense", {"a": "d1", "b": "e2"}),
        ("conv", {"b": "k1"}),
        ("conv", {"b": "k3"}),
        ("dense", {"b": "e1"}),
    ]
    # raw strings are accepted too
    assert members(align_models(two, ["a:c1=b:k2", "a:d1=b:e2"])) == members(groups)


def test_explicit_chains_three_tasks(two):
    third = lenet_like("c", seed=5)
    groups = align_models({**two, "c": third}, parse_alignment(["a:c1=b:k1", "b:k1=c:c2"]))
    assert ("conv", {"a": "c1", "b": "k1", "c": "c2"}) in members(groups)
    groups = align_models({**two, "c": third}, parse_alignment(["a:c1=b:k1=c:c2"]))
    assert ("conv", {"a": "c1", "b": "k1", "c": "c2"}) in members(groups)


@pytest.mark.parametrize("items,message", [
    (["a:c1=z:k1"], "unknown task 'z'"),
    (["a:c9=b:k1"], r"task 'a' has no layer 'c9' \(mergeable layers: c1, c2, d1\)"),
    (["a:d2=b:e1"], "a:d2 is the task's head"),
    (["a:c1=b:dw"], "b:dw is a depthwise layer; only conv and dense layers merge"),
    (["a:p1=b:k1"], "a:p1 is a max_pool layer"),
    (["a:c1=b:e1"], r"layers of different kinds cannot merge \(a:c1 is conv, b:e1 is dense\)"),
    (["a:c1=b:k2", "a:c2=b:k1"], "alignment crosses: a:c1=b:k2 and a:c2=b:k1"),
    (["a:c1=b:k1", "a:c1=b:k2"], "a layer can be aligned with at most one layer of each other task"),
    (["a:c1=b:k1", "a:c2=b:k1"], "a layer can be aligned with at most one layer of each other task"),
])
def test_explicit_rejects(two, items, message):
    with pytest.raises(AlignmentError, match=message) as info:
        align_models(two, parse_alignment(items))
    assert isinstance(info.value, EdgemergeError)


def test_crossing_through_a_third_task_is_rejected(two):
    third = lenet_like("c", seed=5)
    # a:c1~b:k2 and b:k1~c:c1 and c:c2~a:c2 is fine; a:c2~b:k1 with a:c1~b:k2 crosses
    align_models({**two, "c": third}, ["a:c1=b:k2", "b:k1=c:c1", "c:c2=a:c2"])
    with pytest.raises(AlignmentError, match="crosses"):
        align_models({**two, "c": third}, ["a:c1=b:k2=c:c2", "a:c2=c:c1"])


def test_default_order_is_strictly_increasing_for_many_shapes():
    shapes = []
    for n_conv, n_dense in itertools.product(range(1, 4), range(0, 3)):
        specs = [conv(f"c{i}", 4) for i in range(n_conv)] + [flatten()]
        specs += [dense(f"d{i}", 6) for i in range(n_dense)] + [dense("head", 2, act=Act.NONE)]
        shapes.append(chain_model(f"m{n_conv}{n_dense}", (4, 4, 1), specs))
    sources = {m.name: m for m in shapes}
    groups = align_models(sources)
    check_order(sources, groups)
    assert max(len(g.members) for g in groups) == len(sources)      # the first conv group holds every model
    assert len([g for g in groups if g.kind == "conv"]) == 3
    assert len([g for g in groups if g.kind == "dense"]) == 2


def test_groups_hold_only_conv_and_dense_layers(two):
    for groups in (align_models(two), align_models(two, ["a:d1=b:e2"])):
        assert {two[t].layer(l).kind for g in groups for t, l in g.members.items()} == {"conv", "dense"}
        assert all(len({two[t].layer(l).kind for t, l in g.members.items()}) == 1 for g in groups)
