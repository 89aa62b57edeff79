"""Boards (boards/*.toml) and cross builds, end to end as boards/README.md writes them.

Every profile loads and validates (and broken ones fail with the file and the field); every board builds
through `edgemerge build --board NAME` (compile + link, for the right ELF machine) and its em_run loads a
model under the board's qemu; for the two emulated boards of the quick path, rpi4-aarch64 (Cortex-A72)
and rpi3-armhf (Cortex-A53 in 32-bit mode), the cross-built em_run agrees with the host runtime on
merged models, `em_run --info` names the NEON kernels, and the runtime's C tests pass under qemu.
Needs what tools/setup.sh installs (cross compilers, qemu-user-static, ARM OpenBLAS): a missing tool
fails the test with the Debian package to install, it is never skipped.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from edgemerge.deploy.boards import BoardError, build_board, load_board, load_boards, source_root
from cli_runner import run_cli

ROOT = Path(__file__).resolve().parents[2]
QEMU_BOARDS = ("rpi4-aarch64", "rpi3-armhf")
REQUIRED = {  # name: (triple, uname -m, qemu -cpu)
    "rpi3-armhf": ("arm-linux-gnueabihf", "armv7l", "cortex-a7"),
    "rpi4-aarch64": ("aarch64-linux-gnu", "aarch64", "cortex-a72"),
    "rpi5-aarch64": ("aarch64-linux-gnu", "aarch64", "cortex-a76"),
    "jetson-nano": ("aarch64-linux-gnu", "aarch64", "cortex-a57"),
    "imx8m": ("aarch64-linux-gnu", "aarch64", "cortex-a53"),
    "host": ("x86_64-linux-gnu", "x86_64", None),
}
ALL_BOARDS = sorted(p.stem for p in (ROOT / "boards").glob("*.toml"))
EMULATED_ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}  # never let a pthread OpenBLAS spin under qemu


cli = partial(run_cli, cwd=ROOT, timeout=900)


@pytest.fixture(scope="session")
def boards():
    return load_boards()


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """build(name) -> (install folder, manifest): each board built once per session by `edgemerge build`."""
    cache: dict[str, tuple[Path, dict]] = {}
    directory = tmp_path_factory.mktemp("boards")

    def build(name: str) -> tuple[Path, dict]:
        if name not in cache:
            out = directory / name
            result = cli("build", "--board", name, "-o", out, "--json")
            assert result.returncode == 0, f"edgemerge build --board {name} failed:\n{result.stderr}"
            cache[name] = (out, json.loads(result.stdout))
        return cache[name]
    return build


def plain_conv_graph(seed=0):
    """One task whose plain 3x3 convolution (24x24x64 -> 64, 21 M multiply-adds) is large enough for the
    runtime to hand it to a linked BLAS."""
    from edgemerge.emm.constants import Act, Op
    from edgemerge.emm.graph import MergedGraph, Node, Task, Tensor
    rng = np.random.default_rng(seed)
    g = MergedGraph(metadata={"edgemerge.tool_version": "test", "edgemerge.original_bytes": 160000,
                              "source.count": 1})
    f32 = lambda name, *shape, scale: g.add_tensor(Tensor.f32(name, rng.normal(size=shape) * scale))  # noqa: E731
    x = g.add_input((24, 24, 64))
    v = g.add_node(Node("conv", Op.CONV2D, x, (24, 24, 64), Act.RELU, (3, 3), (1, 1), (1, 1, 1, 1),
                        weight=f32("conv/w", 3, 3, 64, 64, scale=1 / 24), bias=f32("conv/b", 64, scale=0.1)))
    v = g.add_node(Node("pool", Op.MAX_POOL, v, (12, 12, 64), kernel=(2, 2), stride=(2, 2)))
    v = g.add_node(Node("gap", Op.GLOBAL_AVG_POOL, v, (1, 1, 64)))
    v = g.add_node(Node("head", Op.DENSE, v, (1, 1, 10), weight=f32("head/w", 64, 10, scale=0.2),
                        bias=f32("head/b", 10, scale=0.1)))
    g.tasks.append(Task("big", x, v, 10))
    return g


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    """Merged models: the hand-built two-task graph of tests/graphs.py; two small untrained Keras CNNs (not
    in the repository) merged by the pipeline, as a user would; and a plain convolution big enough for BLAS."""
    import graphs

    from edgemerge.emm import write_emm
    from edgemerge.workflows.pipeline import merge_files

    directory = tmp_path_factory.mktemp("board_models")
    paths = {name: directory / f"{name}.emm" for name in ("two_task", "keras", "plain_conv")}
    write_emm(graphs.two_task_graph(seed=3), paths["two_task"])
    write_emm(plain_conv_graph(seed=4), paths["plain_conv"])

    import keras
    from keras import layers
    keras.utils.set_random_seed(0)
    small_lenet = keras.Sequential([
        keras.Input((16, 16, 1)), layers.Conv2D(8, 5, padding="same", activation="relu"), layers.MaxPooling2D(),
        layers.Conv2D(16, 3, activation="relu"), layers.MaxPooling2D(), layers.Flatten(),
        layers.Dense(32, activation="relu"), layers.Dense(10)])
    small_net3 = keras.Sequential([
        keras.Input((16, 16, 1)), layers.Conv2D(8, 3, padding="same"), layers.BatchNormalization(), layers.ReLU(),
        layers.MaxPooling2D(), layers.Conv2D(16, 3, padding="same", activation="relu"), layers.MaxPooling2D(),
        layers.Flatten(), layers.Dense(24, activation="relu"), layers.Dense(5)])
    small_lenet.save(directory / "a.keras")
    small_net3.save(directory / "b.h5")
    merge_files({"a": directory / "a.keras", "b": directory / "b.h5"}, paths["keras"], preset="accu", kmeans_inits=1)
    return paths


def run_on_board(board, em_run: Path, *args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([*board.emulator(), str(em_run), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=EMULATED_ENV)


def elf_has_interpreter(path: Path) -> bool:
    """True when the ELF file asks for a dynamic loader (a PT_INTERP program header)."""
    data = path.read_bytes()
    is64, little = data[4] == 2, data[5] == 1
    e = "<" if little else ">"
    if is64:
        phoff, = struct.unpack_from(e + "Q", data, 0x20)
        phentsize, phnum = struct.unpack_from(e + "HH", data, 0x36)
    else:
        phoff, = struct.unpack_from(e + "I", data, 0x1C)
        phentsize, phnum = struct.unpack_from(e + "HH", data, 0x2A)
    return any(struct.unpack_from(e + "I", data, phoff + i * phentsize)[0] == 3 for i in range(phnum))


# ------------------------------------------------------------------------------------------------
# profiles
# ------------------------------------------------------------------------------------------------
def test_every_required_board_has_a_valid_profile(boards):
    assert set(REQUIRED) <= set(boards), f"missing profiles: {set(REQUIRED) - set(boards)}"
    for name, (triple, uname_m, qemu_cpu) in REQUIRED.items():
        b = boards[name]
        assert (b.triple, b.uname_m) == (triple, uname_m), name
        assert b.description and b.debian_packages
        if qemu_cpu is None:
            assert not b.cross and b.qemu is None and b.toolchain is None
        else:
            # the sources the profiles came from: this checkout, or the copy an installed package ships
            assert b.toolchain == source_root() / "cmake" / "toolchains" / f"{triple}.cmake"
            assert b.qemu.cpu == qemu_cpu
            assert b.emulator()[:3] == [b.qemu.binary, "-cpu", qemu_cpu]
        assert not any("native" in flag for flag in b.cpu_flags)
    armhf = boards["rpi3-armhf"]
    assert {"-mfpu=neon-vfpv4", "-mfloat-abi=hard"} <= set(armhf.cpu_flags)
    # -mcpu names the board's core on the 64-bit boards
    for name, core in [("rpi4-aarch64", "a72"), ("rpi5-aarch64", "a76"), ("jetson-nano", "a57"), ("imx8m", "a53")]:
        assert f"-mcpu=cortex-{core}" in boards[name].cpu_flags


def test_toolchain_files_are_small_and_name_the_cross_compiler(boards):
    for b in boards.values():
        if not b.cross:
            continue
        code = [line for line in b.toolchain.read_text().splitlines() if line.strip() and not line.startswith("#")]
        assert len(code) <= 12, f"{b.toolchain}: {len(code)} lines; keep toolchain files to about ten"
        assert b.c_compiler() == f"{b.triple}-gcc"
        assert f"CMAKE_SYSTEM_NAME Linux" in b.toolchain.read_text()


def test_setup_installs_every_package_a_board_needs(boards):
    setup = (ROOT / "tools" / "setup.sh").read_text()
    words = set(re.findall(r"[\w.+:-]+", setup))
    for b in boards.values():
        for package in b.debian_packages:
            assert package in words, f"{b.name} needs the Debian package {package}; add it to tools/setup.sh"


BROKEN_PROFILES = [
    # (what to change in rpi4-aarch64.toml, the error it must give)
    (("triple = \"aarch64-linux-gnu\"\n", ""), r"triple: missing"),
    (("simd = \"auto\"\n", "simd = \"auto\"\ncpuflags = []\n"), r"cpuflags: unknown key"),
    (("-mcpu=cortex-a72", "-march=native"), r"cpu_flags: -march=native targets the build machine"),
    (("kind = \"openblas-static\"", "kind = \"mkl\""), r"blas\.kind: 'mkl' is not one of openblas-static, none"),
    (("library = \"/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.a\"\n", ""), r"blas\.library: missing"),
    (("static = true", "static = \"no\""), r"static: expected true or false"),
    (("aarch64-linux-gnu.cmake", "nowhere.cmake"), r"toolchain: 'cmake/toolchains/nowhere.cmake' does not exist"),
    (("sysroot = \"/\"", "sysroot = \"usr/aarch64\""), r"qemu\.sysroot: 'usr/aarch64' must be an absolute path"),
    (("[qemu]", "[emulator]"), r"emulator: unknown key"),
    (("name = \"rpi4-aarch64\"", "name = \"rpi4\""), r"name: 'rpi4' differs from the file name"),
    (("uname_m = \"aarch64\"", "uname_m = "), r"not valid TOML"),
    (("\"libopenblas-dev:arm64\"", "\"libopenblas dev\""), r"debian_packages: 'libopenblas dev' is not a Debian"),
]


@pytest.mark.parametrize("change, message", BROKEN_PROFILES, ids=[m for _, m in BROKEN_PROFILES])
def test_a_broken_profile_is_rejected_with_its_file_and_field(tmp_path, change, message):
    text = (ROOT / "boards" / "rpi4-aarch64.toml").read_text()
    old, new = change
    assert old in text
    path = tmp_path / "rpi4-aarch64.toml"
    path.write_text(text.replace(old, new))
    with pytest.raises(BoardError, match=message) as caught:
        load_board(path, ROOT)
    assert str(path) in str(caught.value)


def test_a_cross_board_without_qemu_is_rejected(tmp_path):
    text = (ROOT / "boards" / "imx8m.toml").read_text()
    path = tmp_path / "imx8m.toml"
    path.write_text(text[:text.index("[qemu]")])
    with pytest.raises(BoardError, match=r"qemu: missing"):
        load_board(path, ROOT)


# ------------------------------------------------------------------------------------------------
# the command line
# ------------------------------------------------------------------------------------------------
def test_boards_lists_every_profile():
    result = cli("boards")
    assert result.returncode == 0, result.stderr
    for name in ALL_BOARDS:
        assert re.search(rf"^{re.escape(name)}\s", result.stdout, re.M), result.stdout
    rows = json.loads(cli("boards", "--json").stdout)
    assert [r["name"] for r in rows] == ALL_BOARDS
    rpi4 = next(r for r in rows if r["name"] == "rpi4-aarch64")
    assert rpi4["toolchain"] == "cmake/toolchains/aarch64-linux-gnu.cmake"
    assert rpi4["qemu"] == {"binary": "qemu-aarch64-static", "cpu": "cortex-a72", "sysroot": "/"}
    assert rpi4["missing"] == [], f"this machine cannot build rpi4-aarch64: {rpi4['missing']}"


def test_build_of_an_unknown_board_lists_the_known_ones(tmp_path):
    result = cli("build", "--board", "rpi9", "-o", tmp_path / "out")
    assert result.returncode == 1
    assert "error: unknown board 'rpi9'; known boards: " + ", ".join(ALL_BOARDS) in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_build_without_the_cross_compiler_names_the_debian_package(tmp_path):
    bin_dir = tmp_path / "bin"  # a PATH with cmake but no cross compiler
    bin_dir.mkdir()
    (bin_dir / "cmake").symlink_to(shutil.which("cmake"))
    result = cli("build", "--board", "rpi3-armhf", "-o", tmp_path / "out", env={**os.environ, "PATH": str(bin_dir)})
    assert result.returncode == 1, result.stdout
    assert "the cross compiler arm-linux-gnueabihf-gcc is not installed" in result.stderr
    assert "gcc-arm-linux-gnueabihf" in result.stderr and "apt-get install" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_a_failed_build_leaves_the_previous_build_and_no_temporary_folder(tmp_path, boards):
    text = boards["imx8m"].profile.read_text().replace("-mcpu=cortex-a53", "-mcpu=not-a-cpu")
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "imx8m.toml").write_text(text)
    broken = load_board(tmp_path / "profiles" / "imx8m.toml", ROOT)
    out = tmp_path / "out"
    out.mkdir()
    (out / "edgemerge-build.json").write_text("{}")   # an earlier build
    (out / "marker").write_text("earlier build")
    with pytest.raises(BoardError, match=r"cmake configure failed"):
        build_board(broken, out)
    assert (out / "marker").read_text() == "earlier build"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "profiles"]


def test_build_refuses_to_replace_a_folder_that_is_not_a_build(tmp_path):
    (tmp_path / "precious.txt").write_text("mine")
    result = cli("build", "--board", "imx8m", "-o", tmp_path)
    assert result.returncode == 1
    assert "is not an edgemerge build" in result.stderr
    assert (tmp_path / "precious.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------------------
# builds
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL_BOARDS)
def test_every_board_builds_and_its_em_run_loads_a_model(name, boards, built, models):
    from edgemerge.deploy.boards import ELF_MACHINES, elf_machine
    board = boards[name]
    out, manifest = built(name)
    em_run = out / "em_run"
    for rel in ("em_run", "lib/libedgemerge_runtime.a", "include/edgemerge/em_runtime.h",
                "include/edgemerge/em_format.h", "edgemerge-build.json"):
        assert (out / rel).is_file(), rel
    assert not list(out.parent.glob(f".{name}.building-*")), "temporary build folder left behind"
    assert elf_machine(em_run) == ELF_MACHINES[board.uname_m]
    assert elf_has_interpreter(em_run) == (not board.static), "static linking does not match the profile"
    assert manifest["board"] == name and manifest["triple"] == board.triple
    assert manifest["c_flags"] == list(board.cpu_flags)
    result = run_on_board(board, em_run, models["two_task"], "--info")
    assert result.returncode == 0, result.stderr
    assert "format version 1" in result.stdout


@pytest.mark.parametrize("name", ALL_BOARDS)
def test_the_emulated_board_reports_the_profiles_uname_m(name, boards, tmp_path):
    """`uname -m` on the board (what the flash feature will check) is what the profile says: a program
    built with the board's compiler and flags asks uname(2) under the board's qemu (natively for host)."""
    board = boards[name]
    source = tmp_path / "machine.c"
    source.write_text('#include <stdio.h>\n#include <sys/utsname.h>\n'
                      'int main(void) { struct utsname u; if (uname(&u)) return 1; puts(u.machine); return 0; }\n')
    compiler = board.c_compiler()
    build = subprocess.run([compiler, *board.cpu_flags, "-static", "-O2", str(source), "-o", str(tmp_path / "m")],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    result = run_on_board(board, tmp_path / "m")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == board.uname_m


@pytest.mark.parametrize("name", ALL_BOARDS)
def test_every_board_links_the_blas_its_profile_names(name, boards, built):
    """openblas-static: cblas_sgemm is defined inside em_run; none: no BLAS symbol at all (the runtime's
    own GEMM). Needs runtime_c/CMakeLists.txt to honour EM_BLAS / EM_OPENBLAS_LIBRARY."""
    _, manifest = built(name)
    assert manifest["blas"]["used"] == boards[name].blas, manifest["blas"]


# ------------------------------------------------------------------------------------------------
# the two emulated boards: parity with the host runtime, --info, C tests under qemu
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["two_task", "keras", "plain_conv"])
@pytest.mark.parametrize("name", QEMU_BOARDS)
def test_cross_built_em_run_under_qemu_matches_the_host_runtime(name, model, boards, built, models, tmp_path):
    from edgemerge.runtime import Runtime
    board = boards[name]
    out, _ = built(name)
    host = Runtime(models[model])
    rng = np.random.default_rng(7)
    for task in host.tasks:
        for sample in range(3):
            x = rng.normal(size=task.input_shape).astype(np.float32)
            x_path, y_path = tmp_path / f"{task.name}{sample}.f32", tmp_path / f"{task.name}{sample}.out.f32"
            x.astype("<f4").tofile(x_path)
            result = run_on_board(board, out / "em_run", models[model], "--task", task.name,
                                  "--input", x_path, "--output", y_path)
            assert result.returncode == 0, result.stderr
            got = np.fromfile(y_path, dtype="<f4")
            want = host.run(task.name, x[None])[0]
            assert got.shape == want.shape
            assert np.argmax(got) == np.argmax(want), f"{task.name} sample {sample}: {got} vs {want}"
            err = np.max(np.abs(got - want)) / np.max(np.abs(want))
            assert err <= 1e-4, f"{task.name} sample {sample}: max relative error {err}"


@pytest.mark.parametrize("name", QEMU_BOARDS)
def test_em_run_info_under_qemu_names_the_neon_kernels(name, boards, built, models):
    """--info reports the format version, the CPU features detected and the kernel of every node; on these
    boards the LUT layers must run NEON kernels (fails until runtime_c/src/arm/ lands)."""
    board = boards[name]
    out, _ = built(name)
    result = run_on_board(board, out / "em_run", models["keras"], "--info")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "format version 1" in text
    features = re.search(r"^cpu features: (.*)$", text, re.M)
    assert features, text
    node_lines = text.split("\nnodes: ", 1)[1].splitlines()[2:]  # after the count and the header line
    kernels = [(line.split()[2], line.split()[-1]) for line in node_lines if re.match(r"^\s+\d+\s", line)]
    assert kernels and all(re.fullmatch(r"[a-z0-9_]+_[a-z0-9]+", k) for _, k in kernels), text
    assert re.search(r"neon|asimd", features.group(1), re.I), f"no NEON among the CPU features: {features.group(1)}"
    neon = {op: k for op, k in kernels if k.endswith("_neon")}
    assert any(op.startswith("LUT_") for op in neon), f"no LUT layer runs a NEON kernel on {name}:\n{text}"
    if board.blas == "openblas-static":  # and the BLAS the profile links serves the large convolution
        result = run_on_board(board, out / "em_run", models["plain_conv"], "--info")
        assert result.returncode == 0, result.stderr
        conv = re.search(r"^\s+0\s+conv\s+CONV2D\s.*\s(\S+)$", result.stdout, re.M)
        assert conv and "blas" in conv.group(1), result.stdout


@pytest.mark.parametrize("name", QEMU_BOARDS)
def test_c_tests_pass_under_qemu(name, boards, tmp_path):
    board = boards[name]
    # from another folder, into a relative one: the checkout comes from EDGEMERGE_SOURCE_DIR
    result = cli("build", "--board", name, "-o", "out", "--ctest", "--json", cwd=tmp_path,
                 env={**os.environ, "EDGEMERGE_SOURCE_DIR": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "em_run").is_file()
    tests = json.loads(result.stdout)["ctest"]
    assert tests["total"] >= 5 and tests["passed"] == tests["total"], tests
    assert tests["emulator"] == board.emulator() and board.qemu.cpu in tests["emulator"]
