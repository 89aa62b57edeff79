"""Whether the `edgemerge` package Python imports is this tree's sdk/edgemerge.

`make setup` installs the tree into site-packages (not editable), so a bare `pytest` after editing sdk/ without
reinstalling would test the previous install and pass or fail for the wrong code. conftest.py stops the session
with one line instead (PYTHONPATH=sdk, or `make setup`, fixes it)."""
from __future__ import annotations

from pathlib import Path


def stale_python_files(tree: Path, installed: Path) -> list[str]:
    """The .py files (relative paths) that differ between `tree` and `installed`, or exist in only one: empty when
    the installed package holds this tree's Python code. Build products (extension modules, caches) and the
    installed C sources (`_sources`) are not compared."""
    def sources(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*.py")
                if "__pycache__" not in p.parts and "_sources" not in p.relative_to(root).parts}

    mine, theirs = sources(tree), sources(installed)
    return sorted(name for name in mine.keys() | theirs.keys() if mine.get(name) != theirs.get(name))
