"""The tiny pair most training and budget tests use: two small Keras CNNs trained in a module fixture
(about 3 s) on synthetic class templates, their calibration .npz files, and a small numpy/scikit-learn
NeuralMerger encoding (`merge_tiny`), so those tests do not depend on the importer or merge.py. Imported by
tests/training/test_calibrate.py, tests/workflows/test_budget.py and the subprocesses they start."""

from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from edgemerge.emm.constants import Act, Op  # noqa: E402
from edgemerge.emm.graph import MergedGraph, Node, Task, Tensor  # noqa: E402
from edgemerge.executors.keras_reference import reference_logits  # noqa: E402


def cpu_reference_logits(graph, task, x):
    """The Keras reference in float32 on the CPU (a GPU may convolve in TF32)."""
    with tf.device("/CPU:0"):
        return reference_logits(graph, task, x)


def max_rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


# ------------------------------------------------------------------------------------------------
# tiny source models, synthetic data and a numpy NeuralMerger encoding
# ------------------------------------------------------------------------------------------------
SPECS = {
    "a": dict(shape=(8, 8, 2), classes=4, conv=6, fc=12, seed=1),
    "b": dict(shape=(10, 10, 3), classes=3, conv=6, fc=12, seed=2),
}


def make_data(task, n, noise=2.0, seed=0):
    """Class templates plus heavy noise: easy for a CNN, hard enough that a coarse encoding hurts."""
    spec = SPECS[task]
    templates = np.random.default_rng(spec["seed"]).normal(size=(spec["classes"], *spec["shape"]))
    rng = np.random.default_rng([spec["seed"], seed])
    y = rng.integers(0, spec["classes"], size=n)
    x = templates[y] + noise * rng.normal(size=(n, *spec["shape"]))
    return x.astype(np.float32), y.astype(np.int64)


