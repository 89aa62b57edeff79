"""Does Hungarian matching of a block's internal (expanded) channels help when zippering MobileNetV2-style
blocks? Measures the averaged model BEFORE calibration (the start each round's calibration gets): top-1
agreement with each original and accuracy on held-out samples, for k = 1..L, --share block and pointwise,
--align none vs hungarian, on a pair trained from the same initial weights and a pair from different ones.

    PYTHONPATH=sdk:tests:tests/zipper python -m examples.mobilenets.residual_align [--epochs 6]

The pair: tests/zipper/residual_pair.py (4 inverted-residual blocks, 16x16 RGB synthetic task, a: brightest
quadrant, b: dominant colour). Writes a markdown table to stdout. Trains nothing but the two small originals
(about a minute on 2 cores).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    from residual_pair import trained_pair

    from edgemerge.executors.numpy_exec import forward_numpy
    from edgemerge.runtime import Runtime
    from edgemerge import emm
    from edgemerge.zipper.fuse import ZipState
    from edgemerge.zipper.layout import check_pair
    from edgemerge.zipper.rounds import share_round

    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--samples", type=int, default=1000)
    args = parser.parse_args()
    print("| init | share | align | k | agree a | agree b | acc a | acc b | channels moved |")
    print("|---|---|---|---|---|---|---|---|---|")
    for same_init in (True, False):
        with tempfile.TemporaryDirectory() as d:
            pair = trained_pair(Path(d), epochs=args.epochs, n_train=4000, n_val=args.samples, same_init=same_init)
            models = pair["models"]
            val = {t: np.load(pair["val"][t]) for t in models}
            x = val["a"]["x"]
            original = {t: forward_numpy(models[t], x).argmax(1) for t in models}
            acc0 = {t: float(np.mean(original[t] == val[t]["y"])) for t in models}
            init = "same" if same_init else "different"
            print(f"| {init} | originals | | 0 | 100 % | 100 % | {100 * acc0['a']:.1f} % | {100 * acc0['b']:.1f} % | |")
            for share in ("block", "pointwise"):
                for align in ("none", "hungarian"):
                    layout = check_pair(models)
                    state = ZipState.from_models(models)
                    for k in range(1, layout.depth + 1):
                        rg, info = share_round(models, layout, state, k, share, align=align)
                        outputs, _ = Runtime(emm.to_bytes(rg.graph)).run_all({"a": x})
                        pred = {t: np.asarray(outputs[t]).argmax(1) for t in models}
                        agree = {t: 100 * float(np.mean(pred[t] == original[t])) for t in models}
                        acc = {t: 100 * float(np.mean(pred[t] == val[t]["y"])) for t in models}
                        moved = ", ".join(f"{n} {100 * v['b']:.0f} %" for n, v in info.get("aligned", {}).items())
                        print(f"| {init} | {share} | {align} | {k} | {agree['a']:.1f} % | {agree['b']:.1f} % | "
                              f"{acc['a']:.1f} % | {acc['b']:.1f} % | {moved} |", flush=True)


if __name__ == "__main__":
    main()
