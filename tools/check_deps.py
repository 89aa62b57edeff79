#!/usr/bin/env python3
"""Fails on a dependency circle between the C source files of runtime_c/src or the Python modules of
sdk/edgemerge, so the layers stay layers (issue 14, "A house a newcomer reads in an hour").

C: computed from the object files, not from #include lines (a header can be included without a
dependency, and a call through a declaration in em_internal.h hides which file defines it). For each .o,
every undefined symbol that another .o defines is an edge (`nm -P`). The objects come from a CMake build of
runtime_c (`--c-build DIR` configures and builds the library there, -j2) or an existing folder of .o files
(`--c-objects DIR`, e.g. build/c-host/runtime_c/CMakeFiles/edgemerge_runtime.dir).

Python: every .py under the package folder, parsed with `ast`; imports anywhere in a module count (inside
functions too, since they run), except under `if TYPE_CHECKING:`. A package's __init__.py is the module of
the package's own name; relative imports are resolved; `from pkg import name` is an edge to pkg.name where
that is a module, else to pkg. Importing pkg.mod is an edge to pkg.mod only (not to pkg's __init__).

Exit status 0 with no circle, 1 naming every circle found (one cycle per strongly connected component,
each edge with the symbol or the line that makes it), 2 on a usage or build error.

    python tools/check_deps.py --c-build build/deps --python sdk/edgemerge
    python tools/check_deps.py --c-objects build/c-host/runtime_c/CMakeFiles/edgemerge_runtime.dir
"""
from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# A graph is {node: {neighbour: why}}; `why` names the symbol or import that makes the edge.
Graph = dict[str, dict[str, str]]


def strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's algorithm, iterative (no recursion limit); components of more than one node, or with a
    self-edge, in a stable order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, {})))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, {}):
                    found.append(sorted(component))
    return sorted(found)


def one_cycle(graph: Graph, component: list[str]) -> list[str]:
    """A shortest cycle through the component's first node, staying inside the component (BFS)."""
    members = set(component)
    start = component[0]
    parent: dict[str, str] = {}
    queue = [start]
    seen = {start}
    while queue:
        node = queue.pop(0)
        for child in sorted(graph.get(node, {})):
            if child not in members:
                continue
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return list(reversed(path)) + [start]
            if child not in seen:
                seen.add(child)
                parent[child] = node
                queue.append(child)
    return [start, start]


def report(kind: str, graph: Graph) -> int:
    """Prints every circle of `graph`; returns how many there are."""
    components = strongly_connected(graph)
    for component in components:
        cycle = one_cycle(graph, component)
        steps = " -> ".join(cycle)
        print(f"{kind} dependency circle: {steps}")
        for a, b in zip(cycle, cycle[1:]):
            print(f"    {a} -> {b}: {graph[a][b]}")
        if len(component) > len(cycle) - 1:
            print(f"    (the circle's component also holds: {', '.join(n for n in component if n not in cycle)})")
    return len(components)


# ---- C: objects and nm ---------------------------------------------------------------------------

DEFINED_TYPES = set("ABCDGRSTVWiu")  # nm -P type letters of defined global symbols ('U' is undefined)


def object_name(obj: Path, root: Path) -> str:
    """src/opt/conv2d.c for <root>/src/opt/conv2d.c.o (CMake's object naming), else the path below root."""
    rel = obj.relative_to(root).as_posix()
    return rel[:-2] if rel.endswith(".o") else rel


def nm_symbols(obj: Path, nm: str) -> tuple[set[str], set[str]]:
    out = subprocess.run([nm, "-P", "-g", str(obj)], check=True, capture_output=True, text=True).stdout
    defined, undefined = set(), set()
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 2:
            continue
        name, kind = fields[0], fields[1]
        if kind == "U":
            undefined.add(name)
        elif kind in DEFINED_TYPES:
            defined.add(name)
    return defined, undefined


def c_graph(objects_dir: Path, nm: str = "nm") -> Graph:
    objects = sorted(p for p in objects_dir.rglob("*.o") if p.is_file())
    if not objects:
        raise SystemExit(f"check_deps: no .o files under {objects_dir}")
    symbols = {object_name(o, objects_dir): nm_symbols(o, nm) for o in objects}
    definer: dict[str, str] = {}
    for name, (defined, _) in symbols.items():
        for symbol in defined:
            definer.setdefault(symbol, name)
    graph: Graph = {name: {} for name in symbols}
    for name, (_, undefined) in symbols.items():
        for symbol in sorted(undefined):
            target = definer.get(symbol)
            if target is not None and target != name:
                graph[name].setdefault(target, symbol)
    return graph


