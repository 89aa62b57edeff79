"""Builds the edgemerge Python package (sdk/edgemerge) and its C runtime module through CMake.

The wheel also carries the C runtime's sources as package data (edgemerge/_sources: runtime_c/, boards/*.toml,
cmake/toolchains/), so `edgemerge boards`, `build --board` and `flash --board --with-runtime` work from any
folder after a plain `pip install` (deploy/boards.py: source_root()).

Setuptools rather than scikit-build-core: the CMake build is one configure + one target (below), and the
package data is one copy step; scikit-build-core would need install() rules in the top-level CMakeLists.txt
(shared with the C build) and a second way to build the module in the worktrees (tools, wtbuild) for no gain.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent

# What `edgemerge build --board` needs to configure and build runtime_c/ for any board, with or without
# --ctest: the whole runtime_c/ tree (tests/, fuzz/ and bench/ are part of the --ctest build), every board
# profile and the toolchain files the profiles name. Paths relative to the repository root.
PACKAGED_SOURCES = ("runtime_c", "boards", "cmake/toolchains")
PACKAGED_DIR = "edgemerge/_sources"
_SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", ".*", "build")


def copy_packaged_sources(destination: Path) -> list[Path]:
    """Copies PACKAGED_SOURCES under `destination` (replacing what was there); returns the files copied."""
    if destination.exists():
        shutil.rmtree(destination)
    for rel in PACKAGED_SOURCES:
        shutil.copytree(ROOT / rel, destination / rel, ignore=_SKIPPED)
    return sorted(p for p in destination.rglob("*") if p.is_file())


class BuildPyWithSources(build_py):
    """build_py, plus the runtime sources as package data in edgemerge/_sources."""

    def run(self) -> None:
        super().run()
        copy_packaged_sources(Path(self.build_lib) / PACKAGED_DIR)


class CMakeExtension(Extension):
    def __init__(self, name: str):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    """Configures and builds the top-level CMakeLists.txt with EM_BUILD_PYTHON=ON and puts the module
    where setuptools expects the extension (pybind11's cmake_example pattern). On an aarch64 (or armv7)
    machine this is a native build with the NEON micro-kernels."""

    def build_extension(self, ext: CMakeExtension) -> None:
        import pybind11

        ext_dir = Path(self.get_ext_fullpath(ext.name)).parent.resolve()
        build_dir = Path(self.build_temp).resolve() / "cmake"
        build_dir.mkdir(parents=True, exist_ok=True)
        config = os.environ.get("EM_BUILD_TYPE", "Release")
        configure = [
            "cmake", "-S", str(ROOT), "-B", str(build_dir),
            f"-DCMAKE_BUILD_TYPE={config}",
            "-DEM_BUILD_PYTHON=ON", "-DEM_BUILD_TESTS=OFF",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={ext_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
        ]
        subprocess.run(configure, check=True)
        jobs = os.environ.get("EM_BUILD_JOBS") or str(os.cpu_count() or 2)
        subprocess.run(["cmake", "--build", str(build_dir), "--target", "_runtime", "-j", jobs], check=True)


# The base install runs models (Runtime, inspect, run, eval, export-c, boards, build, flash, report): numpy
# and click only. The heavy stacks are extras; a command that needs one says which (edgemerge/extras.py).
EXTRAS = {
    # every load_model passes safe_mode=True; Keras 3.14 is the first release where safe mode also stops the
    # known bypasses (config.json enabling unsafe deserialisation, HDF5 Lambda, TFSMLayer: CVE-2025-9906,
    # CVE-2025-9905, CVE-2026-1462)
    "merge": ["tensorflow>=2.16", "keras>=3.14", "scikit-learn>=1.4", "h5py>=3.10", "scipy>=1.11"],
    "peers": ["ai-edge-litert>=1.2"],
    "plots": ["matplotlib>=3.8"],
    "onnx": ["onnx>=1.16", "onnxruntime>=1.18"],   # PyTorch models exported to ONNX; ONNX Runtime as a peer
}
EXTRAS["all"] = sorted({req for reqs in EXTRAS.values() for req in reqs})

setup(
    name="edgemerge",
    version="0.1.0",
    description="Merge trained CNNs into one compact multi-task model and run it on CPU edge boards",
    package_dir={"": "sdk"},
    packages=find_packages("sdk"),
    package_data={"edgemerge": ["py.typed"]},
    ext_modules=[CMakeExtension("edgemerge._runtime")],
    cmdclass={"build_ext": CMakeBuild, "build_py": BuildPyWithSources},
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.26",
        "click>=8.1",
        "tomli>=2; python_version<'3.11'",   # board profiles (tomllib is in the standard library from 3.11)
    ],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["edgemerge=edgemerge.cli:main"]},
    zip_safe=False,
)
