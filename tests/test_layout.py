"""The layout holds: service/'s imports stack at most 8 modules deep and never in a circle, and no product
package imports the tests or the benchmarks.

Imports are read from the source (every `import` and `from ... import`, inside functions too), so that
a module's depth is one more than that of the deepest module of its package it imports."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("service", "training", "batch", "client")
MAX_DEPTH = 8
# what only tests and benchmarks are: their packages, and the modules of tests/ put on the path by pytest
NOT_PRODUCT = {"tests", "bench", "conftest"} | {path.stem for path in (ROOT / "tests").glob("*.py")}


def modules(package: str) -> dict[str, Path]:
    """Every module of `package` by dotted name (a package by its own name, not `.__init__`)."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(name: str, path: Path) -> set[str]:
    """The dotted names `path` (the module `name`) imports, relative imports made absolute; a name taken
    from a module (`from a import b`) counts as `a.b`, which resolves to module a.b or to a itself."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                here = here[: len(here) - node.level + 1]
                base = ".".join(here + ([base] if base else []))
            names |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return names


def graph(package: str) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports."""
    mods = modules(package)

    def resolve(dotted: str) -> str | None:
        while dotted and dotted not in mods:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    edges = {}
    for name, path in mods.items():
        targets = {resolve(n) for n in imported(name, path) if n == package or n.startswith(package + ".")}
        edges[name] = targets - {None, name}
    return edges


def depths(edges: dict[str, set[str]]) -> dict[str, int]:
    """Each module's depth (1 for one that imports none of its package); ValueError naming a cycle."""
    depth, path = {}, []

    def visit(module: str) -> int:
        if module in path:
            raise ValueError("import cycle: " + " -> ".join(path[path.index(module) :] + [module]))
        if module not in depth:
            path.append(module)
            depth[module] = 1 + max((visit(m) for m in edges[module]), default=0)
            path.pop()
        return depth[module]

    for module in edges:
        visit(module)
    return depth


def deepest_chain(edges: dict[str, set[str]], depth: dict[str, int]) -> list[str]:
    chain = [max(depth, key=depth.get)]
    while edges[chain[-1]]:
        chain.append(max(edges[chain[-1]], key=depth.get))
    return chain


def test_the_service_imports_stack_at_most_8_deep_without_cycles():
    edges = graph("service")
    depth = depths(edges)
    chain = deepest_chain(edges, depth)
    assert len(chain) <= MAX_DEPTH, "too deep: " + " -> ".join(chain)


@pytest.mark.parametrize("package", PRODUCT)
def test_no_product_package_imports_the_tests_or_the_benchmarks(package):
    wrong = {
        f"{path.relative_to(ROOT)} imports {name}"
        for module, path in modules(package).items()
        for name in imported(module, path)
        if name.split(".")[0] in NOT_PRODUCT
    }
    assert not wrong


def test_the_measure_sees_depth_and_cycles():
    edges = {"a": {"b"}, "b": {"c"}, "c": set()}
    assert depths(edges) == {"a": 3, "b": 2, "c": 1}
    assert deepest_chain(edges, depths(edges)) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="a -> b -> a"):
        depths({"a": {"b"}, "b": {"a"}})
    # a function-level import counts, and `from service import x` is the module service.x
    source = ROOT / "service" / "app.py"
    assert "service.engine.inference.Inference" in imported("service.app", source)
    assert graph("service")["service.cli"] >= {"service.app"}


def test_the_architecture_page_names_files_that_exist():
    page = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"service/[\w/]+(?:\.py|/)", page))
    assert len(named) > 10 and not {path for path in named if not (ROOT / path).exists()}
    where = page.split("## Where to find")[1].split("##")[0]
    for thing in ("classify route", "estimator", "answer's shape", "version loading", "admission", "gRPC servicer"):
        assert f"- the {thing}" in where or f"- {thing}" in where, thing


def test_no_product_file_passes_300_lines_and_the_benchmarks_2000_together():
    product = [p for package in ("service", "training", "batch", "client") for p in (ROOT / package).rglob("*.py")]
    assert [str(p.relative_to(ROOT)) for p in product if len(p.read_text().splitlines()) > 300] == []
    assert sum(len(p.read_text().splitlines()) for p in (ROOT / "bench").rglob("*.py")) <= 2000