def build_c_objects(source: Path, build_dir: Path, jobs: int = 2) -> Path:
    """Configures and builds only the runtime library of `source` (runtime_c) in build_dir; returns the
    folder of its objects."""
    if shutil.which("cmake") is None:
        raise SystemExit("check_deps: cmake not found (or pass --c-objects)")
    subprocess.run(["cmake", "-S", str(source), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
                    "-DEM_BUILD_TESTS=OFF", "-DEM_BUILD_TOOLS=OFF"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(build_dir), "--target", "edgemerge_runtime", "-j", str(jobs)],
                   check=True, stdout=subprocess.DEVNULL)
    found = sorted(build_dir.rglob("edgemerge_runtime.dir"))
    if not found:
        raise SystemExit(f"check_deps: no edgemerge_runtime.dir under {build_dir}")
    return found[0]


# ---- Python: ast ---------------------------------------------------------------------------------

def python_modules(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py below package_dir (the folder's name is the root)."""
    root = package_dir.name
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join([root] + parts)] = path
    return modules


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def runtime_imports(tree: ast.AST):
    """Import nodes that run: everywhere (functions too) except inside `if TYPE_CHECKING:`."""
    pending = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if isinstance(node, ast.If) and is_type_checking(node.test):
            pending.extend(node.orelse)
            continue
        pending.extend(ast.iter_child_nodes(node))


def bound_names(tree: ast.Module) -> set[str] | None:
    """Names a module binds at its top level (in if/try blocks too); None if it star-imports (unknown)."""
    names: set[str] = set()
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        stmt = pending.pop()
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(stmt.name)
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            for alias in stmt.names:
                if alias.name == "*":
                    return None
                names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(stmt, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
            for field in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(stmt, field, []):
                    pending.extend(child.body if isinstance(child, ast.ExceptHandler) else [child])
    return names


def python_graph(package_dir: Path) -> Graph:
    modules = python_modules(package_dir)
    trees = {name: ast.parse(path.read_text(encoding="utf-8"), filename=str(path)) for name, path in modules.items()}
    # `from pkg import name` where pkg's __init__ does not bind `name` imports the submodule pkg.name; if
    # that is not a .py file here it is a compiled extension (edgemerge._runtime): outside the graph.
    package_names = {name: bound_names(trees[name]) for name, path in modules.items() if path.name == "__init__.py"}

    def owning_module(dotted: str) -> str | None:
        while dotted:
            if dotted in modules:
                return dotted
            dotted = dotted.rpartition(".")[0]
        return None

    graph: Graph = {name: {} for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        for node in runtime_imports(trees[name]):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base_parts = package.split(".")
                    if node.level > 1:
                        base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                    base = ".".join(base_parts)
                    base = f"{base}.{node.module}" if node.module else base
                else:
                    base = node.module or ""
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    bound = package_names.get(base)
                    if full in modules:
                        targets.append(full)
                    elif base in package_names and bound is not None and alias.name not in bound:
                        continue  # a submodule that is not Python source (an extension module)
                    else:
                        targets.append(base)
            for target in targets:
                owner = owning_module(target)
                if owner is not None and owner != name:
                    graph[name].setdefault(owner, f"{path.relative_to(package_dir.parent)}:{node.lineno} imports {target}")
    return graph


# ---- command line --------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--c-build", type=Path, metavar="DIR",
                        help="configure and build runtime_c's library in DIR (-j2), then check its objects")
    parser.add_argument("--c-source", type=Path, default=REPO / "runtime_c", metavar="DIR",
                        help="the C project for --c-build (default: runtime_c)")
    parser.add_argument("--c-objects", type=Path, metavar="DIR", help="check the .o files below DIR")
    parser.add_argument("--python", type=Path, metavar="DIR", action="append", default=[],
                        help="check the Python package in DIR (repeatable), e.g. sdk/edgemerge")
    parser.add_argument("--nm", default=os.environ.get("NM", "nm"), help="nm to read objects with (default: nm)")
    args = parser.parse_args(argv)
    if not (args.c_build or args.c_objects or args.python):
        args.c_build = REPO / "build" / "check-deps"
        args.python = [REPO / "sdk" / "edgemerge"]
    circles = 0
    objects = args.c_objects
    if args.c_build is not None:
        try:
            objects = build_c_objects(args.c_source, args.c_build)
        except subprocess.CalledProcessError as exc:
            print(f"check_deps: building {args.c_source} failed: {exc}", file=sys.stderr)
            return 2
    if objects is not None:
        graph = c_graph(objects, args.nm)
        found = report("C", graph)
        print(f"C: {len(graph)} object files, {sum(len(e) for e in graph.values())} edges, {found} circle(s)")
        circles += found
    for package in args.python:
        if not (package / "__init__.py").is_file():
            print(f"check_deps: {package} is not a Python package (no __init__.py)", file=sys.stderr)
            return 2
        graph = python_graph(package)
        found = report("Python", graph)
        print(f"Python ({package.name}): {len(graph)} modules, {sum(len(e) for e in graph.values())} edges, "
              f"{found} circle(s)")
        circles += found
    return 1 if circles else 0


if __name__ == "__main__":
    sys.exit(main())
