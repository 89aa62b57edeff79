"""The Python package's wings import only downward: no lower wing imports a higher one (PREAMBLE / docs/ARCHITECTURE.md).

Every `import` and `from ... import` in sdk/edgemerge counts, those inside functions too (a lazy import is
still a dependency). Wings on the same rank may import each other (circles are tools/check_deps.py's job).
The checker is tested on a planted violation, so the test can fail.
"""
from __future__ import annotations

import ast
import shutil
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "sdk" / "edgemerge"

# Low -> high; names on one rank are peers.
WING_ORDER: tuple[tuple[str, ...], ...] = (
    ("errors", "text", "extras", "quiet", "inputs"),   # ground floor: errors, printing, optional extras, native stderr
    ("emm",),
    ("runtime", "datasets"),
    ("importers",),
    ("executors",),
    ("merging",),
    ("training",),
    ("measure",),
    ("zipper",),
    ("deploy",),
    ("workflows",),
    ("cli",),
)
RANK = {wing: rank for rank, wings in enumerate(WING_ORDER) for wing in wings}
# The compiled module is the C runtime's own face: it sits with `runtime`.
RANK["_runtime"] = RANK["runtime"]


def wing_of(module: str) -> str | None:
    """The wing of a dotted module name inside edgemerge ("edgemerge.emm.reader" -> "emm"), None for the
    package itself and for modules outside it."""
    parts = module.split(".")
    if parts[0] != "edgemerge" or len(parts) < 2:
        return None
    return parts[1]


def imported_modules(path: Path, package_root: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    rel = path.relative_to(package_root.parent).with_suffix("")
    here = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.append((node.lineno, module))
            # `from edgemerge import emm` imports the wing emm
            if module == "edgemerge":
                out += [(node.lineno, f"edgemerge.{alias.name}") for alias in node.names]
    return out


def violations(package_root: Path) -> list[str]:
    """Every import of a higher wing by a lower one, as 'file:line: wing -> wing'."""
    found = []
    for path in sorted(package_root.rglob("*.py")):
        own = wing_of(".".join(path.relative_to(package_root.parent).with_suffix("").parts))
        if own is None or own == "__init__":
            continue                    # the package's own __init__ is the door, above every wing
        for line, module in imported_modules(path, package_root):
            target = wing_of(module)
            if target is None or target not in RANK or own not in RANK:
                continue
            if RANK[target] > RANK[own]:
                found.append(f"{path.relative_to(package_root.parent)}:{line}: {own} imports {module} ({target})")
    return found


def test_every_module_belongs_to_a_wing():
    wings = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    assert wings - set(RANK) == set(), "add the new module or folder to WING_ORDER"


def test_no_lower_wing_imports_a_higher_one():
    assert violations(PACKAGE) == []


def test_the_checker_finds_a_planted_violation(tmp_path):
    copy = tmp_path / "edgemerge"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    assert violations(copy) == []
    graph = copy / "emm" / "graph.py"
    # a lazy import inside a function counts, and so does `from edgemerge import <wing>`
    graph.write_text(graph.read_text() + "\n\ndef _planted():\n    from edgemerge.zipper import layout  # noqa\n"
                     "    from edgemerge import cli  # noqa\n")
    found = violations(copy)
    assert len(found) == 2 and all("emm/graph.py" in f for f in found), found
    assert "emm imports edgemerge.zipper (zipper)" in found[0]
    assert "(cli)" in found[1]


def test_relative_imports_are_resolved(tmp_path):
    copy = tmp_path / "edgemerge"
    (copy / "emm").mkdir(parents=True)
    (copy / "measure").mkdir()
    (copy / "emm" / "reader.py").write_text("from ..measure import bench\nfrom . import graph\n")
    assert violations(copy) == ["edgemerge/emm/reader.py:1: emm imports edgemerge.measure (measure)"]
