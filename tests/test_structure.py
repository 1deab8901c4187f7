"""The package's module graph has no import circles (house style: no import circles).

Every ``import``/``from … import`` of a vampstudy module is an edge, at module level
or inside a function (a deferred import still ties the two modules together).
``vampstudy/__init__.py`` is left out: it only re-exports names lazily for users.
"""

from __future__ import annotations

import ast
from pathlib import Path

import vampstudy

PACKAGE = Path(vampstudy.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    if node.level == 0:
        base = node.module or ""
    else:
        anchor = module.split(".")
        anchor = anchor if is_package else anchor[:-1]
        anchor = anchor[:len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([node.module] if node.module else []))
    return [base] + [f"{base}.{a.name}" for a in node.names]


def import_graph() -> dict[str, set[str]]:
    """Module → the vampstudy modules it imports (only names that are modules)."""
    files = {(_module_name(p)): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        if module == "vampstudy":
            continue
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                targets |= set(_resolve(module, path.name == "__init__.py", node))
        graph[module] = {t for t in targets if t in files and t not in ("vampstudy", module)}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_relative_and_deferred_imports():
    graph = import_graph()
    assert "vampstudy.study" in graph["vampstudy.runner"]          # from .study import …
    assert "vampstudy.tracking" in graph["vampstudy.cli"]          # imported inside commands


def test_no_import_circles_between_vampstudy_modules():
    assert cycles(import_graph()) == []


#: House style: no function longer than this many lines of code (docstring, comments and
#: blank lines not counted).
MAX_FUNCTION_LINES = 60


def code_lines(source: str, node: ast.AST) -> int:
    """Lines of code in a function: without its docstring, comments and blank lines."""
    body = node.body
    doc = set()
    first = body[0] if body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
            and isinstance(first.value.value, str):
        doc = set(range(first.lineno, first.end_lineno + 1))
    lines = source.splitlines()
    return sum(1 for n in range(node.lineno, node.end_lineno + 1)
               if n not in doc and lines[n - 1].strip() and not lines[n - 1].strip().startswith("#"))


def long_functions(paths) -> list[str]:
    found = []
    for path in paths:
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = code_lines(source, node)
                if n > MAX_FUNCTION_LINES:
                    found.append(f"{path.name}:{node.name} ({n} lines)")
    return found


def test_code_lines_leave_out_the_docstring_comments_and_blank_lines():
    source = 'def f():\n    """Doc.\n\n    More.\n    """\n    # note\n\n    a = 1\n    return a\n'
    assert code_lines(source, ast.parse(source).body[0]) == 3   # def, a = 1, return


def test_no_function_over_60_lines_of_code():
    studies = PACKAGE.parent / "studies"
    assert long_functions(sorted(PACKAGE.rglob("*.py")) + sorted(studies.glob("*.py"))) == []
