"""Board profiles (boards/*.toml) and builds of the C runtime for them.

A board is data, not code: one TOML file per board names its target triple, CMake toolchain file, CPU
flags, BLAS choice, qemu-user binary and CPU model, sysroot, the `uname -m` it reports and the Debian
packages it needs (boards/README.md documents every field). `load_boards()` validates every profile
before anything uses it; `build_board()` configures runtime_c/ with CMake for one board, builds it in a
temporary folder, optionally runs the C tests (under the board's qemu when cross compiling), and only
then moves the static library, the headers and `em_run` into place.

Used by `edgemerge boards` and `edgemerge build --board NAME`.
"""
from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgemerge import __version__
from edgemerge.errors import EdgemergeError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as a package
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ModuleNotFoundError:
        tomllib = None  # type: ignore[assignment]

BLAS_KINDS = ("openblas-static", "none")
SIMD_CHOICES = ("auto", "none")
MANIFEST_NAME = "edgemerge-build.json"
"""Written into every build output folder; its presence is what lets a later build replace the folder."""

# What `platform.machine()` says on a host that can build a native board with this `uname_m`.
_NATIVE_MACHINES = {"x86_64": ("x86_64", "AMD64"), "aarch64": ("aarch64", "arm64"), "armv7l": ("armv7l",)}
# ELF e_machine of the binaries a board's `uname -m` runs (checked on every build).
ELF_MACHINES = {"x86_64": 0x3E, "aarch64": 0xB7, "armv7l": 0x28}

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_TRIPLE = re.compile(r"^[a-z0-9_]+(-[a-z0-9_]+){2,3}$")
_UNAME = re.compile(r"^[a-z0-9_]+$")
_DEBIAN_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(:[a-z0-9]+)?$")
_NATIVE_FLAG = re.compile(r"^-m(arch|cpu|tune)=native$")


class BoardError(EdgemergeError):
    """A board profile is invalid, unknown, or its build could not be made."""


# ------------------------------------------------------------------------------------------------
# profiles
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Qemu:
    binary: str       # qemu-user binary, e.g. qemu-aarch64-static
    cpu: str          # its -cpu model, e.g. cortex-a72
    sysroot: str      # its -L prefix: where the target's dynamic loader and libc live

    def command(self) -> list[str]:
        return [self.binary, "-cpu", self.cpu, "-L", self.sysroot]


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    triple: str
    toolchain: Path | None       # absolute; None for a native build
    cpu_flags: tuple[str, ...]
    simd: str                    # EM_SIMD
    static: bool                 # link em_run fully static
    uname_m: str
    debian_packages: tuple[str, ...]
    blas: str                    # one of BLAS_KINDS
    blas_library: Path | None
    blas_include_dir: Path | None
    qemu: Qemu | None            # None for a native build
    profile: Path                # the TOML file it came from

    @property
    def cross(self) -> bool:
        return self.toolchain is not None

    def c_compiler(self) -> str:
        """The C compiler the build uses: the toolchain file's CMAKE_C_COMPILER, else $CC or cc."""
        if self.toolchain is None:
            return os.environ.get("CC") or "cc"
        found = re.search(r"^\s*set\(\s*CMAKE_C_COMPILER\s+\"?([^\s\")]+)", self.toolchain.read_text(), re.M)
        if not found:
            raise BoardError(f"{self.toolchain}: does not set CMAKE_C_COMPILER")
        return found.group(1)

    def emulator(self) -> list[str]:
        """How to run one of this board's binaries here: the qemu command line, or [] when native."""
        return self.qemu.command() if self.qemu else []

    def cmake_args(self, *, tests: bool = False) -> list[str]:
        """The -D options for configuring runtime_c/ for this board (tests: also the C tests, run
        through the board's emulator when cross compiling)."""
        args = ["-DCMAKE_BUILD_TYPE=Release", f"-DEM_BUILD_TESTS={'ON' if tests else 'OFF'}", "-DEM_BUILD_TOOLS=ON",
                f"-DEM_SIMD={self.simd}"]
        if self.toolchain is not None:
            args.append(f"-DCMAKE_TOOLCHAIN_FILE={self.toolchain}")
        if self.cpu_flags:
            args.append(f"-DCMAKE_C_FLAGS={' '.join(self.cpu_flags)}")
        if self.blas == "openblas-static":
            args += ["-DEM_BLAS=openblas", f"-DEM_OPENBLAS_LIBRARY={self.blas_library}",
                     f"-DEM_OPENBLAS_INCLUDE_DIR={self.blas_include_dir}"]
        else:
            args.append("-DEM_BLAS=none")
        if self.static:
            args.append("-DCMAKE_EXE_LINKER_FLAGS=-static")
        if tests and self.qemu is not None:
            args.append(f"-DCMAKE_CROSSCOMPILING_EMULATOR={';'.join(self.qemu.command())}")
        return args

    def to_dict(self, root: Path | None = None) -> dict:
        def shown(p: Path | None):
            if p is None:
                return None
            return str(p.relative_to(root)) if root and p.is_relative_to(root) else str(p)

        return {
            "name": self.name, "description": self.description, "triple": self.triple,
            "toolchain": shown(self.toolchain), "cpu_flags": list(self.cpu_flags), "simd": self.simd,
            "static": self.static, "uname_m": self.uname_m, "debian_packages": list(self.debian_packages),
            "blas": {"kind": self.blas, "library": shown(self.blas_library),
                     "include_dir": shown(self.blas_include_dir)},
            "qemu": None if self.qemu is None else
            {"binary": self.qemu.binary, "cpu": self.qemu.cpu, "sysroot": self.qemu.sysroot},
            "profile": shown(self.profile),
        }