def train_tiny(task, x, y, epochs=6):
    spec = SPECS[task]
    keras.utils.set_random_seed(spec["seed"])
    model = keras.Sequential([
        keras.Input(spec["shape"]),
        keras.layers.Conv2D(spec["conv"], 3, padding="same", activation="relu", name="conv1"),
        keras.layers.MaxPooling2D(2, name="pool"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(spec["fc"], activation="relu", name="fc1"),
        keras.layers.Dense(spec["classes"], activation="softmax", name="head"),
    ], name=f"tiny_{task}")
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    return model


def _encode(kernels, r, c, seed):
    """kernels: task -> [KH, KW, Cin, Cout]; k-means per depth segment over every task deep enough.
    Returns the shared codebook [S_cb, C, r] and task -> index map [KH, KW, S, Cout]."""
    from sklearn.cluster import KMeans

    padded, s_counts = {}, {}
    for t, w in kernels.items():
        s_counts[t] = -(-w.shape[2] // r)
        padded[t] = np.pad(w, ((0, 0), (0, 0), (0, s_counts[t] * r - w.shape[2]), (0, 0)))
    codebook = np.zeros((max(s_counts.values()), c, r), np.float32)
    index = {t: np.zeros((w.shape[0], w.shape[1], s_counts[t], w.shape[3]), np.uint32) for t, w in padded.items()}
    for s in range(codebook.shape[0]):
        parts = [(t, w[:, :, s * r:(s + 1) * r, :].transpose(0, 1, 3, 2)) for t, w in padded.items()
                 if s_counts[t] > s]
        vectors = np.concatenate([p.reshape(-1, r) for _, p in parts])
        km = KMeans(n_clusters=min(c, len(vectors)), n_init=1, random_state=seed + s, max_iter=50).fit(vectors)
        codebook[s, :len(km.cluster_centers_)] = km.cluster_centers_
        at = 0
        for t, p in parts:
            n = int(np.prod(p.shape[:3]))
            index[t][:, :, s, :] = km.labels_[at:at + n].reshape(p.shape[:3])
            at += n
    return codebook, index


def merge_tiny(models, conv_rc=(2, 8), fc_rc=(4, 16), seed=0) -> MergedGraph:
    """conv1 and fc1 of every task share one codebook each (LUT ops, match_output set); heads stay DENSE."""
    g = MergedGraph(metadata={"edgemerge.tool_version": "test", "source.count": len(models),
                              "edgemerge.original_bytes": int(sum(m.count_params() * 4 for m in models.values()))})
    for t in models:
        g.add_input(SPECS[t]["shape"])          # all inputs first: node value ids come after them
    cb_conv, ix_conv = _encode({t: m.get_layer("conv1").get_weights()[0] for t, m in models.items()}, *conv_rc, seed)
    cb_fc, ix_fc = _encode({t: m.get_layer("fc1").get_weights()[0][None, None] for t, m in models.items()},
                           *fc_rc, seed + 1000)
    cb_conv_id = g.add_tensor(Tensor.f32("codebook/conv1", cb_conv))
    cb_fc_id = g.add_tensor(Tensor.f32("codebook/fc1", cb_fc))
    for k, (t, m) in enumerate(models.items()):
        h, w, _ = SPECS[t]["shape"]
        cout, fc = SPECS[t]["conv"], SPECS[t]["fc"]
        ix = g.add_tensor(Tensor.index(f"{t}/conv1/index", ix_conv[t], conv_rc[1]))
        b = g.add_tensor(Tensor.f32(f"{t}/conv1/bias", m.get_layer("conv1").get_weights()[1]))
        v = g.add_node(Node(f"{t}/conv1", Op.LUT_CONV2D, k, (h, w, cout), Act.RELU, (3, 3), (1, 1), (1, 1, 1, 1),
                            conv_rc[0], conv_rc[1], cb_conv_id, ix, b, (f"{t}:conv1",), f"{t}:conv1"))
        v = g.add_node(Node(f"{t}/pool", Op.MAX_POOL, v, (h // 2, w // 2, cout), kernel=(2, 2), stride=(2, 2)))
        v = g.add_node(Node(f"{t}/flatten", Op.RESHAPE, v, (1, 1, (h // 2) * (w // 2) * cout)))
        ix = g.add_tensor(Tensor.index(f"{t}/fc1/index", ix_fc[t][0, 0], fc_rc[1]))
        b = g.add_tensor(Tensor.f32(f"{t}/fc1/bias", m.get_layer("fc1").get_weights()[1]))
        v = g.add_node(Node(f"{t}/fc1", Op.LUT_DENSE, v, (1, 1, fc), Act.RELU, seg_len=fc_rc[0], codewords=fc_rc[1],
                            weight=cb_fc_id, index=ix, bias=b, sources=(f"{t}:fc1",), match_output=f"{t}:fc1"))
        head_w, head_b = m.get_layer("head").get_weights()
        hw = g.add_tensor(Tensor.f32(f"{t}/head/weights", head_w))
        hb = g.add_tensor(Tensor.f32(f"{t}/head/bias", head_b))
        v = g.add_node(Node(f"{t}/head", Op.DENSE, v, (1, 1, SPECS[t]["classes"]), weight=hw, bias=hb,
                            sources=(f"{t}:head",)))
        g.tasks.append(Task(t, k, v, SPECS[t]["classes"]))
    return g


def build_tiny(d: Path) -> dict:
    """Two trained tiny models saved as .keras in `d`, their calibration .npz files and a separate test set
    (the `tiny` fixture of tests/conftest.py)."""
    models, originals, calib, test = {}, {}, {}, {}
    for t in SPECS:
        x, y = make_data(t, 1000)
        models[t] = train_tiny(t, x, y)
        originals[t] = d / f"{t}.keras"
        models[t].save(originals[t])
        calib[t] = d / f"{t}.npz"
        np.savez(calib[t], x=x, y=y)
        test[t] = make_data(t, 1000, seed=7)
    return {"models": models, "originals": originals, "calib": calib, "test": test, "dir": d}


def _real_merge():
    """The real importer and merger, for tests that merge the tiny pair's saved files."""
    from edgemerge.importers import load_source_model
    from edgemerge.merging.merge import merge_models
    return load_source_model, merge_models
