"""NeuralMerger encoding: layers of one group share a codebook per depth segment (E-Conv / E-FC).

Every KH×KW×Cin kernel (one per output channel) is cut into KH·KW spatially 1×1 kernels of depth Cin, and
each of those into S = ceil(Cin / r) segments of r channels (the last zero-padded). For segment index s,
k-means over the segment-s vectors of every layer in the group that has a segment s gives C codewords;
segments past a shallower layer's depth are therefore clustered over the deeper layers alone. A layer keeps
only an index map: which codeword replaces each of its segment vectors. Dense layers are the 1×1 case with
vectors along the input dimension (segment s of column o is W[s·r:(s+1)·r, o]).

The layout is exactly what `graph.decoded_weights` inverts (docs/FORMAT.md, LUT ops):
    W[ky, kx, s·r + j, co] = codebook[s, index[ky, kx, s, co], j]

A group with `shared` set gets ONE layer-shared codebook [1, C, r] instead: k-means over the segment vectors
of every segment of every member, pooled (FORMAT.md "Layer-shared codebooks"). A pool of more than
POOLED_FIT_MAX_VECTORS vectors is fitted on that many rows drawn without replacement (seeded by the merge
seed, so the result is reproducible) and every vector is then assigned its nearest codeword.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from edgemerge.emm.codebook import decode_codebook
from edgemerge.emm.constants import MAX_CODEWORDS, MAX_SEG_LEN
from edgemerge.errors import EdgemergeError
from edgemerge.text import printable

# Below this many k-means problems in one call, worker start-up costs more than it saves.
PARALLEL_MIN_SEGMENTS = 32
# k-means problems with fewer vectors than this run single-threaded.
SINGLE_THREAD_MAX_VECTORS = 8192
# A pooled (layer-shared) k-means problem is fitted on at most this many vectors (a seeded sample): the
# pool of a wide 1x1 conv is S times a per-segment problem (MobileNetV2's last 1x1: 36k vectors at r = 4).
POOLED_FIT_MAX_VECTORS = 32768


class NonFiniteWeightsError(EdgemergeError, ValueError):
    """A layer's weights hold NaN or +-Inf: k-means would spread them into a codebook shared with other layers
    (and tasks). Also a ValueError, as this module's other refusals of bad weights."""


def validate_rc(seg_len: int, codewords: int, where: str = "") -> None:
    """Raises ValueError unless 1 <= r <= MAX_SEG_LEN and 2 <= C <= MAX_CODEWORDS."""
    prefix = f"{where}: " if where else ""
    if not isinstance(seg_len, (int, np.integer)) or not 1 <= seg_len <= MAX_SEG_LEN:
        raise ValueError(f"{prefix}segment length r={seg_len} is outside 1..{MAX_SEG_LEN}")
    if not isinstance(codewords, (int, np.integer)) or not 2 <= codewords <= MAX_CODEWORDS:
        raise ValueError(f"{prefix}codebook size C={codewords} is outside 2..{MAX_CODEWORDS}")


