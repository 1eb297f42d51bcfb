"""The package's import graph: no cycle, and every import goes to the same layer or a lower one.

Imports are read with ``ast`` from every .py file of woollylib, at any depth (function-local ones
included), relative ones resolved; ``from X import name`` counts as an import of ``X.name`` when
that is a module, else of ``X``. LAYERS below is the one table of the layer order (README,
"Architecture").
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import woollylib

ROOT = Path(woollylib.__file__).resolve().parent
PACKAGE = ROOT.name

# bottom to top; a module may import from its own layer and the ones above it in this list
LAYERS = (
    ("woollylib", "woollylib._version", "woollylib._compat", "woollylib.models", "woollylib.device", "woollylib.errors",
     "woollylib._checks", "woollylib.precision", "woollylib.compile", "woollylib.distributed"),                                        # 1 registry, devices, errors, checks
    ("woollylib.preloading", "woollylib.bp"),                       # 2 data, the engine
    ("woollylib.scheduler", "woollylib.utils.metrics"),             # 3 schedules, LR range test; metrics (bp, data)
    ("woollylib.run", "woollylib.config"),                          # 4 run folder, grouped settings
    ("woollylib.training", "woollylib.hooks", "woollylib.resume"),  # 5 the trainer, its hooks, resume
    ("woollylib.utils",),                                           # 6 explain, metrics, figures
    ("woollylib.recipe",),                                          # 6b a run's recipe: build, train, rebuild
    ("woollylib.report", "woollylib.experiments", "woollylib.main", "woollylib.course", "woollylib.cli",
     "woollylib.predict", "woollylib.export", "woollylib.app", "woollylib.__main__",  # 7 user surfaces
     "woollylib.utils.compare"),                                    #   sweeps; old path of experiments.optimizers
)


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported woollylib module
    where: str   # file:line of the import statement

    def __str__(self) -> str:
        return f"{self.where}: {self.source} imports {self.target}"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def _resolve(module: str, is_package: bool, node) -> list[str]:
    """Candidate targets of one import statement, most specific first for each name."""
    if isinstance(node, ast.Import):
        return [[alias.name] for alias in node.names]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        origin = ".".join(base + ([node.module] if node.module else []))
    else:
        origin = node.module or ""
    return [[f"{origin}.{alias.name}", origin] for alias in node.names]


def _imports() -> list[Import]:
    mods = _modules()
    found = []
    for module, path in sorted(mods.items()):
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for candidates in _resolve(module, is_package, node):
                for target in candidates:
                    while target and target not in mods:
                        target = target.rpartition(".")[0]
                    if target:
                        break
                if target and target != module and target.split(".")[0] == PACKAGE:
                    where = f"{path.relative_to(ROOT.parent)}:{node.lineno}"
                    found.append(Import(module, target, where))
    return list(dict.fromkeys(found))  # one entry per statement and target


def _layer(module: str) -> int | None:
    best, layer = "", None
    for number, prefixes in enumerate(LAYERS, start=1):
        for prefix in prefixes:
            inside = module == prefix or (prefix != PACKAGE and module.startswith(prefix + "."))
            if inside and len(prefix) > len(best):
                best, layer = prefix, number
    return layer


def _cycles(edges: dict[str, list[Import]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for start in edges:  # noqa: PLC0206 (the keys are the nodes; values are read lazily below)
        if start in index:
            continue
        work = [(start, iter(edges[start]))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                target = child.target
                if target not in index:
                    index[target] = low[target] = counter[0]
                    counter[0] += 1
                    stack.append(target)
                    on.add(target)
                    work.append((target, iter(edges.get(target, []))))
                elif target in on:
                    low[node] = min(low[node], index[target])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    return _imports()


def test_the_walk_sees_function_local_and_relative_imports(imports):
    found = {(i.source, i.target) for i in imports}
    assert ("woollylib.bp.engine", "woollylib.bp.losses") in found  # from . import losses
    assert ("woollylib.bp.engine", "woollylib.errors") in found     # from ..errors import ...
    assert ("woollylib.main", "woollylib.preloading") in found      # inside download_data


def test_no_import_cycle(imports):
    edges: dict[str, list[Import]] = {}
    for imp in imports:
        edges.setdefault(imp.source, []).append(imp)
    cycles = _cycles(edges)
    lines = []
    for members in cycles:
        inside = set(members)
        lines.append(" <-> ".join(members) + ":")
        lines += [f"    {imp}" for imp in imports if imp.source in inside and imp.target in inside]
    assert not cycles, "import cycles (break each by moving the shared code down a layer):\n" + "\n".join(lines)


def test_every_module_has_a_layer():
    missing = sorted(m for m in _modules() if _layer(m) is None)
    assert not missing, f"modules without a layer: {missing}; add them to LAYERS in {Path(__file__).name}"


def test_imports_go_down_the_layers(imports):
    upward = [f"{imp} (layer {_layer(imp.target)}, above layer {_layer(imp.source)})"
              for imp in imports
              if _layer(imp.source) is not None and _layer(imp.target) is not None
              and _layer(imp.target) > _layer(imp.source)]
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)
