"""The package's layout rules (docs/design.md, "Layout"): no import cycles, and no dispatch on a
method's or a task's name outside the registries."""

import ast
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "moviessl"


def _modules() -> dict[str, Path]:
    mods = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    return mods


def import_graph() -> dict[str, set[str]]:
    """Module -> package modules it imports, wherever the import statement stands (functions too).

    ``from pkg import name`` depends on ``pkg.name`` when that is a module, else on ``pkg``; an
    import of one's own ancestor package does not count (Python initialises it first anyway)."""
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for m, p in mods.items():
        is_pkg = p.name == "__init__.py"
        deps: set[str] = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = m.split(".") if is_pkg else m.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = [f"{target}.{a.name}" if f"{target}.{a.name}" in mods else target for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            deps |= {t for t in targets if t in mods and t != m and not m.startswith(t + ".")}
        graph[m] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _name_dispatch(tree: ast.AST) -> list[int]:
    """Lines comparing a variable called ``method`` or ``task`` with string literals."""
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id in ("method", "task"):
            for comp in node.comparators:
                elts = comp.elts if isinstance(comp, (ast.Tuple, ast.List, ast.Set)) else [comp]
                if any(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in elts):
                    hits.append(node.lineno)
    return hits


def test_no_dispatch_on_names_outside_registries():
    # a method or task is chosen through its registry (ssl.registry, tasks.<benchmark>.TASKS) and
    # declares what it needs; code never branches on its name
    hits = [
        f"{p.relative_to(PKG)}:{line}" for p in PKG.rglob("*.py") for line in _name_dispatch(ast.parse(p.read_text()))
    ]
    assert hits == []


def test_dispatch_finder_finds_dispatch():
    code = "if method == 'cvrl':\n    pass\nif task in ('srl', 'verb'):\n    pass\nfor task in ('a',):\n    pass\n"
    assert _name_dispatch(ast.parse(code)) == [1, 3]
