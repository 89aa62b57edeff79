"""Small seeded CNNs of different architectures, briefly trained on Fashion-MNIST, for importer and merge tests.

Three tasks on the same images (NeuralMerger merges models of *different* tasks and architectures):

- "fashion": the original images, 10 classes; a Sequential LeNet (valid convs, max pools, BatchNorm
  after a bias-free conv, ReLU layer, Dropout, softmax Dense), saved as `.keras`.
- "flipped": the images flipped upside down, labels grouped into 4 super-classes; a Functional
  MobileNet-like model (stride-2 'same' conv, BatchNorm, ReLU(max_value=6), DepthwiseConv2D with
  depth_multiplier 2, Activation('relu6'), 1x1 conv, 'same' average and max pools, GlobalAveragePooling2D,
  Activation('softmax') layer), saved as legacy `.h5`.
- "transposed": the images transposed (rows <-> columns), 10 classes; a Sequential all-valid model (stride-2
  conv, valid average pool followed by a standalone ReLU, Reshape as flatten, ReLU6 dense, linear head).
"""
from __future__ import annotations

import gzip
import os
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FASHION_PACKAGE = "dataset-fashion-mnist"
FASHION_DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
# Fashion-MNIST classes -> 4 super-classes: tops (T-shirt, pullover, coat, shirt), trousers & dresses,
# footwear (sandal, sneaker, ankle boot), bags.
SUPER_CLASS = np.array([0, 1, 0, 1, 0, 2, 0, 2, 3, 2])
TRAIN_IMAGES = 4000
TEST_IMAGES = 1000


def _fashion_dir() -> Path:
    """The directory of the Debian package's IDX files (found with dpkg -L, as the package installs them)."""
    try:
        listing = subprocess.run(["dpkg", "-L", FASHION_PACKAGE], capture_output=True, text=True, check=True).stdout
        for line in listing.splitlines():
            if line.endswith("train-images-idx3-ubyte.gz"):
                return Path(line).parent
    except (OSError, subprocess.CalledProcessError):
        pass
    return FASHION_DEFAULT_DIR


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


@lru_cache(maxsize=None)
def fashion_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The first TRAIN_IMAGES training and TEST_IMAGES test images: x float32 [N, 28, 28, 1] in [0, 1], y int."""
    root = _fashion_dir()
    if not (root / "train-images-idx3-ubyte.gz").is_file():
        raise FileNotFoundError(f"Fashion-MNIST not found in {root}; install the Debian package {FASHION_PACKAGE}")
    x_train = _read_idx(root / "train-images-idx3-ubyte.gz")[:TRAIN_IMAGES]
    y_train = _read_idx(root / "train-labels-idx1-ubyte.gz")[:TRAIN_IMAGES]
    x_test = _read_idx(root / "t10k-images-idx3-ubyte.gz")[:TEST_IMAGES]
    y_test = _read_idx(root / "t10k-labels-idx1-ubyte.gz")[:TEST_IMAGES]
    scale = np.float32(1 / 255)
    return (x_train[..., None] * scale, y_train.astype(np.int64),
            x_test[..., None] * scale, y_test.astype(np.int64))


def task_data(task: str, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one task ("fashion", "flipped" or "transposed") from the train or test split."""
    x_train, y_train, x_test, y_test = fashion_mnist()
    x, y = (x_train, y_train) if split == "train" else (x_test, y_test)
    if task == "fashion":
        return x, y
    if task == "flipped":
        return np.ascontiguousarray(x[:, ::-1]), SUPER_CLASS[y]
    if task == "transposed":
        return np.ascontiguousarray(x.transpose(0, 2, 1, 3)), y
    raise ValueError(f"unknown task {task!r}")


# -- architectures ---------------------------------------------------------------------------------
# BatchNormalization layers use momentum 0.9: with two short epochs the default 0.99 leaves the moving
# statistics far from the data's, and the saved model would be much worse at inference than in training.


def lenet_sequential(classes: int = 10):
    import keras
    from keras import layers
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(8, 5, activation="relu", name="conv1"),                 # 24x24
        layers.MaxPooling2D(2, name="pool1"),                                  # 12x12
        layers.Conv2D(16, 5, use_bias=False, name="conv2"),                    # 8x8
        layers.BatchNormalization(momentum=0.9, name="bn2"),
        layers.ReLU(name="relu2"),
        layers.MaxPooling2D(2, name="pool2"),                                  # 4x4
        layers.Flatten(name="flatten"),
        layers.Dense(64, activation="relu", name="fc1"),
        layers.Dropout(0.2, name="drop1"),
        layers.Dense(classes, activation="softmax", name="fc2"),
    ], name="lenet")


