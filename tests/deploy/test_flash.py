"""`edgemerge flash` and `edgemerge export-c`, end to end.

The "device" is a real OpenSSH server this file starts on 127.0.0.1 on a free port, with host and user keys
it generates, and stops at the end (Debian openssh-server, installed by `make setup`; nothing leaves the
machine). It is x86-64, so flashes that install and run em_run use the `host` board; the wrong-board test
flashes for rpi4-aarch64 and must be refused before anything changes. The server's sessions get a PATH that
starts with a folder the tests can put fake commands in (a `cat` that corrupts what it writes, a `df` that
claims free space), to play a failing device honestly through the real flash code.

Every failure test checks: exit status 1, a clear `error:` line, the previous model byte-identical, and no
temporary file left on the target. The kill tests SIGKILL a rate-limited flash while its temporary file is
being written. export-c output is compiled with runtime_c/examples/embedded_model.c for the host and, with
the cross compiler, for rpi4-aarch64 under qemu-user, and both must print the host runtime's logits.
Missing tools (sshd, cross compiler, qemu) fail the tests with what to install; they are never skipped.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zlib
from functools import partial
from pathlib import Path

import graphs
import numpy as np
import pytest

from edgemerge.deploy.flash import TMP_MARK, DirTarget, FlashError, flash, parse_target
from edgemerge.emm import to_bytes, write_emm
from ssh_server import free_port
from cli_runner import run_cli

ROOT = Path(__file__).resolve().parents[2]


cli = partial(run_cli, timeout=300, cwd=ROOT)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if TMP_MARK in p.name) if folder.is_dir() else []


@pytest.fixture(scope="module")
def host_runtime(tmp_path_factory):
    """em_run of the `host` board, built the way `flash --with-runtime` builds a missing one."""
    from edgemerge.deploy.boards import get_board
    from edgemerge.deploy.flash import board_em_run
    out = tmp_path_factory.mktemp("runtime") / "host"
    em_run = board_em_run(get_board("host"), out, log=lambda m: None)
    assert em_run.is_file() and os.access(em_run, os.X_OK)
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("flash_models")
    paths = {"old": d / "old.emm", "new": d / "new.emm", "big": d / "big.emm"}
    write_emm(graphs.two_task_graph(seed=1), paths["old"])
    write_emm(graphs.two_task_graph(seed=2), paths["new"])
    write_emm(graphs.lut_conv_graph(h=16, w=16, cin=128, cout=64, r=4, c=256, seed=5), paths["big"])
    assert paths["big"].stat().st_size > 100_000
    return paths


def install_old(folder: Path, models, name="merged.emm") -> bytes:
    folder.mkdir(parents=True, exist_ok=True)
    old = models["old"].read_bytes()
    (folder / name).write_bytes(old)
    return old


def flash_target(kind: str, device, folder: Path) -> tuple[str, list[str]]:
    """--to and the extra options of a flash to `folder` over ssh (the loopback server) or as a local folder."""
    if kind == "ssh":
        return device.url(folder), device.args()
    return f"dir:{folder}", []


def assert_failed_cleanly(result, message: str, folder: Path, old: bytes, name="merged.emm"):
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    error = result.stderr.strip().splitlines()[-1]        # after the progress lines
    assert error.startswith("error: "), result.stderr
    assert re.search(message, error), result.stderr
    assert "Traceback" not in result.stderr
    assert (folder / name).read_bytes() == old, "the previous model changed"
    assert leftovers(folder) == []


# ------------------------------------------------------------------------------------------------
# the two must-shows: a verified flash over ssh and into a folder
# ------------------------------------------------------------------------------------------------
def test_flash_over_ssh_with_runtime_and_verify(device, models, host_runtime, tmp_path):
    folder = tmp_path / "opt" / "models"
    old = install_old(folder, models)
    new = models["new"].read_bytes()
    r = cli("flash", models["new"], "--board", "host", "--to", device.url(folder), *device.args(),
            "--with-runtime", "--runtime-dir", host_runtime, "--verify", "--name", "merged.emm", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert (folder / "merged.emm").read_bytes() == new
    assert (folder / "em_run").read_bytes() == (host_runtime / "em_run").read_bytes()
    assert os.access(folder / "em_run", os.X_OK)
    assert leftovers(folder) == []
    import hashlib
    files = {f["name"]: f for f in result["files"]}
    assert files["merged.emm"]["sha256"] == hashlib.sha256(new).hexdigest() == result["sha256"]
    assert files["em_run"]["sha256"] == hashlib.sha256((host_runtime / "em_run").read_bytes()).hexdigest()
    assert result["previous_sha256"] == hashlib.sha256(old).hexdigest()
    assert result["machine"] == "x86_64" and result["board"] == "host"
    assert set(result["verify"]) == {"a", "b"}
    for task, v in result["verify"].items():
        assert v["ok"] and v["top1_device"] == v["top1_host"] and v["max_abs_diff"] <= 1e-4, (task, v)

    # again, in text: the same em_run is kept (its SHA-256 on the device matches), the model is replaced
    r = cli("flash", models["old"], "--board", "host", "--to", device.url(folder), *device.args(), "--verify",
            "--with-runtime", "--runtime-dir", host_runtime, "--name", "merged.emm")
    assert r.returncode == 0, r.stderr
    assert re.search(r"em_run .* \(already there, kept\)", r.stdout), r.stdout
    assert re.search(r"merged\.emm .* \(read back on the target\)", r.stdout), r.stdout
    assert "verify a: top-1" in r.stdout and "verify b: top-1" in r.stdout
    assert (folder / "merged.emm").read_bytes() == old
    assert (folder / "em_run").read_bytes() == (host_runtime / "em_run").read_bytes()


def test_flash_to_a_folder_with_runtime_and_verify(models, host_runtime, tmp_path):
    folder = tmp_path / "sdcard" / "models"
    folder.parent.mkdir()
    r = cli("flash", models["new"], "--to", f"dir:{folder}", "--json")      # creates the last folder only
    assert r.returncode == 0, r.stderr
    assert (folder / "new.emm").read_bytes() == models["new"].read_bytes()
    old = models["new"].read_bytes()
    r = cli("flash", models["old"], "--board", "host", "--to", f"dir:{folder}", "--name", "new.emm",
            "--with-runtime", "--runtime-dir", host_runtime, "--verify", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert (folder / "new.emm").read_bytes() == models["old"].read_bytes()
    import hashlib
    assert result["previous_sha256"] == hashlib.sha256(old).hexdigest()
    assert result["files"][-1]["sha256"] == hashlib.sha256(models["old"].read_bytes()).hexdigest()
    assert all(v["ok"] for v in result["verify"].values()) and set(result["verify"]) == {"a", "b"}
    assert oct((folder / "new.emm").stat().st_mode & 0o777) == oct(0o644)
    assert leftovers(folder) == []


def test_a_card_for_the_pi_verified_under_qemu(models, rpi4_build, tmp_path):
    """dir: + --verify runs the board's em_run from the card under the board's qemu here."""
    rpi4_dir, _ = rpi4_build
    card = tmp_path / "card"
    r = cli("flash", models["new"], "--board", "rpi4-aarch64", "--to", f"dir:{card}", "--with-runtime",
            "--runtime-dir", rpi4_dir, "--verify", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert (card / "em_run").read_bytes()[18:20] == (0xB7).to_bytes(2, "little")   # an AArch64 ELF
    assert (card / "new.emm").read_bytes() == models["new"].read_bytes()
    assert set(result["verify"]) == {"a", "b"} and all(v["ok"] for v in result["verify"].values())


def test_a_missing_mount_point_is_not_created(models, tmp_path):
    r = cli("flash", models["new"], "--to", f"dir:{tmp_path / 'not-mounted' / 'models'}")
    assert r.returncode == 1 and "no such folder" in r.stderr, r.stderr
    assert not (tmp_path / "not-mounted").exists()


def test_paths_with_spaces_and_shell_characters_reach_the_device_intact(device, models, tmp_path):
    folder = tmp_path / "it's a $(touch pwned) `x`; models"
    r = cli("flash", models["new"], "--to", device.url(folder), *device.args(), "--name", "m o;del.emm")
    assert r.returncode == 0, r.stderr
    assert (folder / "m o;del.emm").read_bytes() == models["new"].read_bytes()
    assert not list(tmp_path.rglob("pwned")) and not Path("pwned").exists()


# ------------------------------------------------------------------------------------------------
# killed midway: the previous model stays
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["ssh", "dir"])
def test_a_flash_killed_midway_leaves_the_previous_model(kind, device, models, tmp_path):
    folder = tmp_path / "target"
    old = install_old(folder, models)
    to, extra = flash_target(kind, device, folder)
    size = models["big"].stat().st_size
    proc = subprocess.Popen([sys.executable, "-m", "edgemerge.cli", "flash", models["big"], "--to", to,
                             *map(str, extra), "--name", "merged.emm", "--limit-rate", "32"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        partial = 0
        while time.monotonic() < deadline and partial == 0:
            for p in folder.glob(f".merged.emm{TMP_MARK}*"):
                try:
                    partial = p.stat().st_size
                except FileNotFoundError:
                    pass
            time.sleep(0.05)
        assert partial > 0, "the temporary file never appeared"
        assert partial < size
        os.kill(proc.pid, signal.SIGKILL)   # no clean-up code runs in the flash itself
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert (folder / "merged.emm").read_bytes() == old
    if kind == "ssh":
        # the device saw its input end early: the checksum cannot match, it removes its temporary file
        deadline = time.monotonic() + 20
        while leftovers(folder) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert leftovers(folder) == []
    else:
        assert len(leftovers(folder)) == 1      # nothing can clean up after SIGKILL on a local folder...
    assert (folder / "merged.emm").read_bytes() == old
    r = cli("flash", models["new"], "--to", to, *extra, "--name", "merged.emm", "--json")
    assert r.returncode == 0, r.stderr
    assert (folder / "merged.emm").read_bytes() == models["new"].read_bytes()
    assert leftovers(folder) == []                # ...the next flash of that name removes it
    assert json.loads(r.stdout)["leftovers_removed"] == (0 if kind == "ssh" else 1)


# ------------------------------------------------------------------------------------------------
# clear failures, the previous model intact
# ------------------------------------------------------------------------------------------------
def test_unreachable_host(device, models, tmp_path):
    folder = tmp_path / "t"
    old = install_old(folder, models)
    started = time.monotonic()
    r = cli("flash", models["new"], "--to", device.url(folder, port=free_port()), *device.args(),
            "--name", "merged.emm", "--connect-timeout", "5")
    assert_failed_cleanly(r, r"cannot reach 127\.0\.0\.1:\d+ \(.*Connection refused", folder, old)
    assert time.monotonic() - started < 30


def test_a_refused_key(device, models, tmp_path):
    folder = tmp_path / "t"
    old = install_old(folder, models)
    stranger = tmp_path / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    r = cli("flash", models["new"], "--to", device.url(folder), *device.args(key=stranger), "--name", "merged.emm")
    assert_failed_cleanly(r, rf"the device refused the key {re.escape(str(stranger))} for {device.user} "
                             r"\(.*Permission denied \(publickey", folder, old)


def test_the_wrong_board_is_refused_before_anything_changes(device, models, tmp_path):
    folder = tmp_path / "t"
    old = install_old(folder, models)
    before = sorted(p.name for p in folder.iterdir())
    r = cli("flash", models["new"], "--board", "rpi4-aarch64", "--to", device.url(folder), *device.args(),
            "--name", "merged.emm", "--with-runtime")
    assert_failed_cleanly(r, r"wrong board: the device's `uname -m` is x86_64, but board rpi4-aarch64 is aarch64",
                          folder, old)
    assert sorted(p.name for p in folder.iterdir()) == before    # no em_run either


def test_a_checksum_mismatch_on_the_device(device, models, tmp_path):
    """The device's `cat` flips one byte of what it writes (a bad card, a flaky link): the read-back SHA-256
    differs, nothing is renamed."""
    device.fake("cat", "#!/usr/bin/env python3\nimport sys\n"
                       "d = bytearray(sys.stdin.buffer.read())\n"
                       "d[len(d) // 2] ^= 0x40\n"
                       "sys.stdout.buffer.write(d)\n")
    folder = tmp_path / "t"
    old = install_old(folder, models)
    r = cli("flash", models["new"], "--to", device.url(folder), *device.args(), "--name", "merged.emm")
    assert_failed_cleanly(r, r"checksum mismatch for merged\.emm: the device read back sha256 [0-9a-f]{64}, "
                             r"the host sent [0-9a-f]{64}; the previous file is unchanged", folder, old)


def test_a_checksum_mismatch_in_a_folder(models, tmp_path, monkeypatch):
    folder = tmp_path / "t"
    old = install_old(folder, models)

    def corrupting_write(self, f, chunk):
        f.write(chunk[:-1] + bytes([chunk[-1] ^ 1]))
    monkeypatch.setattr(DirTarget, "_write", corrupting_write)
    with pytest.raises(FlashError, match=r"checksum mismatch for merged\.emm: the target read back sha256"):
        flash(models["new"], parse_target(f"dir:{folder}"), name="merged.emm")
    assert (folder / "merged.emm").read_bytes() == old and leftovers(folder) == []


def test_no_space_while_writing_a_folder(models, tmp_path, monkeypatch):
    """ENOSPC from the write itself (the space check passed): simulated, the same path as a real full card."""
    folder = tmp_path / "t"
    old = install_old(folder, models)

    def full(self, f, chunk):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(DirTarget, "_write", full)
    with pytest.raises(FlashError, match=r"no space left writing merged\.emm .* the previous file is unchanged"):
        flash(models["new"], parse_target(f"dir:{folder}"), name="merged.emm")
    assert (folder / "merged.emm").read_bytes() == old and leftovers(folder) == []


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs (needs root and mount(2), which `make test` has in CI and here)."""
    mount = tmp_path / "small"
    mount.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip()}); "
                    "test_no_space_while_writing_a_folder covers ENOSPC without a mount")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.parametrize("kind", ["ssh", "dir"])