def segment_count(depth: int, seg_len: int) -> int:
    return -(-depth // seg_len)


def as_conv_kernel(weights: np.ndarray) -> np.ndarray:
    """Conv weights [KH, KW, Cin, Cout] as they are; dense weights [In, Out] as [1, 1, In, Out]."""
    if weights.ndim == 2:
        return weights[None, None]
    if weights.ndim == 4:
        return weights
    raise ValueError(f"weights of shape {weights.shape}: expected [KH, KW, Cin, Cout] or [In, Out]")


def segment_vectors(weights: np.ndarray, seg_len: int) -> np.ndarray:
    """The segment vectors of a conv [KH, KW, Cin, Cout] or dense [In, Out] weight tensor, float64
    [S, KH·KW·Cout, r]; row (ky·KW + kx)·Cout + co of segment s is W[ky, kx, s·r:(s+1)·r, co] (zero-padded)."""
    kernel = as_conv_kernel(np.asarray(weights))
    kh, kw, depth, cout = kernel.shape
    s_count = segment_count(depth, seg_len)
    padded = np.zeros((kh, kw, s_count * seg_len, cout), np.float64)
    padded[:, :, :depth, :] = kernel
    # [KH, KW, S, r, Cout] -> [S, KH, KW, Cout, r]
    vectors = padded.reshape(kh, kw, s_count, seg_len, cout).transpose(2, 0, 1, 4, 3)
    return np.ascontiguousarray(vectors.reshape(s_count, kh * kw * cout, seg_len))


def decode(codebook: np.ndarray, index: np.ndarray, depth: int) -> np.ndarray:
    """Weights rebuilt from a codebook [S_cb, C, r] and an index map ([KH, KW, S, Cout] for conv, [S, Out]
    for dense), cut to `depth` input channels. The inverse of `encode_group` up to quantisation; the rule
    itself is `emm.codebook.decode_codebook`."""
    return decode_codebook(codebook, index, depth)


def relative_error(original: np.ndarray, approximation: np.ndarray) -> float:
    """||W − Ŵ||_F / ||W||_F (0 for an all-zero W that is reproduced exactly)."""
    norm = float(np.linalg.norm(np.asarray(original, np.float64)))
    diff = float(np.linalg.norm(np.asarray(original, np.float64) - np.asarray(approximation, np.float64)))
    if norm == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return diff / norm


# -- one segment: k-means ------------------------------------------------------------------------
@dataclass
class SegmentCodebook:
    """Codewords of one segment and, for each input vector, the index of the codeword that replaces it."""
    codewords: np.ndarray          # [C, r] float32
    labels: np.ndarray             # [n] uint32
    inertia: float                 # sum of squared distances of the vectors to their codewords
    exact: bool                    # the vectors had at most C distinct values and are reproduced exactly
    init_inertias: tuple[float, ...] = ()   # inertia of each k-means initialisation (k-means only)
    init_seeds: tuple[int, ...] = ()        # random_state of each initialisation


def init_seeds(seed: int, segment: int, inits: int) -> tuple[int, ...]:
    """Independent, reproducible random_state values for the k-means initialisations of one segment."""
    state = np.random.SeedSequence([int(seed), int(segment)]).generate_state(inits, dtype=np.uint32)
    return tuple(int(s) & 0x7FFFFFFF for s in state)


def segment_codebook(vectors: np.ndarray, codewords: int, seeds: Sequence[int]) -> SegmentCodebook:
    """C codewords for the rows of `vectors` [n, r]: the distinct vectors themselves when there are at most
    C of them (padded with zero codewords), else the lowest-inertia k-means run over `seeds`."""
    vectors = np.asarray(vectors, np.float64)
    distinct, inverse = np.unique(vectors, axis=0, return_inverse=True)
    if len(distinct) <= codewords:
        table = np.zeros((codewords, vectors.shape[1]), np.float32)
        table[:len(distinct)] = distinct
        labels = inverse.reshape(-1).astype(np.uint32)
        inertia = float(np.sum((table[labels].astype(np.float64) - vectors) ** 2))
        return SegmentCodebook(table, labels, inertia, exact=True)

    from sklearn.cluster import KMeans

    best = None
    inertias = []
    for seed in seeds:
        # float64 input keeps scikit-learn on its fast path (float32 is up-cast chunk by chunk).
        run = KMeans(n_clusters=codewords, n_init=1, random_state=seed).fit(vectors)
        inertias.append(float(run.inertia_))
        if best is None or run.inertia_ < best.inertia_:
            best = run
    table = best.cluster_centers_.astype(np.float32)
    labels = best.labels_.astype(np.uint32)
    inertia = float(np.sum((table[labels].astype(np.float64) - vectors) ** 2))
    return SegmentCodebook(table, labels, inertia, exact=False, init_inertias=tuple(inertias),
                           init_seeds=tuple(seeds))


def pooled_codebook(vectors: np.ndarray, codewords: int, seeds: Sequence[int],
                    max_fit: int = POOLED_FIT_MAX_VECTORS) -> SegmentCodebook:
    """`segment_codebook` for a pooled (layer-shared) problem: fitted on at most `max_fit` rows drawn
    without replacement with the first seed, then every row gets its nearest codeword (squared distance,
    lowest index on ties) and the inertia is over all rows."""
    vectors = np.asarray(vectors, np.float64)
    if len(vectors) <= max_fit:
        return segment_codebook(vectors, codewords, seeds)
    rows = np.sort(np.random.default_rng(int(seeds[0])).choice(len(vectors), size=max_fit, replace=False))
    fitted = segment_codebook(vectors[rows], codewords, seeds)
    table = fitted.codewords.astype(np.float64)
    labels = np.empty(len(vectors), np.uint32)
    norms = np.sum(table ** 2, axis=1)
    for start in range(0, len(vectors), 8192):          # chunks keep the distance matrix small
        chunk = vectors[start:start + 8192]
        labels[start:start + len(chunk)] = np.argmin(norms[None, :] - 2.0 * chunk @ table.T, axis=1)
    inertia = float(np.sum((table[labels] - vectors) ** 2))
    return SegmentCodebook(fitted.codewords, labels, inertia, exact=False, init_inertias=fitted.init_inertias,
                           init_seeds=fitted.init_seeds)


def _solve_problem(vectors: np.ndarray, codewords: int, seeds: tuple[int, ...], pooled: bool = False
                   ) -> SegmentCodebook:
    return pooled_codebook(vectors, codewords, seeds) if pooled else segment_codebook(vectors, codewords, seeds)


def _solve_segments(problems: list[tuple[np.ndarray, int, tuple[int, ...], bool]], n_jobs: int | None
                    ) -> list[SegmentCodebook]:
    import joblib

    workers = joblib.cpu_count() if n_jobs is None or n_jobs == -1 else max(1, int(n_jobs))
    if workers == 1 or len(problems) < PARALLEL_MIN_SEGMENTS:
        from threadpoolctl import threadpool_limits
        # Small k-means problems run faster on one thread: thread start-up costs more than their work.
        small = all(len(vectors) < SINGLE_THREAD_MAX_VECTORS for vectors, _, _, _ in problems)
        with threadpool_limits(1 if small else None):
            return [_solve_problem(*problem) for problem in problems]
    # joblib gives each worker process one thread, so k-means inside them does not oversubscribe the CPUs.
    return joblib.Parallel(n_jobs=workers)(joblib.delayed(_solve_problem)(*problem) for problem in problems)


# -- a group of layers ----------------------------------------------------------------------------
@dataclass
class EncodedLayer:
    index: np.ndarray              # uint32: [KH, KW, S, Cout] (conv) or [S, Out] (dense)
    relative_error: float          # ||W − decode||_F / ||W||_F


@dataclass
class EncodedGroup:
    seg_len: int                   # r
    codewords: int                 # C
    codebook: np.ndarray           # [S_max, C, r] float32, or [1, C, r] when layer-shared
    layers: dict[str, EncodedLayer]
    segments: list[SegmentCodebook]

    def decode(self, name: str, depth: int) -> np.ndarray:
        return decode(self.codebook, self.layers[name].index, depth)


@dataclass
class GroupSpec:
    """Input of `encode_groups`: the weights of the layers of one group, by name, and its r and C; `shared`:
    one layer-shared codebook [1, C, r] for every segment (k-means over all segment vectors pooled)."""
    weights: Mapping[str, np.ndarray]
    seg_len: int
    codewords: int
    shared: bool = False


def encode_groups(specs: Sequence[GroupSpec], *, seed: int = 0, kmeans_inits: int = 4,
                  n_jobs: int | None = None) -> list[EncodedGroup]:
    """Encodes several groups at once (their k-means problems share one worker pool). `n_jobs`: worker
    processes; None or -1 = one per CPU when there are at least PARALLEL_MIN_SEGMENTS k-means problems to
    pay for the start-up, 1 = serial. The result does not depend on n_jobs."""
    if kmeans_inits < 1:
        raise ValueError(f"kmeans_inits={kmeans_inits}: at least one k-means initialisation is needed")
    problems: list[tuple[np.ndarray, int, tuple[int, ...], bool]] = []
    plans = []
    for spec in specs:
        validate_rc(spec.seg_len, spec.codewords)
        if not spec.weights:
            raise ValueError("a layer group needs at least one layer")
        kinds = {np.asarray(w).ndim for w in spec.weights.values()}
        if len(kinds) != 1 or kinds - {2, 4}:
            raise ValueError(f"layers {', '.join(spec.weights)}: a group holds only conv [KH, KW, Cin, Cout] "
                             "or only dense [In, Out] weights")
        for name, w in spec.weights.items():
            bad = int(np.size(w) - np.count_nonzero(np.isfinite(w)))
            if bad:
                raise NonFiniteWeightsError(f"layer {printable(name)}: {bad} of {np.size(w)} weights are NaN or "
                                            "infinite; the source model is broken (retrain or repair it)")
        vectors = {name: segment_vectors(w, spec.seg_len) for name, w in spec.weights.items()}
        s_max = max(v.shape[0] for v in vectors.values())
        first_problem = len(problems)
        if spec.shared:     # one problem: every segment of every member, rows segment-major per member
            stacked = np.concatenate([v.reshape(-1, spec.seg_len) for v in vectors.values()])
            problems.append((stacked, spec.codewords, init_seeds(seed, 0, kmeans_inits), True))
        else:
            for s in range(s_max):
                stacked = np.concatenate([v[s] for v in vectors.values() if v.shape[0] > s])
                problems.append((stacked, spec.codewords, init_seeds(seed, s, kmeans_inits), False))
        plans.append((spec, vectors, first_problem, s_max))

    solved = _solve_segments(problems, n_jobs)

    groups = []
    for spec, vectors, first_problem, s_max in plans:
        segments = solved[first_problem:first_problem + (1 if spec.shared else s_max)]
        codebook = np.stack([seg.codewords for seg in segments])            # [S_max, C, r] or [1, C, r]
        layers: dict[str, EncodedLayer] = {}
        offsets = [0] * s_max          # where each layer's rows start in the stacked segment vectors
        pooled_offset = 0              # shared: where each layer's rows start in the one pooled problem
        for name, layer_vectors in vectors.items():
            kernel_shape = as_conv_kernel(np.asarray(spec.weights[name])).shape
            kh, kw, depth, cout = kernel_shape
            s_count = layer_vectors.shape[0]
            n = layer_vectors.shape[1]
            index = np.empty((s_count, n), np.uint32)
            if spec.shared:
                index[:] = segments[0].labels[pooled_offset:pooled_offset + s_count * n].reshape(s_count, n)
                pooled_offset += s_count * n
            else:
                for s in range(s_count):
                    index[s] = segments[s].labels[offsets[s]:offsets[s] + n]
                    offsets[s] += n
            # rows of segment s are (ky, kx, co) -> [KH, KW, S, Cout]
            index = np.ascontiguousarray(index.reshape(s_count, kh, kw, cout).transpose(1, 2, 0, 3))
            if np.asarray(spec.weights[name]).ndim == 2:
                index = np.ascontiguousarray(index[0, 0])
            error = relative_error(spec.weights[name], decode(codebook, index, depth))
            layers[name] = EncodedLayer(index, error)
        groups.append(EncodedGroup(spec.seg_len, spec.codewords, codebook, layers, list(segments)))
    return groups


def encode_group(weights: Mapping[str, np.ndarray], seg_len: int, codewords: int, *, seed: int = 0,
                 kmeans_inits: int = 4, n_jobs: int | None = None) -> EncodedGroup:
    """Encodes the layers of one group (name -> conv [KH, KW, Cin, Cout] or dense [In, Out] weights) with a
    shared codebook of `codewords` codewords per segment of `seg_len` channels."""
    return encode_groups([GroupSpec(weights, seg_len, codewords)], seed=seed, kmeans_inits=kmeans_inits,
                         n_jobs=n_jobs)[0]
