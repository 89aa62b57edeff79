"""Source models with branches (importers/source_model.py `inputs`, executors/numpy_exec.forward_numpy):
the representation every importer produces for residual, concat and squeeze-and-excite graphs."""
import numpy as np
import pytest

from edgemerge.emm.constants import Act
from edgemerge.executors.numpy_exec import forward_numpy
from edgemerge.importers.source_model import MODEL_INPUT, SourceLayer, SourceModel


def _conv(name, cin, cout, rng, inputs=(), act=Act.NONE, hw=6):
    return SourceLayer(name, "conv", (hw, hw, cin), (hw, hw, cout), rng.normal(size=(1, 1, cin, cout)),
                       rng.normal(size=cout), activation=act, inputs=inputs)


def residual_se_model(rng) -> SourceModel:
    """x -> c1 (relu) -> c2; add(c2, x); SE gate: gap -> dense-as-conv -> sigmoid; mul; concat with x; gap."""
    layers = [
        _conv("c1", 3, 3, rng, act=Act.RELU),
        _conv("c2", 3, 3, rng),
        SourceLayer("add", "add", (6, 6, 3), (6, 6, 3), inputs=("c2", MODEL_INPUT), activation=Act.RELU),
        SourceLayer("gap", "global_avg_pool", (6, 6, 3), (1, 1, 3)),
        _conv("gate", 3, 3, rng, act=Act.SIGMOID, hw=1),
        SourceLayer("se", "mul", (6, 6, 3), (6, 6, 3), inputs=("add", "gate")),
        SourceLayer("cat", "concat", (6, 6, 3), (6, 6, 6), inputs=("se", MODEL_INPUT)),
        SourceLayer("pad", "pad", (6, 6, 6), (7, 8, 6), pads=(1, 0, 0, 2)),
        SourceLayer("out", "global_avg_pool", (7, 8, 6), (1, 1, 6)),
    ]
    return SourceModel("graph", None, (6, 6, 3), layers)


def test_forward_numpy_follows_every_input():
    rng = np.random.default_rng(0)
    model = residual_se_model(rng)
    x = rng.normal(size=(2, 6, 6, 3))
    conv = lambda v, layer: np.einsum("nhwc,cd->nhwd", v, layer.weights[0, 0]) + layer.bias  # noqa: E731
    L = {layer.name: layer for layer in model.layers}
    c1 = np.maximum(conv(x, L["c1"]), 0)
    add = np.maximum(conv(c1, L["c2"]) + x, 0)
    gate = 1 / (1 + np.exp(-conv(add.mean(axis=(1, 2), keepdims=True), L["gate"])))
    cat = np.concatenate([add * gate, x], axis=-1)
    padded = np.pad(cat, ((0, 0), (1, 0), (0, 2), (0, 0)))
    expected = padded.mean(axis=(1, 2))
    np.testing.assert_allclose(forward_numpy(model, x), expected, rtol=1e-12, atol=1e-12)
    assert not model.is_chain
    assert model.consumers()[MODEL_INPUT] == [0, 2, 6]


def test_a_layer_list_without_inputs_is_a_chain():
    rng = np.random.default_rng(1)
    model = SourceModel("chain", None, (6, 6, 3), [_conv("a", 3, 4, rng), _conv("b", 4, 2, rng)])
    assert model.is_chain and model.inputs_of(0) == (MODEL_INPUT,) and model.inputs_of(1) == ("a",)


@pytest.mark.parametrize("layers, problem", [
    (lambda r: [_conv("a", 3, 3, r, inputs=("b",)), _conv("b", 3, 3, r)], "not an earlier layer"),
    (lambda r: [_conv("a", 3, 3, r), _conv("a", 3, 3, r)], "used twice"),
    (lambda r: [_conv("a", 3, 3, r), _conv("b", 3, 3, r, inputs=(MODEL_INPUT,))], "feed nothing"),
])
def test_check_topology_refuses_forward_references_duplicates_and_dangling_layers(layers, problem):
    model = SourceModel("bad", None, (6, 6, 3), layers(np.random.default_rng(2)))
    with pytest.raises(ValueError, match=problem):
        model.check_topology()
