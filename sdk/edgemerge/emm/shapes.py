"""Shape rules every wing computes alike: TensorFlow's 'same' padding, the output size of a padded window, and
which Keras padding mode ('valid' or 'same') explicit pads are.

The importers turn a framework's padding mode into explicit pads with these rules; the Keras rebuilds
(executors/keras_reference) and the training form map explicit pool pads back with `keras_padding`.
"""
from __future__ import annotations

Pads = tuple[int, int, int, int]   # top, left, bottom, right


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Padding (before, after) of one spatial axis exactly as TensorFlow computes 'same': the output has
    ceil(size / stride) cells and an odd total puts the extra cell after (bottom/right)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv_output_size(size: int, kernel: int, stride: int, pad_before: int, pad_after: int) -> int:
    return (size + pad_before + pad_after - kernel) // stride + 1


def keras_padding(in_hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int], pads: Pads
                  ) -> str | None:
    """'valid' for no pads, 'same' for exactly TensorFlow's 'same' pads of an `in_hw` input, else None
    (Keras pools know only these two modes)."""
    if tuple(pads) == (0, 0, 0, 0):
        return "valid"
    top, bottom = same_padding(in_hw[0], kernel[0], stride[0])
    left, right = same_padding(in_hw[1], kernel[1], stride[1])
    return "same" if tuple(pads) == (top, left, bottom, right) else None
