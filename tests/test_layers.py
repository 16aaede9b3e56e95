"""The package's walls: no import cycle, imports only point down the layers, few floors.

Every import counts, those inside functions and under TYPE_CHECKING included: a cycle that is
only taken at run time is still a cycle a reader has to untangle.
"""

import ast
import re
from functools import cache
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "evores"

# The layers, bottom to top. A part (a subpackage, or a module at evores/'s top level) may
# import only parts of a lower layer, never one beside or above it.
LAYERS = {
    "core": 1,  # errors, exit codes, results, seeding, statistics, atomic writes
    "data": 2, "strategies": 2, "hpc": 2,
    "training": 3, "store": 3,
    "config": 4, "execution": 4,
    "reporting": 5,
    "engine": 6,
    # the one command and the earlier import paths and commands, kept as thin shims
    "__main__": 7, "run": 7, "report": 7, "export": 7, "plan": 7, "slurm": 7,
    "fitness": 7, "space": 7, "cache": 7, "errors": 7, "stopping": 7,
}  # fmt: skip
MAX_FLOORS = 7
MAX_TOP_LEVEL_MODULES = 12  # evores/__init__.py included
MAX_LINES = 500


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str) -> str | None:
    """The part a module belongs to (None for the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


@cache
def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


@cache
def imports() -> dict[str, set[str]]:
    """Each module's evores modules, every import statement counted."""
    known = modules()
    graph = {}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            for target in targets:
                while target and target not in known:  # a name imported from a module
                    target = target.rpartition(".")[0]
                if target.startswith("evores") and target != name:
                    found.add(target)
        graph[name] = found
    return graph


def cycle_in(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def part_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, targets in imports().items():
        source = part_of(module)
        if source is None:
            continue
        graph.setdefault(source, set())
        graph[source] |= {p for t in targets if (p := part_of(t)) and p != source}
    return graph


def test_every_part_has_a_layer():
    assert {part_of(m) for m in modules()} - {None} == set(LAYERS)


def test_no_import_cycle_among_modules():
    assert cycle_in(imports()) is None, " -> ".join(cycle_in(imports()) or [])


def test_no_import_cycle_among_parts():
    assert cycle_in(part_graph()) is None, " -> ".join(cycle_in(part_graph()) or [])


def test_imports_point_down_the_layers():
    wrong = [
        f"{module} imports {target}"
        for module, targets in imports().items()
        for target in targets
        if (source := part_of(module)) and (goal := part_of(target)) and source != goal
        and LAYERS[goal] >= LAYERS[source]
    ]  # fmt: skip
    assert not wrong, "\n".join(sorted(wrong))


def test_the_package_itself_imports_nothing_eagerly():
    """``import evores`` stays cheap: its public names load on first use."""
    assert imports()["evores"] == set()


def test_at_most_seven_floors():
    graph = part_graph()

    @cache
    def floor(part: str) -> int:
        return 1 + max((floor(below) for below in graph[part]), default=0)

    floors = {part: floor(part) for part in graph}
    assert max(floors.values()) <= MAX_FLOORS, floors


def test_few_modules_at_the_top_and_none_too_long():
    top = [path.name for path in PACKAGE.glob("*.py")]
    assert len(top) <= MAX_TOP_LEVEL_MODULES, sorted(top)
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}  # fmt: skip
    assert not long, long


def test_exit_codes_are_defined_in_one_module():
    defining = [
        name
        for name, path in modules().items()
        if re.search(r"(?m)^EXIT_[A-Z_]+ = \d+", path.read_text())
    ]
    assert defining == ["evores.core.exits"]
