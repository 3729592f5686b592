"""The package layering of ``functions/``, read from the source with ``ast``.

Layers, top to bottom::

    glue      functions.app, .entry, .cli, .admin_cli, .__main__  (compose areas; anything)
    areas     functions.auth, .admin, .chat, .conversations, .responses, .mcp, .console, .ops
    services  functions.services.<sub>   (one unit per module or subpackage)
    common    functions.common
    root      functions (its __init__: __version__ only)

A module may import its own unit and any unit of a lower layer, except that an area never
imports another area. Services import services and common; common imports only common.
Everything may import ``functions`` itself (``__version__``), which imports nothing of ours.

Three checks, each naming the offending edges (file:line, and whether the import sits in
a function body):

* no import cycle between files: strongly connected components of the graph of
  module-level imports (the ones that run at import time; ``if TYPE_CHECKING:`` excluded);
* no import cycle between units (common, each services unit, each area, each glue module),
  counting every import: module level, in function bodies, and type-only;
* no upward or sideways import between units (every import counted, as above).
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "functions"
SOURCE = Path(__file__).resolve().parents[2] / PACKAGE

AREAS = ("auth", "admin", "chat", "conversations", "responses", "mcp", "console", "ops")
GLUE = ("app", "entry", "cli", "admin_cli", "__main__")
RANK = {"root": 0, "common": 1, "services": 2, "area": 3, "glue": 4}


# --- reading the imports ------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, e.g. functions.chat.handlers
    target: str  # the most specific module of ours it names
    line: int
    in_function: bool  # inside a def (runs when called, not at import)
    type_only: bool  # under `if TYPE_CHECKING:`

    @property
    def at_import_time(self) -> bool:
        return not self.in_function and not self.type_only

    def __str__(self) -> str:
        where = " (in a function)" if self.in_function else ""
        where += " (TYPE_CHECKING)" if self.type_only else ""
        return f"{self.source}:{self.line} imports {self.target}{where}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.cache
def modules() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    return {module_name(p): p for p in sorted(SOURCE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(name: str) -> str | None:
    """The longest prefix of ``name`` that is one of our modules (None: not ours)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules():
            return candidate
        parts.pop()
    return None


def _targets(node: ast.Import | ast.ImportFrom, module: str) -> list[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: from the package holding this module
            is_package = modules()[module].name == "__init__.py"
            package = module.split(".")
            package = package if is_package else package[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join([*package, base] if base else package)
        # `from pkg import name`: name may be a submodule (then that is the target).
        names = [f"{base}.{alias.name}" for alias in node.names] or [base]
        names = [n if _resolve(n) == n else base for n in names]
    found = {_resolve(n) for n in names if n == PACKAGE or n.startswith(PACKAGE + ".")}
    return sorted(t for t in found if t is not None)


def imports_of(module: str) -> list[Import]:
    """The imports of one module, each marked with where it sits."""
    tree = ast.parse(modules()[module].read_text(), filename=str(modules()[module]))
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool, type_only: bool) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            for target in _targets(node, module):
                found.append(Import(module, target, node.lineno, in_function, type_only))
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(
                node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            )
            guarded = type_only or (
                isinstance(node, ast.If) and _is_type_checking(node.test) and child in node.body
            )
            visit(child, nested, guarded)

    visit(tree, in_function=False, type_only=False)
    return found


@functools.cache
def all_imports() -> list[Import]:
    return [i for m in modules() for i in imports_of(m) if i.target != m]


# --- units and layers --------------------------------------------------------------------


def unit_of(module: str) -> str:
    """The unit a module belongs to: functions.common, functions.services.<sub>, an area
    package, or the glue/root module itself."""
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] == "common":
        return "functions.common"
    if len(parts) >= 3 and parts[1] == "services":
        return ".".join(parts[:3])
    if len(parts) >= 2 and parts[1] in AREAS:
        return ".".join(parts[:2])
    return module


def layer_of(unit: str) -> str | None:
    """root, common, services, area or glue; None for a module outside the layout."""
    parts = unit.split(".")
    if unit == PACKAGE:
        return "root"
    if parts[1] == "common":
        return "common"
    if parts[1] == "services":
        return "services"
    if parts[1] in AREAS:
        return "area"
    if len(parts) == 2 and parts[1] in GLUE:
        return "glue"
    return None


def layering_violation(edge: Import) -> str | None:
    """Why an import breaks the layering, or None when it is allowed."""
    source, target = unit_of(edge.source), unit_of(edge.target)
    upper, lower = layer_of(source), layer_of(target)
    if source == target or upper is None or lower is None or upper == "glue":
        return None  # a module outside the layout fails test_every_module_has_a_layer
    if RANK[lower] > RANK[upper]:
        return f"{upper} -> {lower} (upward)"
    if upper == lower == "area":
        return "area -> another area"
    return None


