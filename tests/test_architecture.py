"""The shape of the code, checked: layers import downward, no import circles, small modules.

Read with ``ast`` from the source, so the test needs nothing but the standard
library and sees every import, including those inside functions and under
``if TYPE_CHECKING:``. The rules are explained in
docs/decisions/0015-core-packages.md:

- **layers**: ``core`` imports nothing from ``hal``, ``plugins`` or ``web``;
  ``hal`` nothing from ``plugins`` or ``web``. Every import counts here,
  typing-only ones included: a name a module needs for its hints is still
  knowledge it has.
- **no circle at run time**: among the imports that execute (at module level
  or inside a function, where a circle usually hides), no module imports
  itself back through others.
- **typing imports**: an ``if TYPE_CHECKING:`` import never runs, but a
  reader follows it. With them added the graph must stay free of circles too,
  except for the back-references listed in :data:`TYPING_BACK_REFERENCES`:
  two objects that know each other (a subscription and the manager that made
  it), or the plugin contract naming the objects it hands to plugins. The list
  can only shrink: an entry that is no longer needed fails the test.
- **size**: no module of ``core``, ``web`` or ``hal`` (simulators aside) is
  over :data:`MAX_LINES` lines, but for those in :data:`LONG_MODULES`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "cityvisor"

MAX_LINES = 600

LONG_MODULES = {
    "cityvisor/core/declarations.py": "the one home of every declaration, by design",
    "cityvisor/hal/modbus/endpoint.py": "one class: the connection, its turns and backoff",
}
"""Modules allowed over :data:`MAX_LINES`, each with its reason. Only ever shorter."""

TYPING_BACK_REFERENCES = {
    ("cityvisor.core.hookspecs", "cityvisor.core.hub"): "the contract names the hub it hands hooks",
    (
        "cityvisor.core.hookspecs",
        "cityvisor.core.config",
    ): "the contract names the config it checks",
    ("cityvisor.core.hookspecs", "cityvisor.core.plugins"): "the contract names the plugin "
    "manager a config check may ask for other plugins' declarations",
    ("cityvisor.core.alarms.subscriptions", "cityvisor.core.alarms.manager"): "a subscription "
    "unsubscribes from the manager that made it",
    ("cityvisor.core.commands.errors", "cityvisor.core.commands.records"): "a refusal carries "
    "the result it was recorded as",
    ("cityvisor.core.points.subscriptions", "cityvisor.core.points.database"): "a subscription "
    "watches points of the database that made it",
    ("cityvisor.hal.modbus.device", "cityvisor.hal.modbus.endpoint"): "a unit polls through "
    "the endpoint that made it",
    ("cityvisor.hal.osdp.reader", "cityvisor.hal.osdp.bus"): "a reader talks through the bus "
    "that made it",
    ("cityvisor.web.state", "cityvisor.web.ws"): "the shared state holds the connected clients",
    ("cityvisor.ops.http", "cityvisor.ops.operations"): "the routes serve the operations layer "
    "that starts them",
}
"""Typing-only imports allowed to point back up, each with its reason. Keep it short: each entry needs its reason."""


@dataclass(frozen=True)
class Import:
    """One import of one cityvisor module by another."""

    importer: str
    imported: str
    line: int
    typing_only: bool
    deferred: bool


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str) -> Iterator[Import]:
    """Every import of a cityvisor module by module ``name``, wherever it is written."""
    path = MODULES[name]
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]

    def targets(node: ast.Import | ast.ImportFrom) -> Iterator[str]:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
            return
        if node.level:
            base = package[: len(package) - node.level + 1]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        for alias in node.names:
            # ``from package import submodule`` imports the submodule.
            submodule = f"{module}.{alias.name}"
            yield submodule if submodule in MODULES else module

    def walk(nodes: list[ast.stmt], typing_only: bool, deferred: bool) -> Iterator[Import]:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                yield from walk(node.body, True, deferred)
                yield from walk(node.orelse, typing_only, deferred)
                continue
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in targets(node):
                    if target in MODULES and target != name:
                        yield Import(name, target, node.lineno, typing_only, deferred)
                continue
            inner = deferred or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            for field in ("body", "orelse", "finalbody"):
                yield from walk(getattr(node, field, []), typing_only, inner)
            for handler in getattr(node, "handlers", []):
                yield from walk(handler.body, typing_only, inner)

    yield from walk(ast.parse(path.read_text(encoding="utf-8")).body, False, False)


IMPORTS = [found for name in MODULES for found in imports_of(name)]


def circles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for importer, imported in edges:
        graph[importer].add(imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph[node]:
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def layer(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def crossings(lower: str, forbidden: set[str]) -> list[str]:
    return [
        f"{i.importer} (line {i.line}) imports {i.imported}"
        for i in IMPORTS
        if layer(i.importer) == lower and layer(i.imported) in forbidden
    ]


def test_the_graph_sees_the_imports_it_checks():
    # A reader that found nothing would let everything pass.
    edges = {(i.importer, i.imported) for i in IMPORTS}
    assert ("cityvisor.core.hub", "cityvisor.core.plugins") in edges
    assert ("cityvisor.web.app", "cityvisor.web.api") in edges
    assert any(i.typing_only for i in IMPORTS) and any(i.deferred for i in IMPORTS)


def test_core_imports_nothing_from_hal_plugins_or_web():
    assert crossings("core", {"hal", "plugins", "web"}) == []


def test_hal_imports_nothing_from_plugins_or_web():
    assert crossings("hal", {"plugins", "web"}) == []


def test_no_import_circle_at_run_time():
    assert circles({(i.importer, i.imported) for i in IMPORTS if not i.typing_only}) == []


def test_typing_imports_make_no_circle_but_the_listed_back_references():
    edges = {
        (i.importer, i.imported)
        for i in IMPORTS
        if not (i.typing_only and (i.importer, i.imported) in TYPING_BACK_REFERENCES)
    }
    assert circles(edges) == []


def test_every_listed_back_reference_is_still_a_typing_only_import():
    for importer, imported in TYPING_BACK_REFERENCES:
        found = [i for i in IMPORTS if (i.importer, i.imported) == (importer, imported)]
        assert found, f"{importer} no longer imports {imported}: remove it from the list"
        assert all(i.typing_only for i in found), f"{importer} imports {imported} at run time"
        without = {
            (i.importer, i.imported)
            for i in IMPORTS
            if (i.importer, i.imported) != (importer, imported)
            and not (i.typing_only and (i.importer, i.imported) in TYPING_BACK_REFERENCES)
        }
        assert circles(without | {(importer, imported)}), (
            f"{importer} -> {imported} closes no circle any more: remove it from the list"
        )


def module_lengths() -> dict[str, int]:
    lengths = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if relative.split("/")[1] in ("core", "web", "hal") and "/sim/" not in relative:
            lengths[relative] = len(path.read_text(encoding="utf-8").splitlines())
    return lengths


def test_no_module_of_core_web_or_hal_is_over_the_limit():
    too_long = {
        path: lines
        for path, lines in module_lengths().items()
        if lines > MAX_LINES and path not in LONG_MODULES
    }
    assert too_long == {}, f"split these modules (over {MAX_LINES} lines): {too_long}"


def test_the_list_of_long_modules_only_shrinks():
    lengths = module_lengths()
    stale = [path for path in LONG_MODULES if lengths.get(path, 0) <= MAX_LINES]
    assert stale == [], f"no longer over {MAX_LINES} lines (or gone): remove {stale}"


def documented_modules() -> set[str]:
    """The paths docs/architecture.md's map names: ``dir/`` (``a.py``, ``b.py``) names three."""
    named = set()
    for line in (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8").splitlines():
        for cell in line.split("|"):
            directory = ""
            for token in re.findall(r"`([^`]+)`", cell):
                if token.startswith("cityvisor/"):
                    named.add(token)
                    directory = token if token.endswith("/") else ""
                elif directory and token.endswith(".py"):
                    named.add(directory + token)
    return named


def test_the_architecture_map_names_every_module_and_only_modules_that_exist():
    named = documented_modules()
    missing = []
    for path in module_lengths():
        directory, _, file = path.rpartition("/")
        if file == "__init__.py" and directory.count("/") == 1:
            continue  # cityvisor/core/, web/, hal/ themselves
        wanted = directory + "/" if file == "__init__.py" else path
        if wanted not in named:
            missing.append(wanted)
    assert missing == [], f"docs/architecture.md does not say where these are: {missing}"
    gone = [path for path in named if "<" not in path and not (ROOT / path).exists()]
    assert gone == [], f"docs/architecture.md names what is not in the tree: {gone}"
