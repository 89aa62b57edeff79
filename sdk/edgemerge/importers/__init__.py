"""Source-model importers: a trained model file in, a framework-independent `SourceModel` out.

`load_source_model` picks the importer by file suffix. To add a format, write a module
with a `load_...(path: Path) -> SourceModel` function next to `keras_import.py` and register its suffixes
in `_IMPORTERS`; nothing downstream changes.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from edgemerge.errors import ModelFormatError
from edgemerge.importers.source_model import (
    LAYER_KINDS,
    WEIGHTED_KINDS,
    SourceLayer,
    SourceModel,
    same_padding,
)
from edgemerge.text import printable


def _load_keras(path: Path) -> SourceModel:
    from edgemerge.importers.keras_import import (
        load_keras_model,  # TensorFlow is imported only when a Keras file is read
    )
    return load_keras_model(path)


def _load_tflite(path: Path) -> SourceModel:
    from edgemerge.importers.tflite_import import (
        load_tflite_model,  # reads the flatbuffer with ai-edge-litert's schema; no TF
    )
    return load_tflite_model(path)


# suffix (lower case) -> importer
_IMPORTERS: dict[str, Callable[[Path], SourceModel]] = {
    ".keras": _load_keras,
    ".h5": _load_keras,
    ".hdf5": _load_keras,
    ".tflite": _load_tflite,
}
SUPPORTED_SUFFIXES: tuple[str, ...] = tuple(_IMPORTERS)


def load_source_model(path: str | os.PathLike) -> SourceModel:
    """Imports a trained model file; the importer is chosen by suffix (see SUPPORTED_SUFFIXES)."""
    path = Path(path)
    if not path.exists():
        raise ModelFormatError(f"model file {printable(path)}: no such file")
    if not path.is_file():
        raise ModelFormatError(f"model file {printable(path)}: not a file")
    importer = _IMPORTERS.get(path.suffix.lower())
    if importer is None:
        raise ModelFormatError(f"model file {path}: unsupported file type {path.suffix or '(no suffix)'!r} "
                               f"(supported: {', '.join(SUPPORTED_SUFFIXES)})")
    return _refuse_non_finite_weights(importer(path))


def refuse_branches(model: SourceModel, what: str) -> None:
    """For the workflows that still treat models as chains (merge, zipper): a model whose layers join branches
    is refused with one clear error naming its first join, until those workflows handle graphs
    (`edgemerge convert` runs such a model on its own)."""
    for i in range(len(model.layers)):
        names = model.inputs_of(i)
        if len(names) > 1 or (i and names != (model.layers[i - 1].name,)):
            layer = model.layers[i]
            raise ModelFormatError(f"{what}: model file {printable(model.path.name)} is a graph with branches "
                                   f"(layer {printable(layer.name)} ({layer.kind}) reads "
                                   f"{', '.join(printable(n) for n in names)}); {what} supports single-chain models "
                                   "only so far (`edgemerge convert` runs one such model without merging)")


def _refuse_non_finite_weights(model: SourceModel) -> SourceModel:
    """A source model with NaN or +-Inf in a layer's weights or bias is refused here, naming the layer: merged,
    it would spread them into codebooks other tasks share."""
    import numpy as np

    for layer in model.layers:
        for what, values in (("weights", layer.weights), ("bias", layer.bias)):
            if values is not None and not np.all(np.isfinite(values)):
                bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
                raise ModelFormatError(f"model file {printable(model.path)}: layer {printable(layer.name)}: {bad} "
                                       f"of {np.size(values)} {what} values are NaN or infinite")
    return model


__all__ = ["load_source_model", "refuse_branches", "SourceModel", "SourceLayer", "same_padding",
           "LAYER_KINDS", "WEIGHTED_KINDS", "SUPPORTED_SUFFIXES"]
