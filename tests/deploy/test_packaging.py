"""Packaging: what a plain `pip install` gives a user outside a checkout.

Quick (default suite): setup.py's build_py lays the runtime sources, board profiles and toolchain files into
the package (edgemerge/_sources), every source file runtime_c/CMakeLists.txt names is among them, and from an
unrelated folder an importable copy of that package finds them (source_root) and lists the boards.

Slow: the real wheel (`pip wheel --no-build-isolation --no-deps`) installed without extras into a fresh
virtualenv outside the repository (no TensorFlow there): Runtime(...).run, `inspect`, `run`, `export-c`,
`boards`, `build --board rpi4-aarch64` all work from a folder outside the checkout, and `merge` says which
extra to install in one line.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
BOARDS = sorted(p.stem for p in (ROOT / "boards").glob("*.toml"))
TOOLCHAINS = sorted(p.name for p in (ROOT / "cmake" / "toolchains").glob("*.cmake"))


def cmake_sources() -> set[str]:
    """The .c files runtime_c/CMakeLists.txt compiles (relative to runtime_c/)."""
    text = (ROOT / "runtime_c" / "CMakeLists.txt").read_text()
    return set(re.findall(r"\b((?:src|tools|tests|bench)/[\w/]+\.c)\b", text))


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EDGEMERGE_SOURCE_DIR", "VIRTUAL_ENV")}
    return {**env, **extra}


def small_model(path: Path) -> Path:
    """A two-task merged model from the synthetic sources (no TensorFlow needed to make it)."""
    from synthetic_models import lenet_like

    from edgemerge.emm.writer import write_emm
    from edgemerge.merging.merge import merge_models

    result = merge_models({"a": lenet_like("a", seed=0), "b": lenet_like("b", seed=1, classes=5)}, kmeans_inits=1)
    write_emm(result.graph, path)
    return path


@pytest.fixture(scope="module")
def built_lib(tmp_path_factory) -> Path:
    """The pure-Python part of the package as setup.py builds it (build_py, with the packaged sources)."""
    lib = tmp_path_factory.mktemp("build_py") / "lib"
    result = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(lib)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return lib


def test_build_py_ships_the_runtime_sources_boards_and_toolchains(built_lib):
    sources = built_lib / "edgemerge" / "_sources"
    files = {p.relative_to(sources).as_posix() for p in sources.rglob("*") if p.is_file()}
    assert "runtime_c/CMakeLists.txt" in files
    assert {f"boards/{b}.toml" for b in BOARDS} <= files
    assert {f"cmake/toolchains/{t}" for t in TOOLCHAINS} <= files
    needed = {f"runtime_c/{s}" for s in cmake_sources()}
    assert len(needed) > 30 and needed <= files, sorted(needed - files)
    headers = {p.relative_to(ROOT).as_posix() for p in (ROOT / "runtime_c" / "include").rglob("*.h")}
    assert headers and headers <= files
    assert not any("__pycache__" in f for f in files)


def test_packaged_sources_are_found_from_an_unrelated_folder(built_lib, tmp_path):
    elsewhere = tmp_path / "somewhere"
    elsewhere.mkdir()
    code = ("from edgemerge.deploy.boards import source_root, load_boards; import json; "
            "b = load_boards(); print(json.dumps({'root': str(source_root()), 'boards': sorted(b), "
            "'toolchain': str(b['rpi4-aarch64'].toolchain)}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, capture_output=True, text=True,
                            env=clean_env(PYTHONPATH=str(built_lib)), timeout=120)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    packaged = (built_lib / "edgemerge" / "_sources").resolve()
    assert Path(found["root"]) == packaged
    assert found["boards"] == BOARDS
    assert Path(found["toolchain"]).is_file() and Path(found["toolchain"]).is_relative_to(packaged)

    # and the CLI, with a typo in a board name
    result = subprocess.run([sys.executable, "-m", "edgemerge.cli", "build", "--board", "rpi4-arch64"],
                            cwd=elsewhere, capture_output=True, text=True, env=clean_env(PYTHONPATH=str(built_lib)),
                            timeout=120)
    assert result.returncode == 1
    assert result.stderr.startswith("error: unknown board 'rpi4-arch64'; did you mean 'rpi4-aarch64'?")


def test_missing_extra_is_one_line_naming_it(tmp_path, monkeypatch):
    import importlib.util

    from edgemerge.extras import MissingExtraError, require

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorflow" else real(name, *a))
    with pytest.raises(MissingExtraError) as e:
        require("merge", "edgemerge merge")
    assert str(e.value) == 'edgemerge merge needs TensorFlow: pip install "edgemerge[merge]"'
    require("peers", "edgemerge bench")   # installed here: no error


# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_wheel_in_a_fresh_virtualenv_runs_without_the_merge_stack(tmp_path):
    dist = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q",
                            "-w", str(dist), str(ROOT)], capture_output=True, text=True, timeout=1800,
                           env={**os.environ, "EM_BUILD_JOBS": "2"})
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = dist.glob("edgemerge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "edgemerge/_sources/runtime_c/CMakeLists.txt" in names
    assert {f"edgemerge/_sources/boards/{b}.toml" for b in BOARDS} <= names
    assert any(re.match(r"edgemerge/_runtime\..*\.so$", n) for n in names)

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)   # no --system-site-packages: no TensorFlow
    py = env_dir / "bin" / "python"
    # clean_env: with the test run's PYTHONPATH=sdk, pip would see the checkout's edgemerge and skip the wheel
    installed = subprocess.run([py, "-m", "pip", "install", "-q", str(wheel)], capture_output=True, text=True,
                               timeout=900, env=clean_env())
    assert installed.returncode == 0, installed.stderr[-3000:]
    frozen = subprocess.run([py, "-m", "pip", "freeze"], capture_output=True, text=True, env=clean_env()).stdout.lower()
    assert "edgemerge" in frozen
    assert "tensorflow" not in frozen and "scikit-learn" not in frozen and "matplotlib" not in frozen

    work = tmp_path / "user"
    work.mkdir()
    model = small_model(work / "m.emm")
    x = np.random.default_rng(0).random((3, 16, 16, 1), dtype=np.float32)
    np.save(work / "x.npy", x)
    from edgemerge.runtime import Runtime
    expected = Runtime(model).run("a", x)
    env = clean_env(PATH=f"{env_dir / 'bin'}{os.pathsep}{os.environ['PATH']}")

    def run(*args, timeout=600):
        return subprocess.run([str(a) for a in args], cwd=work, capture_output=True, text=True, env=env,
                              timeout=timeout)

    code = ("import numpy as np, edgemerge, sys; print(edgemerge.__file__, file=sys.stderr); "
            "np.save('out.npy', edgemerge.Runtime('m.emm').run('a', np.load('x.npy')))")
    result = run(py, "-c", code)
    assert result.returncode == 0, result.stderr
    assert str(env_dir) in result.stderr          # the installed package, not the checkout
    np.testing.assert_allclose(np.load(work / "out.npy"), expected, rtol=1e-5, atol=1e-6)

    edgemerge = env_dir / "bin" / "edgemerge"
    result = run(edgemerge, "inspect", "m.emm")
    assert result.returncode == 0, result.stderr
    assert "codebook/c1" in result.stdout and "a/c1, b/c1" in result.stdout
    result = run(edgemerge, "run", "m.emm", "--task", "b", "--input", "x.npy", "--top", "2", "--json")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["samples"]) == 3
    result = run(edgemerge, "export-c", "m.emm", "-o", "model_data.h")
    assert result.returncode == 0, result.stderr
    assert (work / "model_data.h").stat().st_size > model.stat().st_size
    result = run(edgemerge, "boards", "--json")
    assert result.returncode == 0, result.stderr
    assert sorted(b["name"] for b in json.loads(result.stdout)) == BOARDS
    result = run(edgemerge, "build", "--board", "rpi4-aarch64", "-o", "rpi4", "-j", "2", "--json", timeout=1200)
    assert result.returncode == 0, result.stderr
    assert (work / "rpi4" / "em_run").is_file()
    assert (work / "rpi4" / "em_run").read_bytes()[18:20] == (0xB7).to_bytes(2, "little")   # ELF aarch64

    # model files that exist (their paths are checked first): the missing stack is what stops the merge
    for name in ("a.keras", "b.keras"):
        (work / name).write_bytes(b"PK\x03\x04 placeholder")
    result = run(edgemerge, "merge", "a=a.keras", "b=b.keras", "-o", "out.emm")
    assert result.returncode == 1
    assert result.stderr.strip() == 'error: edgemerge merge needs TensorFlow: pip install "edgemerge[merge]"'
    assert not (work / "out.emm").exists()
