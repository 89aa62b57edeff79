"""`edgemerge report`: one self-contained HTML page, rendered in headless Chromium (Debian `chromium`, which
tools/setup.sh installs; a missing browser fails the test with the package to install, it is never skipped).

The page of a merged pair of trained models (tests/conftest.py) with data and Keras references has every section
(overview, graph, bytes, accuracy, latency, plots) in the DOM Chromium builds, with the figures of `--json`; it
loads nothing from the network, embeds the PNG found beside the model, and the graph's SVG draws one box per
node with codebook-sharing layers in one colour.
"""
from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import model_factory
import numpy as np
import pytest
from cli_runner import run_cli as cli

SECTIONS = ("overview", "graph", "bytes", "accuracy", "latency", "plots")


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("headless Chromium is needed to render the report: apt-get install chromium (tools/setup.sh)")
    return found


def dump_dom(page: Path) -> str:
    result = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                             page.resolve().as_uri()], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def tiny_png(path: Path) -> Path:
    """A valid 2x2 RGB PNG (the stand-in for zipper's tradeoff.png)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + b"\xff\x00\x00" * 2 for _ in range(2))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def merged_pair(tmp_path_factory, trained_model_paths):
    directory = tmp_path_factory.mktemp("report")
    model = directory / "merged.emm"
    result = cli("merge", f"fashion={trained_model_paths['fashion']}",
                 f"transposed={trained_model_paths['transposed']}", "-o", model, "--preset", "accu")
    assert result.returncode == 0, result.stderr
    data = {}
    for task in ("fashion", "transposed"):
        x, y = model_factory.task_data(task, "test")
        data[task] = directory / f"{task}_test.npz"
        np.savez(data[task], x=x[:300], y=y[:300])
    tiny_png(directory / "tradeoff.png")
    return model, data


def test_report_renders_in_chromium_with_every_section(merged_pair, trained_model_paths, tmp_path):
    model, data = merged_pair
    page = tmp_path / "report.html"
    result = cli("report", model, "--data", f"fashion={data['fashion']}", "--data", f"transposed={data['transposed']}",
                 "--reference", f"fashion={trained_model_paths['fashion']}", "--runs", "5", "-o", page, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["sections"] == list(SECTIONS)
    html = page.read_text()
    # self-contained: no fetched resource (the only URL is the SVG namespace, which is a name, not a fetch)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)
    assert "<script" not in html

    dom = dump_dom(page)
    for section in SECTIONS:
        assert f'<section id="{section}">' in dom, section
    acc = summary["accuracy"]
    assert set(acc) == {"fashion", "transposed"}
    for task, r in acc.items():
        assert f"Confusion matrix: {task}" in dom
        assert f"{100 * r['accuracy']:.2f}%" in dom
        matrix = np.asarray(r["confusion"])
        assert matrix.sum() == r["n"] == 300
        assert np.trace(matrix) == round(r["accuracy"] * r["n"])
    assert acc["fashion"]["reference_accuracy"] is not None and acc["transposed"]["reference_accuracy"] is None
    assert f"{100 * acc['fashion']['drop']:+.2f}" in dom
    assert acc["fashion"]["accuracy"] > 0.5          # a trained model, not noise

    from edgemerge.measure.inspect_model import describe
    info = describe(model)
    svg = dom[dom.index('<section id="graph">'):dom.index('<section id="bytes">')]
    assert svg.count('<g class="node">') == len(info["layers"])
    shared = [cb for cb in info["codebooks"] if len(cb["layers"]) > 1]
    assert shared, "a merged pair shares codebooks"
    for cb in shared:
        assert cb["name"] in svg and ", ".join(cb["layers"]) in svg
    latency = dom[dom.index('<section id="latency">'):dom.index('<section id="plots">')]
    for layer in info["layers"]:
        assert layer["name"] in latency
    assert set(summary["latency"]["tasks"]) == {"fashion", "transposed"}
    assert all(t["median_ms"] > 0 for t in summary["latency"]["tasks"].values())
    plots = dom[dom.index('<section id="plots">'):]
    assert 'src="data:image/png;base64,' in plots and "tradeoff.png" in plots


def test_report_screenshot_is_drawn(merged_pair, tmp_path):
    model, _ = merged_pair
    page, shot = tmp_path / "r.html", tmp_path / "shot.png"
    assert cli("report", model, "--runs", "2", "-o", page).returncode == 0
    result = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                             "--window-size=1000,900", f"--screenshot={shot}", page.resolve().as_uri()],
                            capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_report_without_data_says_how_to_get_accuracy(merged_pair, tmp_path):
    model, _ = merged_pair
    page = tmp_path / "r.html"
    result = cli("report", model, "--runs", "2", "--plot", tiny_png(tmp_path / "pareto.png"), "-o", page)
    assert result.returncode == 0, result.stderr
    html = page.read_text()
    assert "No labelled data given" in html and "pareto.png" in html and "tradeoff.png" not in html


@pytest.mark.parametrize("args, message", [
    (["--data", "nosuch=x.npz"], "error: no task named 'nosuch'"),
    (["--reference", "fashion=x.keras"], "error: --reference fashion=... needs --data fashion=NPZ"),
    (["--plot", "missing.png"], "error: --plot missing.png: no such file"),
])
def test_report_errors_are_one_line_and_write_nothing(merged_pair, tmp_path, args, message):
    model, data = merged_pair
    page = tmp_path / "r.html"
    result = cli("report", model, *args, "-o", page, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
    assert not page.exists()
