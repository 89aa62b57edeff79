"""The one decoding rule of a LUT layer (docs/FORMAT.md "LUT ops"): ordinary weights rebuilt from a codebook
and an index map, W[ky, kx, s·r + j, co] = codebook[s, index[ky, kx, s, co], j], cut to the layer's depth; a
layer-shared codebook [1, C, r] serves every segment (codebook[0, index, j]).

`graph.decoded_weights` (a node of a merged graph), `merging.encode.decode` (an encoded group) and the
zipper's read-back use it; the TensorFlow training form gathers the same way in its own ops.
"""
from __future__ import annotations

import numpy as np


def decode_depthwise(codebook: np.ndarray, index: np.ndarray, kernel: tuple[int, int]) -> np.ndarray:
    """Depthwise weights [KH, KW, Cin, M] of a LUT_DEPTHWISE_CONV2D node (docs/FORMAT.md "Clustered depthwise"):
    W[ky, kx, c, m] = codebook[0, index[t / r, c, m], t mod r] with t = ky·KW + kx, from a codebook [1, C, r]
    and an index map [KH·KW / r, Cin, M]."""
    kh, kw = kernel
    _, cin, m = index.shape
    vectors = codebook[0][index.astype(np.int64)]                        # [S, Cin, M, r]: taps s·r + j
    taps = vectors.transpose(0, 3, 1, 2).reshape(kh, kw, cin, m)
    return np.ascontiguousarray(taps)


def decode_codebook(codebook: np.ndarray, index: np.ndarray, depth: int, seg_len: int | None = None,
                    dense: bool | None = None) -> np.ndarray:
    """Weights from a codebook [S_cb, C, r] (S_cb = 1: layer-shared, every segment reads it) and an index map ([KH, KW, S, Cout] for conv, [S, Out] for
    dense): [KH, KW, depth, Cout] or [depth, Out]. `seg_len` is r (the codebook's last axis when None);
    `dense` says which of the two the map is (a 2-D map is dense when None)."""
    dense = index.ndim == 2 if dense is None else dense
    conv_index = index[None, None] if dense else index
    kh, kw, s_count, cout = conv_index.shape
    r = codebook.shape[2] if seg_len is None else seg_len
    seg = (np.arange(s_count) if codebook.shape[0] != 1 else np.zeros(s_count, np.int64))[None, None, :, None]
    vectors = codebook[seg, conv_index.astype(np.int64)]                 # [KH, KW, S, Cout, r]
    weights = vectors.transpose(0, 1, 2, 4, 3).reshape(kh, kw, s_count * r, cout)[:, :, :depth, :]
    return np.ascontiguousarray(weights[0, 0] if dense else weights)