def test_a_full_disk(kind, device, models, small_disk):
    folder = small_disk / "models"
    old = install_old(folder, models)
    to, extra = flash_target(kind, device, folder)
    r = cli("flash", models["big"], "--to", to, *extra, "--name", "merged.emm")
    assert_failed_cleanly(r, r"the device's disk is full: \d+ bytes free, \d+ needed for merged\.emm; "
                             r"nothing was changed", folder, old)
    if kind == "ssh":
        # a device whose df claims room (the disk filled up between the check and the write): the write
        # itself fails with ENOSPC, the temporary file goes, the old model stays
        device.fake("df", "#!/bin/sh\necho 'Filesystem 1024-blocks Used Available Capacity Mounted on'\n"
                          "echo 'tmpfs 999999 0 999999 0% /'\n")
        r = cli("flash", models["big"], "--to", to, *extra, "--name", "merged.emm")
        assert_failed_cleanly(r, r"the device's disk is full: no space left writing merged\.emm .*"
                                 r"the previous file is unchanged", folder, old)


def test_verify_without_em_run_on_the_device_says_what_to_add(device, models, tmp_path):
    folder = tmp_path / "t"
    r = cli("flash", models["new"], "--to", device.url(folder), *device.args(), "--verify")
    assert r.returncode == 1 and "--with-runtime" in r.stderr, r.stderr
    assert (folder / "new.emm").read_bytes() == models["new"].read_bytes()   # installed, only not verified


