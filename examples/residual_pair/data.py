"""RGB data for the residual-graph examples (issue 15): Fashion-MNIST garments painted in colour on coloured
backgrounds, at any square size (64×64 for the MobileNetV2 of the merge pair, 32×32 for the zipper pair).

Built deterministically (seeded) from the bundled example's 32×32 Fashion-MNIST files
(`python -m examples.fashion_words.data`), which come from Debian's `dataset-fashion-mnist`:

- each grey image g in [0, 1] is resized (bilinear) to SIZE×SIZE and painted: pixel = bg·(1 − g) + fg·g + noise,
  with fg one of eight named colours (hue jittered ±0.03, saturation 0.65–1, value 0.7–1) and bg a dull colour
  (saturation ≤ 0.35, value 0.05–0.45), Gaussian noise σ 0.02, clipped to [0, 1];
- labels: `garment` = the Fashion-MNIST class (10), `colour` = the garment's colour name (8).

Files (float32 N×SIZE×SIZE×3 `x`, int64 `y`), in --out:
  garment{SIZE}_{train,test}.npz, colour{SIZE}_{train,test}.npz (same images, colour labels),
  and rgb_manifest.json (configuration + array hashes; an unchanged configuration is not rebuilt).

    python -m examples.residual_pair.data --fashion examples/build --out examples/build/residual_pair --size 64
"""
from __future__ import annotations

import argparse
import colorsys
import hashlib
import json
from pathlib import Path

import numpy as np

from examples._common import configure_tensorflow, load_split

COLOURS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")
HUES = (0.0, 0.08, 0.16, 0.33, 0.5, 0.62, 0.77, 0.9)
MANIFEST = "rgb_manifest.json"
CONFIG = {"version": 1, "seed": 0, "train": 24000, "test": 10000, "noise": 0.02}


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.array([colorsys.hsv_to_rgb(*hsv) for hsv in zip(h % 1.0, s, v)], dtype=np.float32)


def resize(grey: np.ndarray, size: int) -> np.ndarray:
    """N×32×32×1 → N×size×size×1, bilinear (the same resampling TensorFlow's image resize uses by default)."""
    if grey.shape[1] == size:
        return grey
    tf = configure_tensorflow()    # thread counts set before TensorFlow's first use (a trainer may follow)
    out = [tf.image.resize(grey[i:i + 2000], (size, size), method="bilinear").numpy()
           for i in range(0, len(grey), 2000)]
    return np.clip(np.concatenate(out), 0.0, 1.0).astype(np.float32)


def paint(grey: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Coloured SIZE×SIZE×3 images of the grey garments and the colour label of each."""
    n = len(grey)
    colour = rng.integers(0, len(COLOURS), n)
    fg = _hsv_to_rgb(np.asarray(HUES)[colour] + rng.uniform(-0.03, 0.03, n), rng.uniform(0.65, 1.0, n),
                     rng.uniform(0.7, 1.0, n))
    bg = _hsv_to_rgb(rng.uniform(0.0, 1.0, n), rng.uniform(0.0, 0.35, n), rng.uniform(0.05, 0.45, n))
    g = resize(grey, size)
    x = bg[:, None, None, :] * (1.0 - g) + fg[:, None, None, :] * g
    x += rng.normal(0.0, CONFIG["noise"], x.shape).astype(np.float32)
    return np.clip(x, 0.0, 1.0).astype(np.float32), colour.astype(np.int64)


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def build(fashion_dir: Path, out: Path, size: int) -> dict:
    """Writes the four files for SIZE (skipped when up to date); returns the manifest entry."""
    out.mkdir(parents=True, exist_ok=True)
    config = {**CONFIG, "size": size}
    key = f"rgb{size}"
    manifest_path = out / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        manifest = {}
    names = [f"{task}{size}_{split}.npz" for task in ("garment", "colour") for split in ("train", "test")]
    if manifest.get(key, {}).get("config") == config and all((out / n).is_file() for n in names):
        print(f"data: {key} up to date in {out}")
        return manifest[key]
    entry = {"config": config, "files": {}}
    for split, seed_offset in (("train", 0), ("test", 1)):
        x_grey, y = load_split(fashion_dir, "fashion", split)
        rng = np.random.default_rng([config["seed"], seed_offset])
        pick = np.sort(rng.permutation(len(x_grey))[: config[split]])      # a seeded subset, class order kept
        x, colour = paint(x_grey[pick], size, rng)
        for task, labels in (("garment", y[pick]), ("colour", colour)):
            path = out / f"{task}{size}_{split}.npz"
            tmp = path.with_name(path.stem + ".tmp.npz")
            np.savez(tmp, x=x, y=labels)
            tmp.replace(path)
            entry["files"][path.name] = {"n": int(len(x)), "sha256_16": _digest(x, labels)}
    manifest[key] = entry
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"data: wrote {key} into {out}")
    return entry


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fashion", default="examples/build", help="folder with fashion_{train,test}.npz (32×32×1)")
    parser.add_argument("--out", default="examples/build/residual_pair")
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args(argv)
    build(Path(args.fashion), Path(args.out), args.size)


if __name__ == "__main__":
    main()