PACKAGED_SOURCES = Path(__file__).resolve().parents[1] / "_sources"
"""Where a wheel keeps the runtime sources, board profiles and toolchain files (setup.py: package data)."""


def source_root() -> Path:
    """The folder holding boards/, cmake/toolchains/ and runtime_c/: $EDGEMERGE_SOURCE_DIR, else the checkout
    this package runs from (PYTHONPATH=sdk or an editable install), else the copy shipped inside the installed
    package (edgemerge/_sources), else the current folder or a parent of it. The shipped copy comes before the
    current folder so that an installed edgemerge builds the runtime it was released with."""
    def is_root(p: Path) -> bool:
        return (p / "runtime_c" / "CMakeLists.txt").is_file() and (p / "boards").is_dir()

    env = os.environ.get("EDGEMERGE_SOURCE_DIR")
    if env:
        if not is_root(Path(env)):
            raise BoardError(f"EDGEMERGE_SOURCE_DIR={env} is not an edgemerge checkout (no boards/ and "
                             "runtime_c/CMakeLists.txt there)")
        return Path(env).resolve()
    here = Path(__file__).resolve().parents[3]
    cwd = Path.cwd().resolve()
    for candidate in (here, PACKAGED_SOURCES, cwd, *cwd.parents):
        if is_root(candidate):
            return candidate
    raise BoardError("cannot find the edgemerge runtime sources (boards/ and runtime_c/): this installation "
                     f"lacks {PACKAGED_SOURCES}; reinstall edgemerge, run in a checkout, or set EDGEMERGE_SOURCE_DIR")


class _Profile:
    """Reads one parsed TOML table, failing with the file and the field on the first problem."""

    def __init__(self, path: Path, table: dict, where: str = ""):
        self.path, self.table, self.where = path, table, where

    def fail(self, key: str, why: str):
        raise BoardError(f"{self.path}: {self.where}{key}: {why}")

    def check_keys(self, allowed: tuple[str, ...]) -> None:
        for key in self.table:
            if key not in allowed:
                self.fail(key, f"unknown key (allowed here: {', '.join(allowed)})")

    def get(self, key: str, kind: type, *, required: bool = True, default=None):
        if key not in self.table:
            if required:
                self.fail(key, "missing")
            return default
        value = self.table[key]
        if kind is list:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                self.fail(key, f"expected a list of strings, got {value!r}")
        elif kind is str:
            if not isinstance(value, str) or not value.strip():
                self.fail(key, f"expected a non-empty string, got {value!r}")
        elif not isinstance(value, kind):
            self.fail(key, f"expected {'true or false' if kind is bool else kind.__name__}, got {value!r}")
        return value

    def match(self, key: str, value: str, pattern: re.Pattern, what: str) -> str:
        if not pattern.match(value):
            self.fail(key, f"{value!r} is not {what}")
        return value

    def absolute(self, key: str, value: str) -> Path:
        if not value.startswith("/"):
            self.fail(key, f"{value!r} must be an absolute path")
        return Path(value)

    def sub(self, key: str, *, required: bool) -> _Profile | None:
        value = self.get(key, dict, required=required)
        return None if value is None else _Profile(self.path, value, f"{self.where}{key}.")