def test_a_corrupt_model_is_never_sent(models, tmp_path):
    bad = tmp_path / "bad.emm"
    data = bytearray(models["new"].read_bytes())
    data[200] ^= 0xFF
    bad.write_bytes(bytes(data))
    folder = tmp_path / "t"
    r = cli("flash", bad, "--to", f"dir:{folder}")
    assert r.returncode == 1 and "error:" in r.stderr
    assert not folder.exists()


@pytest.mark.parametrize("spec, message", [
    ("ftp://x/y", "unknown target"), ("ssh://host", "no folder"), ("ssh:///opt", "no host"),
    ("ssh://host:99999/opt", "port"), ("dir:", "needs a folder")])
def test_bad_targets(spec, message):
    with pytest.raises(FlashError, match=message):
        parse_target(spec)


def test_target_urls():
    t = parse_target("ssh://pi@raspberrypi.local:2222/opt/models/", identity="k")
    assert (t.user, t.host, t.port, t.directory, t.identity) == ("pi", "raspberrypi.local", 2222, "/opt/models", "k")
    assert parse_target("ssh://pi@[fe80::1]/~/models").directory == "models"
    assert parse_target("ssh://h/opt", port=23).port == 23
    with pytest.raises(FlashError, match="contradicts"):
        parse_target("ssh://h:22/opt", port=23)
    cmd = parse_target("ssh://h/opt", ssh_options=["StrictHostKeyChecking=yes"]).command("echo", "a b")
    assert cmd.index("StrictHostKeyChecking=yes") < cmd.index("StrictHostKeyChecking=accept-new")  # user first
    assert cmd[-1] == "sh -c echo sh 'a b'" and "BatchMode=yes" in cmd


