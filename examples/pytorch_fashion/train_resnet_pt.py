"""Trains a small residual CNN in PyTorch on Fashion-MNIST and exports it to ONNX, as a PyTorch user would.

    python -m examples.pytorch_fashion.train_resnet_pt --data examples/build --out examples/build/pytorch

The data is the bundled example's Fashion-MNIST (`python -m examples.fashion_words.data --out DIR`: the Debian
package dataset-fashion-mnist, padded to 32x32, scaled to [0, 1]). Its NHWC `.npz` files are rewritten here in
PyTorch's NCHW layout (`vision_train.npz`, `vision_test.npz`: x float32 [N, 1, 32, 32], y int64), the data as a
PyTorch user has it; edgemerge reads them as they are (README "PyTorch users").

The network (`ResNetPT`): a 3x3 stem conv + BatchNorm + ReLU (16 channels), three basic residual blocks of 16,
32 and 64 channels (the second and third downsample with stride 2 and a 1x1 conv + BatchNorm projection
shortcut), global average pooling and a Linear head. Seeded (torch, numpy, the data order), 2 threads;
`resnet_pt.onnx` is exported with `torch.onnx.export` at opset 17 with a dynamic batch dimension, BatchNorm kept
as BatchNormalization nodes (an eval-mode model exported with TrainingMode.PRESERVE), so that edgemerge's
importer folds them. `resnet_pt.json` records the configuration, the test accuracy (PyTorch and ONNX Runtime)
and the time; a model whose files exist and whose configuration is unchanged is not retrained.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

SEED = 0
CLASSES = 10
CONFIG = {"version": 1, "seed": SEED, "epochs": 2, "batch_size": 128, "learning_rate": 2e-3,
          "weight_decay": 1e-4, "channels": [16, 32, 64], "opset": 17, "threads": 2}


def _fixture_block():
    """The basic residual block of the committed fixture resnet_bn.onnx (tools/make_onnx_fixtures.py: 3x3 conv +
    BatchNorm + ReLU, 3x3 conv + BatchNorm, a 1x1 conv + BatchNorm projection shortcut when the shape changes),
    loaded from that script so that the demo's network and the fixture's share one definition."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "tools" / "make_onnx_fixtures.py"
    spec = importlib.util.spec_from_file_location("make_onnx_fixtures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.BasicBlock


def build_model():
    import torch
    from torch import nn

    BasicBlock = _fixture_block()

    class ResNetPT(nn.Module):
        def __init__(self, channels=(16, 32, 64)):
            super().__init__()
            c1, c2, c3 = channels
            self.stem = nn.Sequential(nn.Conv2d(1, c1, 3, 1, 1, bias=False), nn.BatchNorm2d(c1), nn.ReLU())
            self.stage1 = BasicBlock(c1, c1, 1)
            self.stage2 = BasicBlock(c1, c2, 2)
            self.stage3 = BasicBlock(c2, c3, 2)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(c3, CLASSES)

        def forward(self, x):
            x = self.stage3(self.stage2(self.stage1(self.stem(x))))
            return self.fc(torch.flatten(self.pool(x), 1))

    return ResNetPT(tuple(CONFIG["channels"]))


def write_nchw_data(data_dir: Path, out: Path) -> dict[str, Path]:
    """vision_{train,test}.npz in NCHW from the example's NHWC fashion_{train,test}.npz (rewritten only when
    missing or older than their source)."""
    paths = {}
    for split in ("train", "test"):
        src, dst = data_dir / f"fashion_{split}.npz", out / f"vision_{split}.npz"
        if not src.is_file():
            raise SystemExit(f"train_resnet_pt: error: {src} not found; build the data first: "
                             f"python -m examples.fashion_words.data --out {data_dir}")
        if not dst.is_file() or dst.stat().st_mtime < src.stat().st_mtime:
            with np.load(src) as npz:
                x = np.ascontiguousarray(npz["x"].astype(np.float32).transpose(0, 3, 1, 2))
                y = npz["y"].astype(np.int64)
            tmp = dst.with_name(dst.stem + ".tmp.npz")
            np.savez(tmp, x=x, y=y)
            os.replace(tmp, dst)
        paths[split] = dst
    return paths


def onnx_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    pred = np.concatenate([sess.run(None, {name: x[i:i + 500]})[0].argmax(1) for i in range(0, len(x), 500)])
    return float(np.mean(pred == y))


def train(data_dir: Path, out: Path, force: bool = False) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    data = write_nchw_data(data_dir, out)
    onnx_path, record_path = out / "resnet_pt.onnx", out / "resnet_pt.json"
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        record = {}
    if not force and record.get("config") == CONFIG and onnx_path.is_file():
        print(f"train_resnet_pt: {onnx_path} up to date (test accuracy {100 * record['test_accuracy']:.2f}%)")
        return record

    import torch
    from torch import nn

    torch.manual_seed(SEED)
    np.random.seed(SEED)
    torch.set_num_threads(CONFIG["threads"])
    torch.use_deterministic_algorithms(True)
    with np.load(data["train"]) as npz:
        x_train, y_train = torch.from_numpy(npz["x"]), torch.from_numpy(npz["y"])
    with np.load(data["test"]) as npz:
        x_test, y_test = npz["x"], npz["y"]
    model = build_model()
    opt = torch.optim.AdamW(model.parameters(), lr=CONFIG["learning_rate"], weight_decay=CONFIG["weight_decay"])
    steps_per_epoch = (len(x_train) + CONFIG["batch_size"] - 1) // CONFIG["batch_size"]
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=CONFIG["learning_rate"],
                                                total_steps=CONFIG["epochs"] * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(SEED)
    started = time.perf_counter()
    for epoch in range(CONFIG["epochs"]):
        model.train()
        order = torch.randperm(len(x_train), generator=gen)
        total = correct = 0
        for i in range(0, len(order), CONFIG["batch_size"]):
            idx = order[i:i + CONFIG["batch_size"]]
            xb, yb = x_train[idx], y_train[idx]
            logits = model(xb)
            loss = loss_fn(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += len(idx)
            correct += int((logits.argmax(1) == yb).sum())
        print(f"train_resnet_pt: epoch {epoch + 1}/{CONFIG['epochs']}: train accuracy {100 * correct / total:.2f}% "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    seconds = round(time.perf_counter() - started, 1)
    model.eval()
    with torch.no_grad():
        pred = np.concatenate([model(torch.from_numpy(x_test[i:i + 500])).argmax(1).numpy()
                               for i in range(0, len(x_test), 500)])
    accuracy = float(np.mean(pred == y_test))

    tmp = onnx_path.with_name("resnet_pt.tmp.onnx")
    torch.onnx.export(model, (torch.zeros(1, 1, 32, 32),), str(tmp), input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, opset_version=CONFIG["opset"],
                      dynamo=False, training=torch.onnx.TrainingMode.PRESERVE)
    os.replace(tmp, onnx_path)
    record = {"config": CONFIG, "test_accuracy": accuracy, "onnx_test_accuracy": onnx_accuracy(onnx_path, x_test, y_test),
              "params": int(sum(p.numel() for p in model.parameters())), "train_seconds": seconds,
              "onnx_bytes": onnx_path.stat().st_size, "torch": torch.__version__}
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"train_resnet_pt: test accuracy {100 * accuracy:.2f}% (ONNX Runtime {100 * record['onnx_test_accuracy']:.2f}%), "
          f"{record['params']} parameters, {seconds} s; wrote {onnx_path} ({record['onnx_bytes']} bytes)", flush=True)
    return record


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="folder with fashion_{train,test}.npz (examples/fashion_words/data.py)")
    ap.add_argument("--out", required=True, help="output folder for resnet_pt.onnx and the NCHW vision_*.npz")
    ap.add_argument("--force", action="store_true", help="retrain even when up to date")
    args = ap.parse_args(argv)
    train(Path(args.data), Path(args.out), force=args.force)


if __name__ == "__main__":
    main()
