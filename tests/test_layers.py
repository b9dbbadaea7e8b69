"""The import graph, read from the code (function-level imports included, `if TYPE_CHECKING:` blocks not): no
circle, and every arrow points down the layers of DESIGN.md."""

from __future__ import annotations

import ast
from pathlib import Path

import genlab

SOURCE = Path(genlab.__file__).resolve().parent

#: Layers from the bottom; a module may import its own layer's modules and those of the layers below. A name
#: matches a module or a package (everything under it); the most specific name wins.
LAYERS: list[tuple[str, ...]] = [
    # base: errors, settings, checks, files, the run folder's names; config registers the resolvers
    (
        "genlab.errors",
        "genlab.settings",
        "genlab.validation",
        "genlab.trust",
        "genlab.files",
        "genlab.building",
        "genlab.upstream",
        "genlab.extras",
        "genlab.interrupts",
        "genlab.threads",
        "genlab.console",
        "genlab.cache",
        "genlab.run.layout",
        "genlab.config",
        "genlab.checks",
    ),
    ("genlab.run",),  # the run folder: records, saved config, lock, manifest, checkpoints, resume
    ("genlab.nets",),
    ("genlab.data",),
    ("genlab.metrics",),
    ("genlab.models",),
    ("genlab.run.loading",),  # a run folder back as a model: builds what the layers below define
    ("genlab.callbacks",),
    ("genlab.serving", "genlab.exporting"),  # what a loaded run is served or exported as
    # the job, and how the jobs of a sweep are launched
    (
        "genlab.training",
        "genlab.sweeps",
        "genlab.sweeper",
        "genlab.dead_jobs",
        "genlab.local_processes",
        "genlab.comparison",
        "genlab.preflight",
    ),
    ("genlab.commands",),
    ("genlab.train", "genlab.eval", "genlab.sample", "genlab.serve", "genlab.compare", "genlab.export"),  # entrypoints
]


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in SOURCE.rglob("*.py")}


def imports_of(path: Path) -> set[str]:
    """The genlab modules `path` imports at run time (a `from X import name` of a submodule counts as that one)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {name for name in found if name in MODULES}


GRAPH = {name: imports_of(path) - {name} for name, path in MODULES.items()}


def layer_of(module: str) -> int | None:
    matches = [
        (len(name), index)
        for index, names in enumerate(LAYERS)
        for name in names
        if module == name or module.startswith(name + ".")
    ]
    return max(matches)[1] if matches else None


def test_every_module_has_a_layer() -> None:
    packages = {"genlab"} | {name for name, path in MODULES.items() if path.name == "__init__.py"}
    assert [name for name in MODULES if name not in packages and layer_of(name) is None] == []


def test_every_import_points_down_or_sideways() -> None:
    upward = [
        f"{module} -> {imported}"
        for module, imported_modules in GRAPH.items()
        for imported in imported_modules
        if module != "genlab" and imported != "genlab" and (layer_of(imported) or 0) > (layer_of(module) or 0)
    ]
    assert upward == []


def test_the_import_graph_has_no_circle() -> None:
    done: set[str] = set()
    circles: list[list[str]] = []

    def walk(module: str, path: list[str]) -> None:
        if module in path:
            circles.append([*path[path.index(module) :], module])
            return
        if module in done:
            return
        for imported in sorted(GRAPH[module]):
            walk(imported, [*path, module])
        done.add(module)

    for module in sorted(GRAPH):
        walk(module, [])
    assert circles == []


def test_the_check_sees_an_arrow_up_and_a_circle(tmp_path: Path) -> None:
    """The reader finds imports inside functions and ignores typing-only ones."""
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from genlab.training import train\n"
        "def f():\n    from genlab.run.loading import load_run\n"
    )
    assert imports_of(source) == {"genlab.run.loading"}
    assert layer_of("genlab.run.loading") > layer_of("genlab.run.manifest") > layer_of("genlab.run.layout")