# ------------------------------------------------------------------------------------------------
# export-c
# ------------------------------------------------------------------------------------------------
def embedded_input(shape, task_index: int) -> np.ndarray:
    """The input runtime_c/examples/embedded_model.c computes: ((37 i + 11 t) mod 101) / 50 - 1, in float32."""
    i = np.arange(int(np.prod(shape)), dtype=np.int64)
    return (((i * 37 + 11 * task_index) % 101).astype(np.float32) / np.float32(50) - np.float32(1)).reshape(shape)


def parse_embedded_output(text: str) -> tuple[dict, dict[str, tuple[int, np.ndarray]]]:
    lines = text.strip().splitlines()
    head = re.match(r"model (\d+) bytes, format version (\d+), aligned (\d), loader allocated (\d+) bytes", lines[0])
    assert head, text
    info = dict(zip(("bytes", "version", "aligned", "allocated"), map(int, head.groups())))
    tasks = {}
    for line in lines[1:]:
        m = re.match(r"task (\S+) top1 (\d+) logits (.*)$", line)
        assert m, line
        tasks[m.group(1)] = (int(m.group(2)), np.array([float(v) for v in m.group(3).split()], dtype=np.float32))
    return info, tasks


@pytest.fixture(scope="module")
def rpi4_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("rpi4") / "rpi4-aarch64"
    r = cli("build", "--board", "rpi4-aarch64", "-o", out, "--json", timeout=900)
    assert r.returncode == 0, f"edgemerge build --board rpi4-aarch64 failed (tools/setup.sh installs the cross " \
                              f"compiler and qemu):\n{r.stderr}"
    return out, json.loads(r.stdout)