# --- cycles ------------------------------------------------------------------------------


def graph(edges: Iterable[tuple[str, str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for source, target in edges:
        out.setdefault(source, set()).add(target)
        out.setdefault(target, set())
    return out


def cycles(edges: Mapping[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = lowlink[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(edges[node]):
            if succ not in index:
                connect(succ)
                lowlink[node] = min(lowlink[node], lowlink[succ])
            elif succ in on_stack:
                lowlink[node] = min(lowlink[node], index[succ])
        if lowlink[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return sorted(found)


def a_cycle(edges: Mapping[str, set[str]], component: list[str]) -> list[str]:
    """One closed path through the component's first node (breadth-first, shortest)."""
    start, members = component[0], set(component)
    paths: list[list[str]] = [[start]]
    seen = {start}
    while paths:
        path = paths.pop(0)
        for succ in sorted(edges[path[-1]] & members):
            if succ == start:
                return [*path, start]
            if succ not in seen:
                seen.add(succ)
                paths.append([*path, succ])
    return component  # unreachable for a strongly connected component


def describe(
    title: str,
    components: list[list[str]],
    edges: Mapping[str, set[str]],
    imports: list[Import],
    key: Callable[[str], str],
) -> str:
    """The components, one closed path through each, and every import inside each (every
    edge inside a strongly connected component lies on some cycle)."""
    lines = [f"{len(components)} {title}:"]
    for component in components:
        members = set(component)
        lines.append(f"  cycle {' -> '.join(a_cycle(edges, component))}")
        lines.append(f"    members: {', '.join(component)}")
        lines += [
            f"    {i}"
            for i in imports
            if key(i.source) in members
            and key(i.target) in members
            and key(i.source) != key(i.target)
        ]
    return "\n".join(lines)


# --- the tests ---------------------------------------------------------------------------


def test_the_source_is_found() -> None:
    assert "functions.common.settings" in modules()
    assert any(i.source == "functions.app" for i in all_imports())


def test_the_checks_themselves() -> None:
    edges = graph([("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "e"), ("e", "d")])
    assert cycles(edges) == [["a", "b", "c"], ["d", "e"]]
    assert a_cycle(edges, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    assert cycles(graph([("a", "b"), ("b", "c")])) == []

    def edge(source: str, target: str) -> Import:
        return Import(source, target, 1, in_function=False, type_only=False)

    assert layering_violation(edge("functions.common.db", "functions.services.keys"))
    assert layering_violation(edge("functions.services.keys", "functions.chat.handlers"))
    assert layering_violation(edge("functions.chat.handlers", "functions.admin.call"))
    assert layering_violation(edge("functions.ops.docs", "functions.app"))
    assert layering_violation(edge("functions", "functions.common.db"))
    assert not layering_violation(edge("functions.chat", "functions.chat.handlers"))
    assert not layering_violation(edge("functions.chat.handlers", "functions.services.keys"))
    assert not layering_violation(edge("functions.services.keys", "functions.services.ledger"))
    assert not layering_violation(edge("functions.services.keys", "functions.common.db"))
    assert not layering_violation(edge("functions.common.tracing", "functions"))
    assert not layering_violation(edge("functions.app", "functions.chat"))

    relative = ast.parse("from ..common import errors\nfrom . import handlers\n").body
    assert isinstance(relative[0], ast.ImportFrom)
    assert isinstance(relative[1], ast.ImportFrom)
    assert _targets(relative[0], "functions.chat.handlers") == ["functions.common.errors"]
    assert _targets(relative[1], "functions.chat") == ["functions.chat.handlers"]


def test_every_module_has_a_layer() -> None:
    loose = sorted(m for m in modules() if layer_of(unit_of(m)) is None)
    assert not loose, (
        "modules outside the layout (add them to an area, services or common, or to GLUE "
        f"in {Path(__file__).name}): {', '.join(loose)}"
    )


def test_no_import_cycle_between_files() -> None:
    runtime = [i for i in all_imports() if i.at_import_time]
    edges = graph((i.source, i.target) for i in runtime)
    found = cycles(edges)
    assert not found, describe("import cycle(s) between files", found, edges, runtime, str)


def test_no_import_cycle_between_packages() -> None:
    edges = graph(
        (unit_of(i.source), unit_of(i.target))
        for i in all_imports()
        if unit_of(i.source) != unit_of(i.target)
    )
    found = cycles(edges)
    message = describe("import cycle(s) between packages", found, edges, all_imports(), unit_of)
    assert not found, message


def test_no_upward_or_sideways_import() -> None:
    bad = [(why, i) for i in all_imports() if (why := layering_violation(i)) is not None]
    message = [f"{len(bad)} import(s) against the layering (areas -> services -> common):"]
    message += [f"  [{why}] {edge}" for why, edge in sorted(bad, key=lambda b: (b[0], str(b[1])))]
    assert not bad, "\n".join(message)
