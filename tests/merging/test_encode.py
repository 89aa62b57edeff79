"""The NeuralMerger encoder: layout (exact inverse of graph.decoded_weights), exact small codebooks, k-means
choice of the lowest-inertia initialisation, and shared codebooks across layers of different depths."""
from __future__ import annotations

import time

import numpy as np
import pytest

from edgemerge.emm.constants import Op
from edgemerge.emm.graph import MergedGraph, Node, Tensor, decoded_weights
from edgemerge.merging.encode import (
    decode,
    encode_group,
    init_seeds,
    relative_error,
    segment_codebook,
    segment_vectors,
    validate_rc,
)


def lookup_loop(codebook, index, depth):
    """W[ky, kx, s·r + j, co] = codebook[s, index[ky, kx, s, co], j], written as plainly as possible."""
    conv = index if index.ndim == 4 else index[None, None]
    kh, kw, s_count, cout = conv.shape
    r = codebook.shape[2]
    w = np.zeros((kh, kw, depth, cout), np.float32)
    for ky in range(kh):
        for kx in range(kw):
            for s in range(s_count):
                for co in range(cout):
                    for j in range(r):
                        if s * r + j < depth:
                            w[ky, kx, s * r + j, co] = codebook[s, conv[ky, kx, s, co], j]
    return w if index.ndim == 4 else w[0, 0]


def graph_with(codebook, index, in_shape, r, c, op):
    g = MergedGraph()
    x = g.add_input(in_shape)
    cb = g.add_tensor(Tensor.f32("codebook/g", codebook))
    ix = g.add_tensor(Tensor.index("t/l/index", index, c))
    out = (1, 1, index.shape[-1])
    kernel = index.shape[:2] if op == Op.LUT_CONV2D else (1, 1)
    g.add_node(Node("t/l", op, x, out, kernel=kernel, seg_len=r, codewords=c, weight=cb, index=ix))
    return g, g.nodes[0]


