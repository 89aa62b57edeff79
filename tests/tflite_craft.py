"""Hand-made TFLite flatbuffers for importer tests, written with the schema's object API (ai-edge-litert's
schema_py_generated) and `flatbuffers`: no TensorFlow, so hostile-file tests stay fast.

`dense_model(...)` is a valid float model (input [1, H, W, C] -> RESHAPE to [1, H*W*C] -> FULLY_CONNECTED); its
arguments damage it the ways a crafted file would (odd-length weight buffer, out-of-range tensor index) or pad
it with a long chain of integer shape-helper ops (SHAPE, then CASTs) feeding the RESHAPE's shape input.
"""
from __future__ import annotations

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as s


def _tensor(name: str, shape, ttype, buffer: int = 0) -> s.TensorT:
    t = s.TensorT()
    t.name, t.shape, t.type, t.buffer = name.encode(), list(shape), ttype, buffer
    return t


def _op(code_index: int, inputs, outputs, options_type=0, options=None) -> s.OperatorT:
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = code_index, list(inputs), list(outputs)
    op.builtinOptionsType, op.builtinOptions = options_type, options
    return op


def _code(builtin: int) -> s.OperatorCodeT:
    c = s.OperatorCodeT()
    c.builtinCode = builtin
    c.deprecatedBuiltinCode = min(builtin, 127)
    c.version = 1
    return c


def dense_model(input_shape=(2, 2, 1), classes: int = 3, *, helper_chain: int = 0, weight_bytes_cut: int = 0,
                bad_tensor_index: int | None = None, tensor_name: str = "dense/MatMul", seed: int = 0,
                non_finite_weight: float | None = None) -> bytes:
    h, w, c = input_shape
    flat = h * w * c
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(classes, flat)).astype("<f4")
    if non_finite_weight is not None:
        values[0, 0] = non_finite_weight
    weights = values.tobytes()
    if weight_bytes_cut:
        weights = weights[:-weight_bytes_cut]            # odd length: not a whole number of float32 values
    buffers = [s.BufferT(), s.BufferT()]
    buffers[1].data = list(weights)
    tensors = [_tensor("input", (1, h, w, c), s.TensorType.FLOAT32),
               _tensor(tensor_name, (classes, flat), s.TensorType.FLOAT32, buffer=1),
               _tensor("flatten/Reshape", (1, flat), s.TensorType.FLOAT32),
               _tensor("logits", (1, classes), s.TensorType.FLOAT32)]
    codes = [_code(s.BuiltinOperator.RESHAPE), _code(s.BuiltinOperator.FULLY_CONNECTED),
             _code(s.BuiltinOperator.SHAPE), _code(s.BuiltinOperator.CAST)]
    ops = []
    reshape_inputs = [0]
    if helper_chain:
        shape_tensor = len(tensors)
        tensors.append(_tensor("shape0", (2,), s.TensorType.INT32))
        ops.append(_op(2, [0], [shape_tensor]))
        for k in range(helper_chain):
            tensors.append(_tensor(f"shape{k + 1}", (2,), s.TensorType.INT32))
            ops.append(_op(3, [shape_tensor], [len(tensors) - 1]))
            shape_tensor = len(tensors) - 1
        reshape_inputs.append(shape_tensor)
    reshape_options = s.ReshapeOptionsT()
    reshape_options.newShape = [1, flat]
    ops.append(_op(0, reshape_inputs, [2], s.BuiltinOptions.ReshapeOptions, reshape_options))
    fc_options = s.FullyConnectedOptionsT()
    ops.append(_op(1, [2, 1 if bad_tensor_index is None else bad_tensor_index, -1], [3],
                   s.BuiltinOptions.FullyConnectedOptions, fc_options))
    graph = s.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs, graph.operators = tensors, [0], [3], ops
    graph.name = b"main"
    model = s.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, codes, [graph], buffers
    model.description = b"edgemerge test"
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
