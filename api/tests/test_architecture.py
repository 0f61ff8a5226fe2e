"""The structure rules of docs/architecture.md, checked on the product code (tests aside).

The layers themselves are import-linter's contracts (``pyproject.toml``, ``make lint``);
these tests add what a layers contract does not see: a cycle inside one layer, an import
hidden inside a function, and the stores written out again instead of imported.
"""

import ast
import importlib
import re
from pathlib import Path

import grimp
import pytest
from django.conf import settings

REPO = Path(settings.BASE_DIR)
PACKAGES = ("api", "loadtest", "data_project")
# Imports inside a function that are Django's documented way, not a hidden cycle: an
# AppConfig registers its system checks in ready(), and the fast path's check imports what
# it checks only when the checks run (grimp still sees the edge: the layers are checked);
# manage.py imports Django in main().
ALLOWED_LOCAL_IMPORTS = {
    ("api/apps.py", "ready"),
    ("api/apps.py", "check_fast_path"),
    ("manage.py", "main"),
}


def product_files() -> list[Path]:
    files = [REPO / "manage.py", REPO / "gunicorn.conf.py", REPO / "locustfile.py"]
    for package in PACKAGES:
        files += (REPO / package).rglob("*.py")
    return sorted(f for f in files if "tests" not in f.parts and "migrations" not in f.parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the product modules it imports, for every product module."""
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False)
    product = {m for m in graph.modules if ".tests" not in m}
    return {m: graph.find_modules_directly_imported_by(m) & product for m in product}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph[module]:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_the_cycle_finder_finds_a_cycle():
    """So that the next test can fail."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycle_in_the_product_code():
    """No module imports, through others, a module that imports it."""
    assert cycles(import_graph()) == []


def local_imports(path: Path) -> list[tuple[str, int]]:
    """``(enclosing function, line)`` of every import inside a function or method."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found += [
                (node.name, inner.lineno)
                for inner in ast.walk(node)
                if isinstance(inner, ast.Import | ast.ImportFrom)
            ]
    return found


def test_no_import_hides_inside_a_function():
    """An import inside a function is how a cycle hides; none but Django's own patterns."""
    hidden = [
        f"{path.relative_to(REPO)}:{line} in {function}()"
        for path in product_files()
        for function, line in local_imports(path)
        if (str(path.relative_to(REPO)), function) not in ALLOWED_LOCAL_IMPORTS
    ]
    assert hidden == []


STORES_WRITTEN_OUT = re.compile(r"""["']users["'],\s*["']products["'],\s*["']orders["']""")


def test_the_three_stores_are_defined_once():
    """``api.domain.stores`` names them; everything else imports them."""
    written = [
        str(path.relative_to(REPO))
        for path in product_files()
        if STORES_WRITTEN_OUT.search(path.read_text())
    ]
    assert written == []


BENCHMARKS = sorted(p.stem for p in (REPO / "bench").glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_benchmark_imports(name):
    """A benchmark is not a test, but a name it imports that moved would break it unseen."""
    importlib.import_module(f"bench.{name}")
