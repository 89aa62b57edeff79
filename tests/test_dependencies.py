"""tools/check_deps.py: no dependency circle between the C files of runtime_c/src or the Python modules of
sdk/edgemerge, and the checker really fails on a planted circle (C and Python)."""
from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHECK = REPO / "tools" / "check_deps.py"


def run_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECK), *args], capture_output=True, text=True, cwd=REPO)


def write_tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


needs_c_tools = pytest.mark.skipif(
    shutil.which("cmake") is None or shutil.which("nm") is None or shutil.which("cc") is None,
    reason="needs cmake, cc and nm")


@needs_c_tools
def test_runtime_c_has_no_circle(tmp_path):
    result = run_check("--c-build", str(tmp_path / "build"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 circle(s)" in result.stdout


def test_python_package_has_no_circle():
    result = run_check("--python", str(REPO / "sdk" / "edgemerge"))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_c_tools
def test_planted_c_circle_is_named(tmp_path):
    # low.c calls up into high.c, which calls low.c: the circle the runtime had between its error helpers
    # and the executor. top.c only calls down and is not part of it.
    write_tree(tmp_path / "src", {
        "low.c": "int high_report(int);\nint low_work(int x) { return high_report(x) + 1; }\n",
        "high.c": "int low_work(int);\nint high_report(int x) { return x; }\nint high_run(int x) { return low_work(x); }\n",
        "top.c": "int high_run(int);\nint main(void) { return high_run(0); }\n",
    })
    objects = tmp_path / "obj"
    for source in (tmp_path / "src").glob("*.c"):
        out = objects / "src" / (source.name + ".o")
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cc", "-c", str(source), "-o", str(out)], check=True)
    result = run_check("--c-objects", str(objects))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "C dependency circle: src/high.c -> src/low.c -> src/high.c" in result.stdout
    assert "src/low.c -> src/high.c: high_report" in result.stdout
    assert "top.c ->" not in result.stdout


def test_planted_python_circle_is_named(tmp_path):
    # a relative import inside a function in a sub-package, back to the package's __init__
    write_tree(tmp_path / "pkg", {
        "__init__.py": "from .io.reader import read\nVERSION = 1\n",
        "io/__init__.py": "",
        "io/reader.py": """
            def read():
                from .. import VERSION
                return VERSION
            """,
        "leaf.py": "import pkg.io.reader\n",
    })
    result = run_check("--python", str(tmp_path / "pkg"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Python dependency circle: pkg -> pkg.io.reader -> pkg" in result.stdout
    circles = [line for line in result.stdout.splitlines() if "dependency circle" in line]
    assert len(circles) == 1 and "pkg.leaf" not in circles[0]


def test_type_checking_imports_and_extension_modules_are_no_edges(tmp_path):
    write_tree(tmp_path / "pkg", {
        "__init__.py": "from . import a\n",
        "a.py": """
            from typing import TYPE_CHECKING
            from . import _native  # a compiled extension: no .py here
            if TYPE_CHECKING:
                import pkg
            """,
    })
    result = run_check("--python", str(tmp_path / "pkg"))
    assert result.returncode == 0, result.stdout + result.stderr
