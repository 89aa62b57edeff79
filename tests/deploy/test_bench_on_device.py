"""`edgemerge bench MODEL --on ssh://... --board host`: the benchmark on a device, end to end.

The device is the loopback OpenSSH server of tests/ssh_server.py (this host, so `--board host`). bench --on
installs em_run and the model there through the flash plumbing, runs `em_run --info` and `em_run --task all
--json` there, and runs the peers with the device's Python (--device-python): this interpreter, which has
ai-edge-litert, or a fake `python3` in the server's fake-command folder that has not. Nothing here depends on how fast anything runs: the figures are checked for form and order only.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
from cli_runner import run_cli
from ssh_server import free_port

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

from tflite_convert import merged_tflite_pair  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
L = keras.layers
RUNS, WARMUP = 5, 1
pytestmark = pytest.mark.filterwarnings("ignore:Statistics for quantized inputs:UserWarning")


cli = partial(run_cli, cwd=ROOT)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two small untrained models, their float and int8 .tflite files and the merged .emm."""
    d = tmp_path_factory.mktemp("bench_on_device")
    keras.utils.set_random_seed(0)
    a = keras.Sequential([keras.Input((16, 16, 1)), L.Conv2D(8, 3, activation="relu"), L.MaxPooling2D(),
                          L.Flatten(), L.Dense(10)])
    b = keras.Sequential([keras.Input((12, 12, 3)), L.Conv2D(8, 3, padding="same", activation="relu"),
                          L.GlobalAveragePooling2D(), L.Dense(4)])
    return merged_tflite_pair(d, {"a": a, "b": b}, {"a8": "a", "b8": "b"})


@pytest.fixture(scope="module")
def host_runtime(tmp_path_factory):
    """em_run of the `host` board, built the way `bench --on` builds a missing one."""
    from edgemerge.deploy.boards import get_board
    from edgemerge.deploy.flash import board_em_run
    out = tmp_path_factory.mktemp("runtime") / "host"
    board_em_run(get_board("host"), out, log=lambda m: None)
    return out


def python_on_device(device, with_litert: bool) -> list[str]:
    """--device-python: this interpreter (numpy and ai-edge-litert are there), or one without ai-edge-litert."""
    if with_litert:
        return ["--device-python", sys.executable]
    device.fake("python3", "#!/bin/sh\necho \"ModuleNotFoundError: No module named 'ai_edge_litert'\" >&2\n"
                           "exit 1\n")
    return ["--device-python", str(device.fakebin / "python3")]


def on_device(device, folder: Path, pair, host_runtime, *extra):
    return cli("bench", pair["emm"], "--on", device.url(folder), "--board", "host", "--runtime-dir", host_runtime,
               "--identity", device.key, "--ssh-option", f"UserKnownHostsFile={device.known_hosts}",
               "--runs", RUNS, "--warmup", WARMUP, *extra)


def ordered(ms: dict) -> bool:
    return 0 <= ms["min"] <= ms["median"] <= ms["p95"] and ms["std"] >= 0 and ms["mean"] > 0


