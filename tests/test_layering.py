"""The package's import graph: no cycle, and every module imports only from its own layer or
the layers below it (README.md, "Development").

The graph is read from the source with ``ast``: every ``import`` and ``from ... import`` of a
skiplab module, at module level or inside a function, absolute or relative. Importing
``skiplab.a.b`` from outside ``skiplab.a`` also runs ``skiplab/a/__init__.py``; that is an
edge too. Two things are not edges: the top-level ``skiplab/__init__.py``, which Python runs
before any skiplab module and which imports :mod:`skiplab.models` (that is what fills the
registry, as in timm), and modules named only in strings (the ``python -m`` children of
``skiplab.selftest``).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import skiplab

PACKAGE = Path(skiplab.__file__).resolve().parent

# Lowest first. A module may import its own layer and the layers above it in this list, never
# one below it. A module's layer is that of the longest name here that is it or a package
# holding it; a new module outside them all fails test_every_module_has_a_layer.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # Know nothing of networks: CPU/precision facts, atomic files, the git revision, the
    # error for a missing optional extra, plain-text tables, a shared config base if there is
    # one, and the registry, a table of names that the families fill (it imports none of them).
    (
        "base",
        (
            "skiplab.hardware",
            "skiplab.fileio",
            "skiplab.provenance",
            "skiplab.extras",
            "skiplab.tables",
            "skiplab.config",
            "skiplab.registry",
        ),
    ),
    # Datasets, loaders, downloads and the cache: models.pretrained fetches weights with them.
    ("data", ("skiplab.data",)),
    # The networks, their weights and create_model.
    ("models", ("skiplab.models",)),
    # skiplab/__init__.py: re-exports the model API (no module of the package imports it).
    ("public API", ("skiplab",)),
    # Functions of a built network (parameter and MAC counts, BatchNorm folding).
    ("model tools", ("skiplab.complexity", "skiplab.fuse")),
    ("train", ("skiplab.train",)),
    ("analysis", ("skiplab.analysis",)),
    # What runs on top of training and analysis: the chapter's experiments, the benchmarks
    # against torchvision, export for inference.
    ("applications", ("skiplab.experiments", "skiplab.bench", "skiplab.export")),
    # Entry points: the command line, and the fault-injection harness, which drives it.
    ("entry points", ("skiplab.cli", "skiplab.__main__", "skiplab.selftest")),
]


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    where: str  # "skiplab/cli.py:16"
    implicit: bool = False  # the __init__ of a package, run on the way to one of its modules

    def __str__(self) -> str:
        how = " (its package __init__)" if self.implicit else ""
        return f"{self.where}: {self.importer} imports {self.imported}{how}"


def module_name(rel: Path) -> str:
    """``skiplab/train/__init__.py`` -> ``skiplab.train``; ``skiplab/cli.py`` -> ``skiplab.cli``."""
    parts = list(rel.with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_sources(package: Path = PACKAGE) -> dict[str, tuple[str, str]]:
    """Every module of the package: name -> (path relative to ``src``, source text)."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent)
        out[module_name(rel)] = (rel.as_posix(), path.read_text(encoding="utf-8"))
    return out


def import_edges(sources: dict[str, tuple[str, str]]) -> list[Edge]:
    """Every import of one skiplab module by another in ``sources`` (see the module docstring)."""
    modules = set(sources)
    edges = []
    for name, (rel, text) in sources.items():
        package = name if rel.endswith("__init__.py") else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(text, filename=rel)):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from the importer's package, level - 1 up
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + [node.module or ""])
                    base = base.rstrip(".")
                else:
                    base = node.module or ""
                # `from skiplab.models import resnet` imports the module skiplab.models.resnet.
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            else:
                continue
            where = f"{rel}:{node.lineno}"
            for target in dict.fromkeys(targets):
                if target != "skiplab" and not target.startswith("skiplab."):
                    continue
                if target != name:
                    edges.append(Edge(name, target, where))
                parts = target.split(".")
                for i in range(2, len(parts)):  # skiplab.a, skiplab.a.b, ... (not skiplab)
                    pkg = ".".join(parts[:i])
                    outside = name != pkg and not name.startswith(pkg + ".")
                    if pkg in modules and outside:
                        edges.append(Edge(name, pkg, where, implicit=True))
    return edges


