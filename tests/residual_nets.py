"""Residual / branching Keras models for importer, convert and board tests (built here, never downloaded):
a `keras.applications.MobileNetV2(weights=None)` and a ResNet-8 with 1x1 stride-2 projection shortcuts, both
with seeded random weights and random BatchNorm statistics (so folding is not trivially the identity), and a
small squeeze-and-excite net with the v2 activations. `logits_model` gives the pre-softmax logits."""
from __future__ import annotations

import numpy as np


def _randomise_batch_norms(model, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            c = layer.moving_mean.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, c).astype(np.float32))
            layer.beta.assign((rng.normal(size=c) * 0.1).astype(np.float32))
            layer.moving_mean.assign((rng.normal(size=c) * 0.1).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, c).astype(np.float32))


def mobilenet_v2(input_shape=(64, 64, 3), alpha=0.35, classes=10, seed=0):
    import keras
    keras.utils.set_random_seed(seed)
    model = keras.applications.MobileNetV2(input_shape=input_shape, alpha=alpha, weights=None, classes=classes)
    _randomise_batch_norms(model, seed)
    return model


def resnet8(input_shape=(32, 32, 3), classes=10, seed=0, name="resnet8"):
    """conv-bn-relu stem, 3 stages of one basic block each (16, 32, 64 filters); stages 2 and 3 halve the size
    and take a 1x1 stride-2 conv + BN projection shortcut."""
    import keras
    from keras import layers as L
    keras.utils.set_random_seed(seed)
    x_in = keras.Input(input_shape)
    x = L.Conv2D(16, 3, padding="same", use_bias=False, name="stem_conv")(x_in)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    for stage, filters in enumerate((16, 32, 64), 1):
        stride = 1 if stage == 1 else 2
        y = L.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"s{stage}_conv1")(x)
        y = L.BatchNormalization(name=f"s{stage}_bn1")(y)
        y = L.Activation("relu", name=f"s{stage}_relu1")(y)
        y = L.Conv2D(filters, 3, padding="same", use_bias=False, name=f"s{stage}_conv2")(y)
        y = L.BatchNormalization(name=f"s{stage}_bn2")(y)
        if stride != 1 or x.shape[-1] != filters:
            x = L.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"s{stage}_proj")(x)
            x = L.BatchNormalization(name=f"s{stage}_proj_bn")(x)
        x = L.Add(name=f"s{stage}_add")([x, y])
        x = L.ReLU(name=f"s{stage}_out")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dropout(0.2, name="drop")(x)
    out = L.Dense(classes, activation="softmax", name="logits")(x)
    model = keras.Model(x_in, out, name=name)
    _randomise_batch_norms(model, seed)
    return model


def se_net(input_shape=(16, 16, 3), classes=5, seed=0, gate="hard_sigmoid"):
    """Squeeze-and-excite, Concatenate, explicit ZeroPadding2D before a pool, hard-swish / swish / sigmoid /
    hard-sigmoid (`gate`: the TFLite converter lowers hard_sigmoid to ADD/RELU6/MUL by constants, which the
    .tflite importer does not read; pass "sigmoid" there), GlobalAveragePooling2D with keepdims and a Reshape to
    (1, 1, C)."""
    import keras
    from keras import layers as L
    keras.utils.set_random_seed(seed)
    x_in = keras.Input(input_shape)
    x = L.ZeroPadding2D(((1, 0), (1, 0)), name="pad_conv")(x_in)
    x = L.Conv2D(8, 3, strides=2, name="conv1")(x)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.Activation("hard_swish", name="hswish")(x)
    a = L.Conv2D(6, 1, activation="swish", name="branch_a")(x)
    b = L.DepthwiseConv2D(3, padding="same", name="branch_b")(x)
    x = L.Concatenate(name="cat")([a, b])                                    # 14 channels
    s = L.GlobalAveragePooling2D(keepdims=True, name="squeeze")(x)
    s = L.Conv2D(4, 1, activation="relu", name="se_reduce")(s)
    s = L.Conv2D(14, 1, activation=gate, name="se_expand")(s)
    x = L.Multiply(name="excite")([x, s])
    g = L.GlobalAveragePooling2D(name="gate_gap")(x)
    g = L.Dense(14, activation="sigmoid", name="gate_dense")(g)
    g = L.Reshape((1, 1, 14), name="gate_reshape")(g)
    x = L.Multiply(name="gate")([g, x])                                      # the gate first
    x = L.ZeroPadding2D(1, name="pad_pool")(x)
    x = L.MaxPooling2D(2, name="pool")(x)
    x = L.Flatten(name="flat")(x)
    out = L.Dense(classes, name="head")(x)
    model = keras.Model(x_in, out, name="se_net")
    _randomise_batch_norms(model, seed)
    return model


def logits_model(model):
    """The same model with its final softmax removed (the importer drops it: outputs are logits)."""
    import keras
    last = model.layers[-1]
    if getattr(last, "activation", None) is not None and getattr(last.activation, "__name__", "") == "softmax":
        last.activation = keras.activations.linear
        model.predict_function = None      # Keras caches the traced predict function: trace again without softmax
    return model