def few_distinct(rng, shape, r, count):
    """A conv [KH, KW, Cin, Cout] tensor whose depth segments take only `count` distinct vectors."""
    kh, kw, cin, cout = shape
    s_count = -(-cin // r)
    prototypes = rng.normal(size=(count, r)).astype(np.float32)
    picks = rng.integers(0, count, size=(kh, kw, s_count, cout))
    w = prototypes[picks].transpose(0, 1, 2, 4, 3).reshape(kh, kw, s_count * r, cout)[:, :, :cin]
    return np.ascontiguousarray(w)


# -- layout -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,r", [((3, 3, 8, 5), 4), ((5, 5, 7, 3), 3), ((1, 1, 5, 4), 8), ((2, 3, 6, 2), 1)])
def test_segment_vectors_layout(shape, r):
    w = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    v = segment_vectors(w, r)
    kh, kw, cin, cout = shape
    s_count = -(-cin // r)
    assert v.shape == (s_count, kh * kw * cout, r)
    for ky, kx, s, co in [(0, 0, 0, 0), (kh - 1, kw - 1, s_count - 1, cout - 1), (kh // 2, 0, s_count // 2, 1)]:
        expected = np.zeros(r)
        part = w[ky, kx, s * r:(s + 1) * r, co]
        expected[:len(part)] = part
        np.testing.assert_array_equal(v[s, (ky * kw + kx) * cout + co], expected)


@pytest.mark.parametrize("shape,r,c", [((3, 3, 10, 6), 4, 16), ((5, 5, 1, 8), 1, 8), ((1, 1, 13, 7), 5, 4)])
def test_conv_round_trip_through_decoded_weights(shape, r, c):
    rng = np.random.default_rng(1)
    w = rng.normal(size=shape).astype(np.float32)
    enc = encode_group({"t:l": w}, r, c, seed=0, kmeans_inits=2)
    index = enc.layers["t:l"].index
    assert index.dtype == np.uint32 and index.shape == (shape[0], shape[1], -(-shape[2] // r), shape[3])
    assert enc.codebook.dtype == np.float32 and enc.codebook.shape == (-(-shape[2] // r), c, r)
    assert int(index.max()) < c
    g, node = graph_with(enc.codebook, index, (6, 6, shape[2]), r, c, Op.LUT_CONV2D)
    from_graph = decoded_weights(g, node)
    np.testing.assert_array_equal(from_graph, lookup_loop(enc.codebook, index, shape[2]))
    np.testing.assert_array_equal(from_graph, enc.decode("t:l", shape[2]))
    assert enc.layers["t:l"].relative_error == pytest.approx(relative_error(w, from_graph))


def test_dense_round_trip_and_vectors_along_the_input():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(37, 9)).astype(np.float32)
    enc = encode_group({"t:fc": w}, 8, 16, seed=0, kmeans_inits=2)
    index = enc.layers["t:fc"].index
    assert index.shape == (5, 9) and int(index.max()) < 16
    g, node = graph_with(enc.codebook, index, (1, 1, 37), 8, 16, Op.LUT_DENSE)
    decoded = decoded_weights(g, node)
    np.testing.assert_array_equal(decoded, lookup_loop(enc.codebook, index, 37))
    # each segment of each column is replaced by its nearest codeword (vectors along the input dimension)
    padded = np.zeros((40, 9), np.float32)
    padded[:37] = w
    for s in range(5):
        for o in range(9):
            vector = padded[s * 8:(s + 1) * 8, o]
            distances = ((enc.codebook[s] - vector) ** 2).sum(axis=1)
            assert distances[index[s, o]] <= distances.min() + 1e-5


def test_conv_indices_pick_the_nearest_codeword():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(3, 3, 12, 10)).astype(np.float32)
    enc = encode_group({"t:c": w}, 4, 8, seed=0, kmeans_inits=3)
    index = enc.layers["t:c"].index
    for ky, kx, s, co in np.ndindex(*index.shape):
        vector = w[ky, kx, s * 4:(s + 1) * 4, co]
        distances = ((enc.codebook[s] - vector) ** 2).sum(axis=1)
        assert distances[index[ky, kx, s, co]] <= distances.min() + 1e-5


# -- exact codebooks ----------------------------------------------------------------------------------
@pytest.mark.parametrize("r,distinct,c", [(4, 10, 16), (4, 16, 16), (1, 5, 8), (3, 2, 2)])
def test_decode_is_exact_when_c_covers_the_distinct_vectors(r, distinct, c):
    rng = np.random.default_rng(4)
    w = few_distinct(rng, (3, 3, 4 * r - 1, 20), r, distinct)     # last segment zero-padded
    enc = encode_group({"t:l": w}, r, c, seed=0)
    assert all(seg.exact for seg in enc.segments)
    np.testing.assert_array_equal(enc.decode("t:l", w.shape[2]), w)
    assert enc.layers["t:l"].relative_error == 0.0


def test_exact_segment_pads_the_codebook():
    vectors = np.array([[1.0, 2.0], [3.0, 4.0], [1.0, 2.0]])
    seg = segment_codebook(vectors, 4, seeds=(0,))
    assert seg.exact and seg.codewords.shape == (4, 2)
    np.testing.assert_array_equal(seg.codewords[seg.labels], vectors)
    np.testing.assert_array_equal(seg.codewords[2:], 0.0)


# -- k-means --------------------------------------------------------------------------------------------
def test_kmeans_keeps_the_lowest_inertia_initialisation():
    from sklearn.cluster import KMeans

    vectors = np.random.default_rng(5).normal(size=(400, 3))
    seeds = init_seeds(7, 0, 6)
    seg = segment_codebook(vectors, 12, seeds)
    assert not seg.exact and len(seg.init_inertias) == 6 and seg.init_seeds == seeds
    assert len(set(seg.init_inertias)) > 1                      # the initialisations really differ
    best = int(np.argmin(seg.init_inertias))
    rerun = KMeans(n_clusters=12, n_init=1, random_state=seeds[best]).fit(vectors)
    np.testing.assert_array_equal(seg.codewords, rerun.cluster_centers_.astype(np.float32))
    np.testing.assert_array_equal(seg.labels, rerun.labels_)
    assert seg.inertia == pytest.approx(min(seg.init_inertias), rel=1e-5)


def test_encoding_is_reproducible_and_seeded():
    w = np.random.default_rng(6).normal(size=(3, 3, 8, 16)).astype(np.float32)
    a = encode_group({"t:l": w}, 4, 8, seed=3, kmeans_inits=2)
    b = encode_group({"t:l": w}, 4, 8, seed=3, kmeans_inits=2)
    c = encode_group({"t:l": w}, 4, 8, seed=4, kmeans_inits=2)
    np.testing.assert_array_equal(a.codebook, b.codebook)
    np.testing.assert_array_equal(a.layers["t:l"].index, b.layers["t:l"].index)
    assert not np.array_equal(a.codebook, c.codebook)
    assert init_seeds(3, 0, 2) != init_seeds(3, 1, 2) != init_seeds(4, 0, 2)


# -- shared codebooks ----------------------------------------------------------------------------------
def test_segments_past_the_shallower_depth_come_from_the_deeper_layer_only():
    rng = np.random.default_rng(7)
    shallow = (rng.normal(size=(3, 3, 8, 10)) - 100).astype(np.float32)    # depth 8: one segment, near -100
    deep = (rng.normal(size=(3, 3, 24, 12)) + 100).astype(np.float32)       # depth 24: three segments, near +100
    seeds_per_segment = [init_seeds(0, s, 2) for s in range(3)]
    enc = encode_group({"a:shallow": shallow, "b:deep": deep}, 8, 16, seed=0, kmeans_inits=2)
    assert enc.codebook.shape == (3, 16, 8)
    assert enc.layers["a:shallow"].index.shape == (3, 3, 1, 10)
    assert enc.layers["b:deep"].index.shape == (3, 3, 3, 12)
    deep_vectors = segment_vectors(deep, 8)
    for s in (1, 2):
        alone = segment_codebook(deep_vectors[s], 16, seeds_per_segment[s])
        np.testing.assert_array_equal(enc.codebook[s], alone.codewords)
        assert enc.codebook[s].min() > 90
    # segment 0 is clustered over both layers: it has codewords for both populations
    assert enc.codebook[0].min() < -90 and enc.codebook[0].max() > 90
    both = np.concatenate([segment_vectors(shallow, 8)[0], deep_vectors[0]])
    np.testing.assert_array_equal(enc.codebook[0], segment_codebook(both, 16, seeds_per_segment[0]).codewords)
    # each layer decodes from the same codebook tensor
    for name, w in (("a:shallow", shallow), ("b:deep", deep)):
        assert enc.layers[name].relative_error == pytest.approx(relative_error(w, enc.decode(name, w.shape[2])))
        assert enc.layers[name].relative_error < 0.02


def test_group_rejects_mixed_kinds_and_bad_rc():
    with pytest.raises(ValueError, match="only conv .* or only dense"):
        encode_group({"a:c": np.zeros((3, 3, 2, 2), np.float32), "b:d": np.zeros((4, 2), np.float32)}, 2, 4)
    for r, c, message in [(0, 4, "r=0 is outside 1..256"), (257, 4, "r=257"), (2, 1, "C=1 is outside 2..65536"),
                          (2, 65537, "C=65537")]:
        with pytest.raises(ValueError, match=message):
            validate_rc(r, c)
    with pytest.raises(ValueError, match="kmeans_inits=0"):
        encode_group({"a:c": np.ones((3, 3, 2, 2), np.float32)}, 2, 4, kmeans_inits=0)


def test_decode_inverts_segment_vectors_without_quantisation():
    # codebook = every vector itself, index = its own position: decode must give W back exactly
    w = np.random.default_rng(8).normal(size=(2, 3, 7, 4)).astype(np.float32)
    r = 3
    v = segment_vectors(w, r)                                    # [S, KH·KW·Cout, r]
    s_count, n, _ = v.shape
    index = np.broadcast_to(np.arange(n, dtype=np.uint32), (s_count, n)).reshape(s_count, 2, 3, 4)
    index = index.transpose(1, 2, 0, 3)
    np.testing.assert_array_equal(decode(v.astype(np.float32), index, 7), w)


@pytest.mark.slow
def test_lenet_sized_fc_encodes_in_seconds():
    w = (np.random.default_rng(9).normal(size=(1600, 1024)) * 0.03).astype(np.float32)
    started = time.perf_counter()
    enc = encode_group({"lenet:fc1": w}, 16, 64, seed=0, kmeans_inits=4)
    seconds = time.perf_counter() - started
    print(f"LeNet FC 1600x1024, r=16, C=64, 4 inits: {seconds:.2f} s")
    assert enc.layers["lenet:fc1"].index.shape == (100, 1024)
    assert seconds < 30
