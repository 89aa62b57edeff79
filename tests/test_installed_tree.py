"""tests/installed_tree.py: the check conftest.py runs before a session."""
from __future__ import annotations

from installed_tree import stale_python_files


def _package(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_an_install_of_this_tree_is_not_stale(tmp_path):
    files = {"__init__.py": "x = 1\n", "cli/common.py": "y = 2\n"}
    tree = _package(tmp_path / "tree", files)
    installed = _package(tmp_path / "site", {**files, "_sources/runtime_c/a.py": "ignored\n",
                                             "cli/__pycache__/common.cpython-311.py": "ignored\n"})
    (installed / "_runtime.so").write_bytes(b"\x7fELF")
    assert stale_python_files(tree, installed) == []


def test_changed_added_and_missing_files_are_named(tmp_path):
    tree = _package(tmp_path / "tree", {"__init__.py": "x = 1\n", "cli/common.py": "y = 3\n", "new.py": ""})
    installed = _package(tmp_path / "site", {"__init__.py": "x = 1\n", "cli/common.py": "y = 2\n", "old.py": ""})
    assert stale_python_files(tree, installed) == ["cli/common.py", "new.py", "old.py"]