def mobile_functional(classes: int = 4):
    import keras
    from keras import layers
    inputs = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(12, 3, strides=2, padding="same", name="c1")(inputs)    # 14x14
    x = layers.BatchNormalization(momentum=0.9, name="c1_bn")(x)
    x = layers.ReLU(max_value=6.0, name="c1_relu6")(x)
    x = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw1")(x)   # 24 channels
    x = layers.BatchNormalization(momentum=0.9, name="dw1_bn")(x)
    x = layers.Activation("relu6", name="dw1_relu6")(x)
    x = layers.Conv2D(24, 1, activation="relu", name="pw1")(x)
    x = layers.AveragePooling2D(3, strides=2, padding="same", name="avg1")(x)  # 7x7
    x = layers.Conv2D(32, 3, padding="same", activation="relu6", name="c2")(x)
    x = layers.MaxPooling2D(2, padding="same", name="max2")(x)               # 4x4, pads (0, 0, 1, 1)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(32, activation="relu", name="d1")(x)
    x = layers.Dense(classes, name="d2")(x)
    outputs = layers.Activation("softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="mobile")


def valid_sequential(classes: int = 10):
    import keras
    from keras import layers
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(6, 3, strides=2, activation="relu", name="a1"),        # 13x13
        layers.Conv2D(12, 3, name="a2"),                                     # 11x11
        layers.AveragePooling2D(2, name="a2_pool"),                         # 5x5
        layers.ReLU(name="a2_relu"),                                         # standalone activation
        layers.Reshape((-1,), name="a2_flat"),
        layers.Dense(48, activation="relu6", name="a3"),
        layers.Dense(24, activation="relu", name="a4"),
        layers.Dense(classes, name="a5"),                                    # logits, no softmax
    ], name="valid")


@dataclass(frozen=True)
class TaskSpec:
    task: str
    builder: str
    classes: int
    suffix: str
    softmax_output: bool


TASKS: dict[str, TaskSpec] = {
    "fashion": TaskSpec("fashion", "lenet_sequential", 10, ".keras", True),
    "flipped": TaskSpec("flipped", "mobile_functional", 4, ".h5", True),
    "transposed": TaskSpec("transposed", "valid_sequential", 10, ".keras", False),
}


def train_model(spec: TaskSpec, directory: Path, seed: int = 0, epochs: int = 2) -> Path:
    """Builds, trains (briefly, seeded) and saves the model of one task; returns the file path."""
    import keras
    keras.utils.set_random_seed(seed)
    model = globals()[spec.builder](spec.classes)
    x, y = task_data(spec.task, "train")
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=not spec.softmax_output),
                  metrics=["accuracy"])
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, shuffle=True)
    path = Path(directory) / f"{spec.task}_{spec.builder}{spec.suffix}"
    model.save(path)
    return path


def keras_logits(model, x: np.ndarray) -> np.ndarray:
    """A Keras model's outputs before its final softmax (as edgemerge imports them), float64 [N, classes]."""
    import keras
    last = model.layers[-1]
    if type(last).__name__ == "Activation" and last.activation.__name__ == "softmax":
        model = keras.Model(model.inputs, last.input)
    elif getattr(last, "activation", None) is not None and last.activation.__name__ == "softmax":
        saved = last.activation
        last.activation = keras.activations.linear
        try:
            return np.asarray(model.predict(x, verbose=0, batch_size=256), np.float64).reshape(len(x), -1)
        finally:
            last.activation = saved
    return np.asarray(model.predict(x, verbose=0, batch_size=256), np.float64).reshape(len(x), -1)


def randomise(model, seed: int = 0, *, biases: bool = True) -> None:
    """Non-trivial BatchNorm parameters and statistics (so folding is really exercised) and, with `biases`,
    non-zero biases (the TFLite converter drops all-zero ones)."""
    import keras

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            values = ([rng.uniform(0.5, 2.0, n)] if layer.scale else []) + \
                     ([rng.normal(0, 0.5, n)] if layer.center else []) + \
                     [rng.normal(0, 0.5, n), rng.uniform(0.2, 3.0, n)]
            layer.set_weights(values)
        elif biases and getattr(layer, "bias", None) is not None:
            weights = layer.get_weights()
            weights[-1] = rng.normal(0, 0.1, weights[-1].shape).astype(np.float32)
            layer.set_weights(weights)


def refused_on_import(model, directory: Path, name: str, fragment: str):
    """`model` saved as NAME.keras is refused by load_source_model with an UnsupportedLayerError that starts
    with the file name and names `fragment`; the error is returned for more checks."""
    import pytest

    from edgemerge.errors import UnsupportedLayerError
    from edgemerge.importers import load_source_model

    path = directory / f"{name}.keras"
    model.save(path)
    with pytest.raises(UnsupportedLayerError) as info:
        load_source_model(path)
    assert fragment in str(info.value) and str(info.value).startswith(f"{name}.keras: "), str(info.value)
    return info.value