def test_export_c_compiles_and_runs_on_the_host_and_under_qemu(models, host_runtime, rpi4_build, tmp_path):
    from edgemerge.deploy.boards import get_board
    from edgemerge.runtime import Runtime

    graph = graphs.two_task_graph(seed=9)
    # a bigger task too, so "used in place" is visible: the loader allocates far less than the tensor data
    big = graphs.lut_conv_graph(h=16, w=16, cin=128, cout=64, r=4, c=256, seed=5)
    data = to_bytes(graph)
    model = tmp_path / "fw.emm"
    model.write_bytes(data)
    header = tmp_path / "fashion_words.h"
    r = cli("export-c", model, "-o", header, "--align", "128", "--name", "fashion_words", "--json")
    assert r.returncode == 0, r.stderr
    text = header.read_text()
    assert f"#define EM_MODEL_FASHION_WORDS_SIZE {len(data)}u" in text
    assert "#define EM_MODEL_FASHION_WORDS_FORMAT_VERSION 1u" in text
    assert f"#define EM_MODEL_FASHION_WORDS_CHECKSUM 0x{zlib.crc32(data):08X}u" in text
    assert "EM_MODEL_ALIGNED(128) static const unsigned char fashion_words[EM_MODEL_FASHION_WORDS_SIZE]" in text
    assert json.loads(r.stdout)["crc32"] == zlib.crc32(data)
    big_model = tmp_path / "big.emm"
    write_emm(big, big_model)
    r = cli("export-c", big_model, "-o", tmp_path / "model_data.h")          # default name and alignment
    assert r.returncode == 0, r.stderr
    assert "EM_MODEL_ALIGNED(64) static const unsigned char model_data[" in (tmp_path / "model_data.h").read_text()

    example = ROOT / "runtime_c" / "examples" / "embedded_model.c"
    programs = {"fw": ["-DEM_MODEL_HEADER=\"fashion_words.h\"", "-DEM_MODEL_DATA=fashion_words",
                       "-DEM_MODEL_DATA_SIZE=EM_MODEL_FASHION_WORDS_SIZE",
                       "-DEM_MODEL_DATA_ALIGNMENT=EM_MODEL_FASHION_WORDS_ALIGNMENT"],
               "big": []}
    rpi4_dir, rpi4_manifest = rpi4_build
    host_manifest = json.loads((host_runtime / "edgemerge-build.json").read_text())
    rpi4 = get_board("rpi4-aarch64")
    outputs = {}
    for board_name, build_dir, manifest, compiler, flags, emulator in (
            ("host", host_runtime, host_manifest, os.environ.get("CC", "cc"), [], []),
            ("rpi4-aarch64", rpi4_dir, rpi4_manifest, rpi4.c_compiler(), [*rpi4.cpu_flags, "-static"],
             rpi4.emulator())):
        assert shutil.which(compiler), f"{compiler} is missing: run `make setup` (tools/setup.sh)"
        for program, defines in programs.items():
            exe = tmp_path / f"{program}-{board_name}"
            build = subprocess.run([compiler, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", *flags, *defines,
                                    f"-I{build_dir / 'include'}", f"-I{tmp_path}", str(example), "-o", str(exe),
                                    f"-L{build_dir / 'lib'}", *manifest["link"]], capture_output=True, text=True)
            assert build.returncode == 0, build.stderr
            run = subprocess.run([*emulator, str(exe)], capture_output=True, text=True, timeout=120,
                                 env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
            assert run.returncode == 0, run.stderr
            outputs[board_name, program] = parse_embedded_output(run.stdout)

    for program, path in (("fw", model), ("big", big_model)):
        host = Runtime(path)
        size = path.stat().st_size
        for board_name in ("host", "rpi4-aarch64"):
            info, tasks = outputs[board_name, program]
            assert info["bytes"] == size and info["version"] == 1 and info["aligned"] == 1
            assert set(tasks) == set(host.task_names)
            for t in host.tasks:
                want = host.run(t.name, embedded_input(t.input_shape, t.index)[None])[0]
                top1, got = tasks[t.name]
                assert top1 == int(np.argmax(want)), (board_name, program, t.name, got, want)
                scale = max(1.0, float(np.max(np.abs(want))))
                assert np.max(np.abs(got - want)) <= 1e-4 * scale, (board_name, program, t.name, got, want)
        # the same logits on the board and on the host (both within 1e-4 of the host runtime above)
        for t in host.task_names:
            on_board, on_host = outputs["rpi4-aarch64", program][1][t][1], outputs["host", program][1][t][1]
            np.testing.assert_allclose(on_board, on_host, rtol=0,
                                       atol=2e-4 * max(1.0, float(np.max(np.abs(on_host)))))
    # used in place: the loader allocates its tables and the fast kernels' repacked indices, but less than the
    # big model's codebook alone (32 segments x 256 codewords x 4 floats), so no tensor data was copied
    codebook_bytes = 32 * 256 * 4 * 4
    for board_name in ("host", "rpi4-aarch64"):
        big_info = outputs[board_name, "big"][0]
        assert big_info["allocated"] < codebook_bytes < big_info["bytes"], big_info


@pytest.mark.parametrize("args, message", [
    (["--align", "32"], "at least 64"), (["--align", "96"], "power of two"),
    (["--name", "1abc"], "not a C identifier"), (["--name", "static"], "not a C identifier")])
def test_export_c_rejects_bad_options(args, message, models, tmp_path):
    out = tmp_path / "m.h"
    r = cli("export-c", models["new"], "-o", out, *args)
    assert r.returncode == 1 and message in r.stderr, r.stderr
    assert not out.exists()


def test_export_c_refuses_a_corrupt_model_and_keeps_the_old_header(models, tmp_path):
    out = tmp_path / "m.h"
    out.write_text("old header\n")
    bad = tmp_path / "bad.emm"
    data = bytearray(models["new"].read_bytes())
    data[-1] ^= 0xFF
    bad.write_bytes(bytes(data))
    r = cli("export-c", bad, "-o", out)
    assert r.returncode == 1 and "error:" in r.stderr and "CRC" in r.stderr.upper(), r.stderr
    assert out.read_text() == "old header\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.emm", "m.h"]
