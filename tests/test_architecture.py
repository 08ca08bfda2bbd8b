"""The layering rule of docs/ARCHITECTURE.md, read from the code: every `import` in studio/ and in
the built-in plugins points down the layer stack, and no group of studio modules imports itself in
a circle (at module level or inside functions). A new upward import or cycle fails here with the
exact file and line."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUDIO = ROOT / "studio"

# Each layer's rank, lowest first. A module may import its own layer and any layer of a lower rank;
# never a higher one, nor a sibling of the same rank (the feature rooms stay independent).
RANK = {"base": 0, "plugins": 1, "core": 2,
        "hyper": 3, "export": 3, "compare": 3, "transfer": 3,      # feature rooms
        "worker": 4, "ui": 5, "cli": 6}
LAYERS = tuple(RANK)
BASE_PACKAGES = tuple(name for name in RANK if name != "base")   # studio.<x>.* subpackages


def allowed(source_layer: str, target_layer: str) -> bool:
    return source_layer == target_layer or RANK[target_layer] < RANK[source_layer]
GUI_LIBRARIES = ("PySide6", "pyqtgraph")
HEAVY_LIBRARIES = ("torch", "transformers", "peft")   # never at module level in the GUI


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "plugins_builtin":
        return "plugins"
    if len(parts) >= 2 and parts[1] in BASE_PACKAGES:
        return parts[1]
    return "base"                  # studio, studio.paths, studio.errors and other loose helpers


def module_name(path: Path) -> str:
    if path.is_relative_to(STUDIO):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        return ".".join(parts)
    return "plugins_builtin." + path.parent.name          # plugins/<id>/plugin.py


def known_modules() -> set[str]:
    return {module_name(p) for p in STUDIO.rglob("*.py")}


def resolve(name: str, modules: set[str]) -> str | None:
    """The studio module an import name refers to (the longest prefix that is a module)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def imports(path: Path, modules: set[str]):
    """(line, imported studio module or library top name, at module level?) for one file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        for name in names:
            target = resolve(name, modules) if name.startswith("studio") else name.split(".")[0]
            if target:
                yield node.lineno, target, id(node) in top_level


def files():
    yield from sorted(STUDIO.rglob("*.py"))
    yield from sorted((ROOT / "plugins").glob("*/plugin.py"))


def test_imports_point_down():
    modules = known_modules()
    wrong = []
    for path in files():
        source = module_name(path)
        for line, target, top in imports(path, modules):
            where = f"{path.relative_to(ROOT)}:{line}"
            if target.startswith("studio"):
                if not allowed(layer_of(source), layer_of(target)):
                    wrong.append(f"{where} ({layer_of(source)}) imports {target} "
                                 f"({layer_of(target)}: not below it)")
            elif target in GUI_LIBRARIES and layer_of(source) not in ("ui", "cli"):
                wrong.append(f"{where} imports {target}: only studio.ui uses Qt")
            elif target == "benchmarks" or target.startswith("hyper_eval"):
                wrong.append(f"{where} imports the benchmarks")
            elif top and target in HEAVY_LIBRARIES and layer_of(source) == "ui":
                wrong.append(f"{where} imports {target} at module level in the GUI")
    assert not wrong, "imports that break the layering:\n" + "\n".join(wrong)


def test_no_import_cycles():
    modules = known_modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for path in STUDIO.rglob("*.py"):
        source = module_name(path)
        for _, target, _ in imports(path, modules):
            if target.startswith("studio") and target != source and not source.startswith(target + "."):
                graph[source].add(target)
    # a package's __init__ that re-exports its own submodules is not a cycle with them
    for source in graph:
        graph[source] = {t for t in graph[source] if not t.startswith(source + ".")}
    cycles = strongly_connected(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(sorted(c)) for c in cycles)


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iteratively: every group of two or more modules reachable from each other."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]; counter[0] += 1
        stack.append(root); on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]; counter[0] += 1
                    stack.append(child); on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = set()
                while True:
                    member = stack.pop(); on_stack.discard(member); group.add(member)
                    if member == node:
                        break
                if len(group) > 1:
                    out.append(group)
    return out


def test_the_checker_sees_a_violation(tmp_path):
    """The rule is not vacuous: an upward import written in a core-layer file is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom studio.ui import widgets\n\ndef f():\n    from studio.cli import main\n")
    found = [(line, target) for line, target, _ in imports(bad, known_modules())]
    assert (2, "studio.ui.widgets") in found and (5, "studio.cli") in found
    assert not allowed(layer_of("studio.core.data"), layer_of("studio.ui.widgets"))
    assert not allowed("export", "hyper") and allowed("export", "core") and allowed("ui", "export")
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