def test_bench_on_the_device_with_float_and_int8_peers(device, pair, host_runtime, tmp_path):
    from edgemerge.runtime import Runtime
    python = python_on_device(device, with_litert=True)
    folder = tmp_path / "bench"
    r = on_device(device, folder, pair, host_runtime, *python, "--vs", f"a={pair['a']}", "--vs", f"b={pair['b']}",
                  "--vs", f"a={pair['a8']}", "--vs", f"b={pair['b8']}", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["board"] == "host" and result["machine"] == os.uname().machine
    assert result["runs"] == RUNS and result["warmup"] == WARMUP and result["interleaved"] is False
    # installed through flash: em_run and the model, checked by SHA-256 on the device
    assert (folder / "em_run").read_bytes() == (host_runtime / "em_run").read_bytes()
    assert (folder / "m.emm").read_bytes() == pair["emm"].read_bytes()
    assert {f["name"] for f in result["installed"]} == {"em_run", "m.emm"}

    merged = result["merged"]
    assert ordered(merged["ms"]) and merged["load_ms"] > 0 and merged["first_run_ms"] > 0
    runtime = Runtime(pair["emm"])  # same kernel set as the host em_run: the same packed bytes
    assert merged["packed_bytes"] == runtime.packed_bytes > 0
    assert merged["peak_bytes"] == pair["emm"].stat().st_size + runtime.packed_bytes + runtime.context_bytes
    assert merged["cpu_features"] and merged["kernels"]
    nodes = Runtime(pair["emm"]).nodes()
    assert [n["name"] for n in merged["node_kernels"]] == [n["name"] for n in nodes]
    assert [n["op"] for n in merged["node_kernels"]] == [n["op_name"] for n in nodes]
    assert merged["kernels_used"] == sorted({n["kernel"] for n in merged["node_kernels"]})
    assert all(n["kernel"] for n in merged["node_kernels"])

    labels = [p["label"] for p in result["peers"]]
    assert labels == ["tflite float32", "tflite int8"]
    for peer in result["peers"]:
        assert peer["status"] == "ran", peer
        assert ordered(peer["ms"]) and peer["load_ms"] > 0 and peer["first_run_ms"] > 0
        assert peer["speedup"] == pytest.approx(peer["ms"]["median"] / merged["ms"]["median"])
        assert peer["peak_bytes"] is not None and peer["peak_bytes"] >= 0
    assert set(result["tasks"]) == {"a", "b"}
    for t in result["tasks"].values():
        assert ordered(t["merged_alone"]["ms"]) and t["merged_alone"]["runs"] == RUNS
        assert set(t["peers"]) == set(labels)
        assert t["peers"]["tflite int8"]["input"] == "int8" and t["peers"]["tflite float32"]["input"] == "float32"
        assert all(ordered(p["ms"]) for p in t["peers"].values())


def test_without_litert_on_the_device_the_peer_is_skipped_with_the_reason(device, pair, host_runtime, tmp_path):
    python = python_on_device(device, with_litert=False)
    r = on_device(device, tmp_path / "bench", pair, host_runtime, *python, "--vs", f"a={pair['a']}", "--vs", f"b={pair['b']}")
    assert r.returncode == 0, r.stderr
    assert "measured on the device" in r.stdout and "merged (em_run)" in r.stdout
    assert "kernels used:" in r.stdout and "cpu features:" in r.stdout
    assert f"peer tflite float32: skipped: {python[1]} with ai-edge-litert is not usable on the device: " \
           "ModuleNotFoundError: No module named 'ai_edge_litert'" in r.stdout, r.stdout
    # and without any peer the merged side alone is measured
    r = on_device(device, tmp_path / "bench", pair, host_runtime, "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["peers"] == [] and set(result["tasks"]) == {"a", "b"}


def one_error_line(r, pattern: str) -> None:
    import re
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and r.stderr.strip().splitlines()[-1] == errors[0], r.stderr
    assert re.search(pattern, errors[0]), r.stderr
    assert "Traceback" not in r.stderr


def test_a_bad_host_is_one_error_line(device, pair, host_runtime, tmp_path):
    r = cli("bench", pair["emm"], "--on", device.url(tmp_path / "x", port=free_port()), "--board", "host",
            "--runtime-dir", host_runtime, "--identity", device.key, "--connect-timeout", "5")
    one_error_line(r, r"cannot reach 127\.0\.0\.1:\d+ \(.*Connection refused")
    assert not (tmp_path / "x").exists()


def test_a_refused_key_and_the_wrong_board(device, pair, host_runtime, tmp_path):
    stranger = tmp_path / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    r = cli("bench", pair["emm"], "--on", device.url(tmp_path / "x"), "--board", "host", "--runtime-dir", host_runtime,
            "--identity", stranger, "--ssh-option", f"UserKnownHostsFile={device.known_hosts}")
    one_error_line(r, r"the device refused the key .*Permission denied")
    # an aarch64 board against this x86-64 device: refused after the probe, before anything is built or sent
    never_built = tmp_path / "rpi4"
    r = cli("bench", pair["emm"], "--on", device.url(tmp_path / "x"), "--board", "rpi4-aarch64",
            "--runtime-dir", never_built, "--identity", device.key,
            "--ssh-option", f"UserKnownHostsFile={device.known_hosts}")
    one_error_line(r, r"wrong board: the device's `uname -m` is x86_64, but board rpi4-aarch64 is aarch64")
    assert not never_built.exists() and not (tmp_path / "x").exists()


@pytest.mark.parametrize("args, message", [
    (["--board", "host"], "--data, --profile and --profile-csv are not available with --on"),
    ([], "--on needs --board"),
])
def test_usage_errors(pair, args, message):
    extra = ["--profile"] if "host" in args else []
    r = cli("bench", pair["emm"], "--on", "ssh://nobody@127.0.0.1:1", *args, *extra)
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_local_bench_needs_vs(pair):
    r = cli("bench", pair["emm"], "--runs", "1")
    assert r.returncode == 2 and "--vs" in r.stderr
