"""Importers on crafted files (issue 19 parts 2, 4, 8): TFLite tensor indices and buffer lengths bounds-checked,
graphs walked without recursion, non-finite weights refused naming the layer, Keras safe mode at every load."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import tflite_craft

from edgemerge.errors import EdgemergeError, ModelFormatError
from edgemerge.importers import load_source_model
from edgemerge.merging.encode import NonFiniteWeightsError, encode_group

SDK = Path(__file__).resolve().parents[2] / "sdk" / "edgemerge"


def _write(tmp_path, data: bytes, name="m.tflite") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_a_valid_crafted_file_imports(tmp_path):
    model = load_source_model(_write(tmp_path, tflite_craft.dense_model()))
    assert [layer.kind for layer in model.layers] == ["flatten", "dense"]


@pytest.mark.parametrize("kwargs, words", [
    ({"bad_tensor_index": 1000}, "refers to tensor 1000, but subgraph 0 has 4 tensors"),
    ({"bad_tensor_index": -5}, "refers to tensor -5"),
    ({"weight_bytes_cut": 1}, "buffer of 47 bytes, not a multiple of 4"),
    ({"weight_bytes_cut": 3, "tensor_name": "w\x1b[2J\nerror: forged"}, r"'w\\x1B\[2J\\x0Aerror: forged'"),
])
def test_out_of_range_indices_and_odd_buffers_give_one_clear_error(tmp_path, kwargs, words):
    with pytest.raises(ModelFormatError, match=words):
        load_source_model(_write(tmp_path, tflite_craft.dense_model(**kwargs)))


def test_a_3000_op_chain_does_not_hit_the_recursion_limit(tmp_path):
    model = load_source_model(_write(tmp_path, tflite_craft.dense_model(helper_chain=3000)))
    assert [layer.kind for layer in model.layers] == ["flatten", "dense"]


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_source_model_with_non_finite_weights_is_refused_at_import(tmp_path, value):
    with pytest.raises(ModelFormatError, match=r"layer \S+: 1 of 12 weights values are NaN or infinite"):
        load_source_model(_write(tmp_path, tflite_craft.dense_model(non_finite_weight=value)))


def test_non_finite_weights_are_refused_naming_the_layer(tmp_path):
    with pytest.raises(NonFiniteWeightsError, match=r"layer fc2: 1 of 12 weights are NaN or infinite"):
        encode_group({"fc1": np.ones((4, 3), np.float32), "fc2": np.array([np.nan] + [1.0] * 11).reshape(4, 3)},
                     1, 2, n_jobs=1)
    assert issubclass(NonFiniteWeightsError, EdgemergeError)   # the CLI prints it as one error line


def test_every_keras_load_passes_safe_mode_explicitly():
    calls = []
    for path in SDK.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "load_model":
                safe = [k for k in node.keywords if k.arg == "safe_mode"]
                calls.append((path.name, node.lineno, bool(safe) and getattr(safe[0].value, "value", None) is True))
    assert calls, "no load_model call found: the scan is broken"
    assert all(ok for *_, ok in calls), [c for c in calls if not c[2]]
