"""Imports point down the layers and never form a cycle (issue 13).

Walks every module of `c2f_exp` with `ast` (module-level and function-level imports alike: a
lazy import is still a dependency) and checks each edge against the layer table below. A module
may import its own layer or lower ones; a cycle fails even within one layer. The edge from a
module to its own parent package (`c2f_exp.coarse.stage` -> `c2f_exp.stages`) is implicit in
Python and not checked.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "c2f_exp"

# layer -> module name prefixes (longest prefix wins); higher layers may import lower ones.
LAYERS: dict[int, tuple[str, ...]] = {
    0: ("c2f_exp", "c2f_exp.core"),  # the package __init__ and the plumbing every stage uses
    1: (  # leaves on the plumbing: the embedded world; tables and plots of finished runs
        "c2f_exp.tinyworld",
        "c2f_exp.analysis",
    ),
    # each stage's parts (math, models, schemas), and the data-source seam they ask
    # (sources.py reads reward.preferences)
    2: (
        "c2f_exp.prepare",
        "c2f_exp.reward",
        "c2f_exp.coarse",
        "c2f_exp.merge",
        "c2f_exp.evaluation",
        "c2f_exp.sources",
    ),
    # the root schema (composes each part's group schema); what a stage is (protocol, context)
    3: ("c2f_exp.config", "c2f_exp.stages"),
    4: (  # orchestration: one stage module per stage package
        "c2f_exp.prepare.stage",
        "c2f_exp.reward.stage",
        "c2f_exp.coarse.stage",
        "c2f_exp.merge.stage",
        "c2f_exp.evaluation.stage",
    ),
    # job identity, sweep checks, error lines, starting ranks
    5: ("c2f_exp.sweeping", "c2f_exp.cli_errors", "c2f_exp.launch", "c2f_exp.plan"),
    6: ("c2f_exp.pipeline",),  # the stage registry and order, cache, manifest
    7: ("c2f_exp.__main__", "c2f_exp.compare", "c2f_exp.cache"),  # the CLI entry points
    # (plan.py: layer 5, beside launch.py)
}

# Upward edges tolerated for now (none: keep it empty; an entry needs a reason beside it).
ALLOWED_UPWARD: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    mods = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = p
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """Project modules `name` imports anywhere in its body (resolved to the deepest module)."""
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            # `from a import b`: the module a.b when b is one, else (a name in) a
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names
            ]
        else:
            continue
        for t in names:
            while t and t not in mods:
                t = t.rpartition(".")[0]
            if t:
                out.add(t)
    out.discard(name)
    return {t for t in out if not name.startswith(t + ".")}  # implicit parent-package edge


def _layer(name: str) -> int:
    """The layer of the longest LAYERS prefix of `name` (the bare package matches only itself)."""
    best = max(
        (
            (len(p), layer)
            for layer, ps in LAYERS.items()
            for p in ps
            if name == p or (p != "c2f_exp" and name.startswith(p + "."))
        ),
        default=None,
    )
    assert best is not None, f"{name} is in no layer: add it to LAYERS in tests/test_layers.py"
    return best[1]


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, mods) for name, path in mods.items()}


def test_every_module_has_a_layer():
    for name in _modules():
        _layer(name)


def test_imports_point_down():
    upward = sorted(
        f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})"
        for a, targets in _graph().items()
        for b in targets
        if _layer(b) > _layer(a) and (a, b) not in ALLOWED_UPWARD
    )
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_allow_list_is_not_stale():
    graph = _graph()
    stale = [edge for edge in ALLOWED_UPWARD if edge[1] not in graph.get(edge[0], set())]
    assert not stale, f"these upward imports are gone: remove them from ALLOWED_UPWARD: {stale}"


def test_no_import_cycles():
    graph = {a: {b for b in bs if (a, b) not in ALLOWED_UPWARD} for a, bs in _graph().items()}
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path) per strongly connected component with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    comps: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return comps


def test_the_checker_sees_cycles_and_upward_edges():
    """The checks above are not vacuous: they flag a planted cycle and an upward edge."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert _layer("c2f_exp.coarse.ppo") < _layer("c2f_exp.coarse.stage")
    with pytest.raises(AssertionError, match="in no layer"):
        _layer("c2f_exp.new_module")
    graph = _graph()
    assert "c2f_exp.core.layout" in graph["c2f_exp.prepare.stage"]  # resolution finds real edges
    assert "c2f_exp.evaluation.verdicts" in graph["c2f_exp.evaluation.gold_judge"]
