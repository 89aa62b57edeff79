"""Regenerates tests/fixtures/onnx/: small PyTorch models exported to ONNX, their test inputs and ONNX Runtime's
reference logits. PyTorch is needed only here (not by edgemerge or its tests): `pip install torch==2.13.0`
(the CPU wheel), plus onnx, onnxruntime, onnxscript.

    python tools/make_onnx_fixtures.py [--out tests/fixtures/onnx] [--steps 150]

Seeded: the same torch version writes the same models. Each model is trained briefly (Adam, cross-entropy) on a
synthetic 10-class task (class-dependent blobs plus noise) so its logits are not trivial. Files:
- plain_cnn.onnx: conv-relu-maxpool x2, flatten (C x H x W > 1: checks the row reorder), two Linear layers.
- resnet_bn.onnx: stem conv+BN+ReLU, a basic residual block, a downsampling block with a projection shortcut
  (1x1 conv + BN), global average pool, Linear.
- mobilenet_se.onnx: MobileNetV2-style inverted residuals (1x1 expand, depthwise 3x3, 1x1 project, ReLU6 and
  hard-swish), a squeeze-and-excite gate (1x1 convs, hard-sigmoid, Mul), global average pool, Linear.
- bad_op.onnx: a model with an op edgemerge does not read (LeakyRelu).
- dynamic_hw.onnx: a tiny CNN exported with a dynamic height and width.
- data.npz: x (NCHW float32, 8 samples, 1x32x32 for the plain CNN, 3x32x32 for the others: x1 / x3), y (labels)
  and per model `<name>_logits` from ONNX Runtime.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn

SEED = 1234
CLASSES = 10


class PlainCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 7 * 7, 32), nn.ReLU(), nn.Dropout(0.1),
                                  nn.Linear(32, CLASSES))

    def forward(self, x):
        return self.head(self.features(x))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.short is None else self.short(x)))


class ResNetBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.block1 = BasicBlock(16, 16, 1)
        self.block2 = BasicBlock(16, 32, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, CLASSES)

    def forward(self, x):
        x = self.block2(self.block1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class SqueezeExcite(nn.Module):
    def __init__(self, c, r=4):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c, c // r, 1)
        self.fc2 = nn.Conv2d(c // r, c, 1)

    def forward(self, x):
        g = torch.relu(self.fc1(self.pool(x)))
        return x * nn.functional.hardsigmoid(self.fc2(g))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand, act, se):
        super().__init__()
        mid = cin * expand
        layers = [nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), act(),
                  nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid), act()]
        if se:
            layers.append(SqueezeExcite(mid))
        layers += [nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


class MobileNetSE(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish())
        self.blocks = nn.Sequential(
            InvertedResidual(16, 16, 1, 2, nn.ReLU6, False),
            InvertedResidual(16, 24, 2, 3, nn.Hardswish, True),
            InvertedResidual(24, 24, 1, 3, nn.Hardswish, True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(24, CLASSES)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


class Tiny(nn.Module):
    """conv, activation, global pool, Linear: the error fixtures (LeakyRelu is the unsupported op)."""
    def __init__(self, act):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.act = act
        self.fc = nn.Linear(4, CLASSES)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.act(self.conv(x)), 1), 1))


def synthetic(n: int, channels: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A learnable 10-class task: each class is a fixed random 32x32 pattern, samples are it plus noise."""
    protos = torch.randn(CLASSES, channels, 32, 32, generator=gen)
    y = torch.randint(0, CLASSES, (n,), generator=gen)
    x = protos[y] * 0.6 + torch.randn(n, channels, 32, 32, generator=gen)
    return x, y


def train(model: nn.Module, channels: int, steps: int, gen: torch.Generator) -> None:
    x, y = synthetic(1024, channels, gen)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for step in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=gen)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def export(model: nn.Module, channels: int, path: Path, dynamic_hw: bool = False, opset: int = 17,
           keep_batchnorm: bool = False) -> None:
    """keep_batchnorm: export BatchNormalization nodes as they are (TrainingMode.PRESERVE on an eval-mode model:
    inference BatchNormalization) instead of the exporter folding them into the convs, so the importer's
    folding is what the fixture checks."""
    dummy = torch.zeros(1, channels, 32, 32)
    axes = {"x": {0: "batch"}, "logits": {0: "batch"}}
    if dynamic_hw:
        axes["x"].update({2: "height", 3: "width"})
    torch.onnx.export(model, (dummy,), str(path), input_names=["x"], output_names=["logits"],
                      dynamic_axes=axes, opset_version=opset, dynamo=False,
                      training=torch.onnx.TrainingMode.PRESERVE if keep_batchnorm else torch.onnx.TrainingMode.EVAL)


def main() -> None:
    import onnxruntime as ort

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/fixtures/onnx")
    ap.add_argument("--steps", type=int, default=150)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    data: dict[str, np.ndarray] = {}
    x1, y1 = synthetic(8, 1, torch.Generator().manual_seed(SEED + 1))
    x3, y3 = synthetic(8, 3, torch.Generator().manual_seed(SEED + 1))
    data.update(x1=x1.numpy(), y1=y1.numpy().astype(np.int64), x3=x3.numpy(), y3=y3.numpy().astype(np.int64))
    for name, cls, channels, opset in (("plain_cnn", PlainCNN, 1, 13), ("resnet_bn", ResNetBN, 3, 17),
                                       ("mobilenet_se", MobileNetSE, 3, 18)):
        model = cls()
        train(model, channels, args.steps, gen)
        path = out / f"{name}.onnx"
        export(model, channels, path, opset=opset, keep_batchnorm=name != "plain_cnn")
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        data[f"{name}_logits"] = sess.run(None, {"x": data[f"x{channels}"]})[0]
        print(f"{path}: {path.stat().st_size} bytes, opset {opset}")
    export(Tiny(nn.LeakyReLU()).eval(), 3, out / "bad_op.onnx")
    export(Tiny(nn.ReLU()).eval(), 3, out / "dynamic_hw.onnx", dynamic_hw=True)
    np.savez_compressed(out / "data.npz", **data)


if __name__ == "__main__":
    main()