def find_cycles(edges: list[Edge]) -> list[list[Edge]]:
    """One cycle (as its edges) per back edge met in a depth-first walk; [] when acyclic."""
    graph: dict[str, list[Edge]] = {}
    for e in edges:
        graph.setdefault(e.importer, []).append(e)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[Edge] = []
    cycles = []

    def visit(node: str) -> None:
        state[node] = 1
        for e in graph.get(node, []):
            if state.get(e.imported) == 1:
                start = next(i for i, p in enumerate(path) if p.importer == e.imported)
                cycles.append([*path[start:], e])
            elif e.imported not in state:
                path.append(e)
                visit(e.imported)
                path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def layer_of(module: str) -> int | None:
    """Index in LAYERS of ``module``'s layer (longest matching name), or None."""
    best, best_len = None, -1
    for index, (_, names) in enumerate(LAYERS):
        for prefix in names:
            matches = module == prefix or (prefix != "skiplab" and module.startswith(prefix + "."))
            if matches and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


def layer_violations(edges: list[Edge]) -> list[str]:
    """One line per import of a higher layer: where, what, and both layers."""
    out = []
    for e in edges:
        low, high = layer_of(e.importer), layer_of(e.imported)
        if low is not None and high is not None and high > low:
            out.append(
                f"{e}: layer {LAYERS[low][0]!r} imports layer {LAYERS[high][0]!r}, which is "
                "above it"
            )
    return out


@pytest.fixture(scope="module")
def edges() -> list[Edge]:
    return import_edges(package_sources())


def test_no_import_cycle(edges):
    cycles = find_cycles(edges)
    text = [" -> ".join([c[0].importer, *(e.imported for e in c)]) for c in cycles]
    detail = ["\n".join(f"    {e}" for e in c) for c in cycles]
    assert not cycles, "import cycle(s):\n" + "\n".join(
        f"  {t}\n{d}" for t, d in zip(text, detail, strict=True)
    )


def test_every_module_has_a_layer():
    missing = [m for m in package_sources() if layer_of(m) is None]
    assert not missing, f"modules in no layer (add them to LAYERS in {__file__}): {missing}"


def test_no_module_imports_a_higher_layer(edges):
    bad = layer_violations(edges)
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_no_module_imports_the_public_api_package(edges):
    # skiplab/__init__.py is for users: inside the package, import from the module that defines
    # the name (from skiplab.models import create_model), never from `skiplab` itself.
    bad = [str(e) for e in edges if e.imported == "skiplab"]
    assert not bad, "imports of the top-level package from inside it:\n" + "\n".join(bad)


def test_the_registry_imports_nothing_of_skiplab_and_models_never_train(edges):
    bad = [
        str(e)
        for e in edges
        if e.importer == "skiplab.registry"
        or (e.importer.startswith("skiplab.models") and e.imported.startswith("skiplab.train"))
    ]
    assert not bad, "\n".join(bad)


def test_the_checks_catch_a_bad_import():
    """The checks themselves: a cycle, a higher layer and a function-local relative import of
    one are reported with file, line, both modules and both layers."""
    sources = {
        "skiplab": ("skiplab/__init__.py", "from skiplab.models import create_model\n"),
        "skiplab.models": ("skiplab/models/__init__.py", "from . import resnet\n"),
        "skiplab.models.resnet": (
            "skiplab/models/resnet.py",
            "from skiplab.registry import register_model\n"
            "def f():\n    from ..train import trainer\n",
        ),
        "skiplab.registry": ("skiplab/registry.py", "import skiplab.models.resnet\n"),
        "skiplab.train": ("skiplab/train/__init__.py", ""),
        "skiplab.train.trainer": ("skiplab/train/trainer.py", ""),
    }
    found = import_edges(sources)
    local = Edge("skiplab.models.resnet", "skiplab.train.trainer", "skiplab/models/resnet.py:3")
    assert local in found
    cycles = [[e.importer for e in c] for c in find_cycles(found)]
    assert ["skiplab.models.resnet", "skiplab.registry"] in cycles
    bad = layer_violations(found)
    assert (
        "skiplab/registry.py:1: skiplab.registry imports skiplab.models.resnet: layer 'base' "
        "imports layer 'models', which is above it"
    ) in bad
    assert (
        "skiplab/registry.py:1: skiplab.registry imports skiplab.models (its package __init__): "
        "layer 'base' imports layer 'models', which is above it"
    ) in bad
    assert any(line.startswith("skiplab/models/resnet.py:3: ") for line in bad)


def test_the_registry_is_full_whatever_is_imported_first():
    # A fresh interpreter that imports only the registry sees every family: importing any
    # skiplab module runs skiplab/__init__.py, which imports skiplab.models.
    code = (
        "import skiplab.registry as r\n"
        "print(' '.join(sorted({r.get_model_entry(n).family for n in r.list_models()})))"
    )
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    families = sorted({skiplab.get_model_entry(n).family for n in skiplab.list_models()})
    assert out.stdout.split() == families
