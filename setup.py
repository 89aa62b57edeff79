"""Builds the edgemerge Python package (sdk/edgemerge) and its C runtime module through CMake."""
import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    """Configures and builds the top-level CMakeLists.txt with EM_BUILD_PYTHON=ON and puts the module
    where setuptools expects the extension (pybind11's cmake_example pattern)."""

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
        jobs = str(os.cpu_count() or 2)
        subprocess.run(["cmake", "--build", str(build_dir), "--target", "_runtime", "-j", jobs], check=True)


setup(
    name="edgemerge",
    version="0.1.0",
    description="Merge trained CNNs into one compact multi-task model and run it on CPU edge boards",
    package_dir={"": "sdk"},
    packages=find_packages("sdk"),
    package_data={"edgemerge": ["py.typed"]},
    ext_modules=[CMakeExtension("edgemerge._runtime")],
    cmdclass={"build_ext": CMakeBuild},
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.26",
        "click>=8.1",
        "scikit-learn>=1.4",
        "tensorflow>=2.16",
        # every load_model passes safe_mode=True; Keras 3.14 is the first release where safe mode also stops the
        # known bypasses (config.json enabling unsafe deserialisation, HDF5 Lambda, TFSMLayer: CVE-2025-9906,
        # CVE-2025-9905, CVE-2026-1462)
        "keras>=3.14",
        "h5py>=3.10",
        "ai-edge-litert>=1.2",
        "scipy>=1.11",
        "matplotlib>=3.8",
    ],
    entry_points={"console_scripts": ["edgemerge=edgemerge.cli:main"]},
    zip_safe=False,
)