_TOP_KEYS = ("name", "description", "triple", "toolchain", "cpu_flags", "simd", "static", "uname_m",
             "debian_packages", "blas", "qemu")


def load_board(path: str | os.PathLike, root: Path | None = None) -> Board:
    """Reads and validates one profile; relative paths in it (toolchain) are relative to `root`
    (default: the source checkout)."""
    path = Path(path)
    if tomllib is None:
        raise BoardError("reading board profiles needs Python 3.11 (tomllib) or the tomli package")
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise BoardError(f"{path}: cannot read ({e.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise BoardError(f"{path}: not valid TOML: {e}") from None
    root = root or source_root()
    p = _Profile(path, table)
    p.check_keys(_TOP_KEYS)

    name = p.match("name", p.get("name", str), _NAME, "a board name (lower-case letters, digits, '-')")
    if name != path.stem:
        p.fail("name", f"{name!r} differs from the file name {path.name!r} (it must be {path.stem!r})")
    description = p.get("description", str)
    triple = p.match("triple", p.get("triple", str), _TRIPLE, "a target triple such as aarch64-linux-gnu")

    toolchain = None
    if "toolchain" in table:
        toolchain = (root / p.get("toolchain", str)).resolve()
        if not toolchain.is_file():
            p.fail("toolchain", f"{table['toolchain']!r} does not exist (relative to {root})")

    cpu_flags = tuple(p.get("cpu_flags", list))
    for flag in cpu_flags:
        if not flag.startswith("-") or " " in flag:
            p.fail("cpu_flags", f"{flag!r} is not one compiler flag")
        if _NATIVE_FLAG.match(flag):
            p.fail("cpu_flags", f"{flag} targets the build machine, not the board: name the board's CPU")

    simd = p.get("simd", str)
    if simd not in SIMD_CHOICES:
        p.fail("simd", f"{simd!r} is not one of {', '.join(SIMD_CHOICES)}")
    static = p.get("static", bool)
    uname_m = p.match("uname_m", p.get("uname_m", str), _UNAME, "what `uname -m` prints (e.g. aarch64)")
    packages = tuple(p.get("debian_packages", list))
    for pkg in packages:
        p.match("debian_packages", pkg, _DEBIAN_PACKAGE, "a Debian package name (optionally with :arch)")

    b = p.sub("blas", required=True)
    b.check_keys(("kind", "library", "include_dir"))
    blas = b.get("kind", str)
    if blas not in BLAS_KINDS:
        b.fail("kind", f"{blas!r} is not one of {', '.join(BLAS_KINDS)}")
    blas_library = blas_include = None
    if blas == "openblas-static":
        blas_library = b.absolute("library", b.get("library", str))
        if blas_library.suffix != ".a":
            b.fail("library", f"{blas_library} is not a static library (.a)")
        blas_include = b.absolute("include_dir", b.get("include_dir", str))
    else:
        for key in ("library", "include_dir"):
            if key in b.table:
                b.fail(key, f"given, but kind is {blas!r} (the runtime's own GEMM needs no library)")

    q = p.sub("qemu", required=toolchain is not None)
    qemu = None
    if toolchain is None and q is not None:
        p.fail("qemu", "given for a native board (no toolchain): nothing to emulate")
    if q is not None:
        q.check_keys(("binary", "cpu", "sysroot"))
        qemu = Qemu(q.get("binary", str), q.get("cpu", str), str(q.absolute("sysroot", q.get("sysroot", str))))

    return Board(name, description, triple, toolchain, cpu_flags, simd, static, uname_m, packages, blas,
                 blas_library, blas_include, qemu, path.resolve())


def load_boards(directory: str | os.PathLike | None = None) -> dict[str, Board]:
    """Every profile in `directory` (default: the checkout's boards/), validated, by name."""
    root = source_root()
    directory = Path(directory) if directory is not None else root / "boards"
    paths = sorted(directory.glob("*.toml"))
    if not paths:
        raise BoardError(f"{directory}: no board profiles (*.toml)")
    return {b.name: b for b in (load_board(path, root) for path in paths)}


def get_board(name: str, boards: dict[str, Board] | None = None) -> Board:
    boards = boards if boards is not None else load_boards()
    if name not in boards:
        import difflib

        close = difflib.get_close_matches(name, list(boards), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise BoardError(f"unknown board {name!r}; {hint}known boards: {', '.join(boards)} (profiles in boards/)")
    return boards[name]


# ------------------------------------------------------------------------------------------------
# tools
# ------------------------------------------------------------------------------------------------
def _install_hint(board: Board, packages: list[str]) -> str:
    foreign = sorted({p.split(":")[1] for p in packages if ":" in p})
    arch = "".join(f"dpkg --add-architecture {a} && " for a in foreign)
    update = "apt-get update && " if foreign else ""
    return (f"install the Debian package{'s' if len(packages) > 1 else ''} {' '.join(packages)} "
            f"({arch}{update}apt-get install {' '.join(packages)}; tools/setup.sh installs what every board needs)")


def missing_tools(board: Board, *, emulator: bool = False) -> list[str]:
    """What this machine lacks to build the board (with `emulator`: and to run its binaries under qemu),
    one clear sentence each; [] when ready."""
    problems = []
    if shutil.which("cmake") is None:
        problems.append("cmake is not on PATH: install the Debian package cmake (or `pip install cmake`)")
    try:
        compiler = board.c_compiler()
    except BoardError as e:
        return problems + [str(e)]
    if shutil.which(compiler) is None:
        wanted = [p for p in board.debian_packages
                  if p.split(":")[0] in (f"gcc-{board.triple}", f"g++-{board.triple}", "build-essential", "gcc")]
        wanted = wanted or list(board.debian_packages)
        kind = "cross compiler" if board.cross else "C compiler"
        problems.append(f"the {kind} {compiler} is not installed: {_install_hint(board, wanted)}")
    if board.blas_library is not None and not board.blas_library.is_file():
        wanted = [p for p in board.debian_packages if p.startswith("libopenblas")] or ["libopenblas-dev"]
        problems.append(f"the BLAS library {board.blas_library} is missing: {_install_hint(board, wanted)}")
    if emulator and board.qemu is not None and shutil.which(board.qemu.binary) is None:
        wanted = [p for p in board.debian_packages if p.startswith("qemu")] or ["qemu-user-static"]
        problems.append(f"{board.qemu.binary} (to run the board's programs here) is not installed: "
                        f"{_install_hint(board, wanted)}")
    return problems


def check_native(board: Board) -> None:
    if board.cross:
        return
    here = platform.machine()
    if here not in _NATIVE_MACHINES.get(board.uname_m, (board.uname_m,)):
        raise BoardError(f"board {board.name} is a native {board.uname_m} build, but this machine is {here}")


# ------------------------------------------------------------------------------------------------
# building
# ------------------------------------------------------------------------------------------------
def _run(cmd: list[str], what: str, *, cwd: Path | None = None, env: dict | None = None) -> str:
    """Runs a build step; on failure raises BoardError with the step, the command and the output's tail."""
    try:
        result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True)
    except OSError as e:
        raise BoardError(f"{what}: cannot run {cmd[0]} ({e.strerror})") from None
    output = result.stdout + result.stderr
    if result.returncode != 0:
        tail = "\n".join(output.rstrip().splitlines()[-40:])
        raise BoardError(f"{what} failed (exit {result.returncode}): {' '.join(map(str, cmd))}\n{tail}")
    return output


def _cache_value(build_dir: Path, key: str) -> str | None:
    try:
        text = (build_dir / "CMakeCache.txt").read_text(errors="replace")
    except OSError:
        return None
    found = re.search(rf"^{re.escape(key)}:[A-Z]+=(.*)$", text, re.M)
    return found.group(1).strip() if found else None


def elf_machine(path: Path) -> int | None:
    """The e_machine field of an ELF file (0x3E x86-64, 0xB7 AArch64, 0x28 ARM), None if not ELF."""
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    return int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")


_ISA_WORDS = ("neon", "asimd", "sve", "sve2", "sse2", "sse41", "avx", "avx2", "avx512", "avx512f", "fma")


def linked_kernels(binary: Path, nm: str = "nm") -> dict:
    """What a linked binary really contains, from its symbol table: the BLAS (cblas_sgemm defined inside =
    static, undefined = shared library) and the SIMD instruction sets of the runtime's kernels (every
    em_* symbol with an ISA word in its name, e.g. em_micro_neon)."""
    result = subprocess.run([nm, str(binary)], capture_output=True, text=True)
    if result.returncode != 0:
        raise BoardError(f"{nm} {binary} failed: {result.stderr.strip() or 'no symbols (stripped?)'}")
    defined, undefined = set(), set()
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[-2] in ("U", "w"):
            undefined.add(parts[-1])
        elif len(parts) >= 3:
            defined.add(parts[-1])
    blas = "none"
    for symbol in ("cblas_sgemm", "sgemm_"):
        if symbol in defined or symbol in undefined:
            vendor = "openblas" if any(s.startswith("openblas_") for s in defined | undefined) else "cblas"
            blas = f"{vendor}-{'static' if symbol in defined else 'shared'}"
            break
    isa: dict[str, list[str]] = {}
    for s in sorted(defined):
        if s.startswith("em_"):
            for word in set(s.split("_")) & set(_ISA_WORDS):
                isa.setdefault(word, []).append(s)
    return {"blas": blas, "simd": sorted(isa), "simd_symbols": isa}


def _prepare_output(out_dir: Path) -> None:
    if out_dir.exists() or out_dir.is_symlink():
        if not out_dir.is_dir():
            raise BoardError(f"{out_dir} exists and is not a folder")
        if any(out_dir.iterdir()) and not (out_dir / MANIFEST_NAME).is_file():
            raise BoardError(f"{out_dir} exists and is not an edgemerge build (no {MANIFEST_NAME}): "
                             "choose another -o, or remove it")


def build_board(board: Board, out_dir: str | os.PathLike | None = None, *, jobs: int | None = None,
                ctest: bool = False, log: Callable[[str], None] | None = None) -> dict:
    """Builds the runtime for `board` and installs em_run, lib/libedgemerge_runtime.a and
    include/edgemerge/ into `out_dir` (default build/<board>), replacing an earlier build there. The build
    runs in a temporary folder beside `out_dir`; `out_dir` changes only when everything succeeded, so it
    never holds a half-written build. With `ctest` the C tests are built too and must pass (under the
    board's qemu when cross compiling) before anything is installed. Returns the manifest it writes."""
    log = log or (lambda message: None)
    started = time.perf_counter()
    root = source_root()
    out_dir = Path(out_dir) if out_dir is not None else Path("build") / board.name
    _prepare_output(out_dir)
    check_native(board)
    problems = missing_tools(board, emulator=ctest)
    if problems:
        raise BoardError(f"board {board.name}: " + "; ".join(problems))

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent)).resolve()
    try:
        build_dir, stage = work / "cmake", work / "stage"
        configure = ["cmake", "-S", root / "runtime_c", "-B", build_dir, *board.cmake_args(tests=ctest),
                     f"-DCMAKE_RUNTIME_OUTPUT_DIRECTORY={build_dir / 'bin'}",
                     f"-DCMAKE_ARCHIVE_OUTPUT_DIRECTORY={build_dir / 'lib'}"]
        log(f"configuring runtime_c for {board.name} ({board.triple})")
        configured = _run(configure, "cmake configure")
        notes = [line.strip().removeprefix("-- ").strip() for line in configured.splitlines()
                 if re.search(r"\b(BLAS|SIMD|NEON|AVX\w*|OpenBLAS)\b", line)]
        log("building")
        jobs = jobs or os.cpu_count() or 2
        targets = [] if ctest else ["--target", "edgemerge_runtime", "em_run"]
        _run(["cmake", "--build", build_dir, "-j", str(jobs), *targets], "cmake build")

        em_run = build_dir / "bin" / "em_run"
        library = build_dir / "lib" / "libedgemerge_runtime.a"
        for artifact in (em_run, library):
            if not artifact.is_file():
                raise BoardError(f"the build did not produce {artifact.name} (looked in {artifact.parent})")
        machine = elf_machine(em_run)
        if machine != ELF_MACHINES.get(board.uname_m, machine):
            raise BoardError(f"em_run was built for ELF machine {machine:#x}, not for {board.uname_m} "
                             f"({ELF_MACHINES[board.uname_m]:#x}): check {board.toolchain}")

        tests = None
        if ctest:
            where = f" under {' '.join(board.emulator())}" if board.cross else ""
            log(f"running the C tests{where}")
            env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}  # pthread OpenBLAS spins under qemu-user
            output = _run(["ctest", "--output-on-failure", "--timeout", "900"], f"ctest{where}",
                          cwd=build_dir, env=env)
            # "100% tests passed out of 5" (CMake 4) or "100% tests passed, 0 tests failed out of 5"
            summary = re.search(r"\d+% tests passed(?:, (\d+) tests? failed)? out of (\d+)", output)
            if summary is None:
                raise BoardError(f"ctest{where}: no summary line in its output:\n{output[-2000:]}")
            total = int(summary.group(2))
            tests = {"passed": total - int(summary.group(1) or 0), "total": total, "emulator": board.emulator()}

        nm = _cache_value(build_dir, "CMAKE_NM") or "nm"
        found = linked_kernels(em_run, nm)
        compiler = _cache_value(build_dir, "CMAKE_C_COMPILER") or board.c_compiler()
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout.split("\n")[0]

        (stage / "lib").mkdir(parents=True)
        shutil.copy2(em_run, stage / "em_run")
        shutil.copy2(library, stage / "lib" / library.name)
        shutil.copytree(root / "runtime_c" / "include", stage / "include")
        link = ["-ledgemerge_runtime"]
        if found["blas"] == "openblas-static":
            link += [str(board.blas_library), "-lpthread"]
        link.append("-lm")
        manifest = {
            "board": board.name, "description": board.description, "triple": board.triple,
            "uname_m": board.uname_m,
            "toolchain": board.to_dict(root)["toolchain"], "compiler": version or compiler,
            "c_flags": list(board.cpu_flags), "static": board.static,
            "blas": {"requested": board.blas, "used": found["blas"],
                     "library": str(board.blas_library) if board.blas_library else None},
            "simd": {"requested": board.simd, "used": found["simd"] or ["none"],
                     "symbols": found["simd_symbols"]},
            "configure_notes": notes, "ctest": tests,
            "files": ["em_run", f"lib/{library.name}", "include/edgemerge/"],
            "link": link, "qemu": board.emulator() or None,
            "edgemerge_version": __version__, "seconds": None,
        }
        manifest["seconds"] = round(time.perf_counter() - started, 1)
        (stage / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")

        # into place: the old build (if any) moves aside first, so out_dir is either the old build,
        # absent for an instant, or the new one -- never a mix
        if out_dir.exists():
            os.rename(out_dir, work / "previous")
        os.rename(stage, out_dir)
        return manifest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def blas_mismatch(manifest: dict) -> str | None:
    """A sentence when the build links a different BLAS than its profile asks for, else None."""
    requested, used = manifest["blas"]["requested"], manifest["blas"]["used"]
    if requested == used:
        return None
    return (f"the profile asks for BLAS {requested} but em_run links {used} "
            "(does runtime_c/CMakeLists.txt know EM_BLAS / EM_OPENBLAS_LIBRARY yet?)")
