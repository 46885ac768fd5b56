"""The layout's rules, checked on the source: sub-packages import only downward.

Reads every module's imports (module level, inside functions and under ``TYPE_CHECKING``:
an import for annotations is still a dependency, and a pair of modules importing each
other is a knot whatever the guard) with ``ast``; nothing is imported, so this runs in
milliseconds.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"search": "vitsearch.search", "spaces": "vitsearch.spaces", "evaluators": "vitsearch.evaluators"}
#: The three top-level folders: each may import only those below it.
LEVEL = {"vitsearch.spaces": 0, "vitsearch.evaluators": 1, "vitsearch.search": 2}


def _modules() -> dict[str, Path]:
    out = {}
    for folder, pkg in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([pkg, *parts])] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """vitsearch modules that ``name`` imports (a package import counts as its __init__)."""
    found = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in known and m != name}


MODULES = _modules()
GRAPH = {name: _imports(name, path, set(MODULES)) for name, path in MODULES.items()}


def test_no_two_modules_import_each_other():
    pairs = sorted({tuple(sorted((a, b))) for a, deps in GRAPH.items() for b in deps if a in GRAPH.get(b, ())})
    # A package's __init__ re-exporting its own modules is the one allowed pair.
    pairs = [(a, b) for a, b in pairs if not (b.startswith(a + ".") or a.startswith(b + "."))]
    assert pairs == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_top_level_folders_import_only_downward(name):
    own = LEVEL[".".join(name.split(".")[:2])]
    upward = [d for d in GRAPH[name] if LEVEL[".".join(d.split(".")[:2])] > own]
    assert upward == [], f"{name} imports {upward}"


def _node(name: str) -> str | None:
    """A module's node in the sub-package graph: its sub-package, or itself at a folder's root.

    The folders' own ``__init__`` modules only re-export, so they are left out.
    """
    parts = name.split(".")
    if len(parts) == 2:
        return None
    if len(parts) > 3 or (ROOT / parts[1] / parts[2]).is_dir():
        return ".".join(parts[:3])
    return name


def test_no_cycle_between_subpackages():
    """Within a top-level folder, sub-packages (and the folder's own modules) form no cycle."""
    edges = {}
    for a, deps in GRAPH.items():
        for b in deps:
            sa, sb = _node(a), _node(b)
            if sa and sb and sa != sb and sa.split(".")[:2] == sb.split(".")[:2]:
                edges.setdefault(sa, set()).add(sb)
    seen, stack, cycles = set(), [], []

    def visit(node):
        if node in stack:
            cycles.append(stack[stack.index(node):] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            visit(nxt)
        stack.pop()

    for node in sorted(edges):
        visit(node)
    assert cycles == []


def test_an_import_for_annotations_counts(tmp_path):
    """``paths`` importing ``study`` under TYPE_CHECKING while ``study`` imports ``paths`` is a pair."""
    module = tmp_path / "paths.py"
    module.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                      "    from vitsearch.search.study import StudySpec\n")
    assert _imports("vitsearch.search.paths", module, set(MODULES)) == {"vitsearch.search.study"}


#: where a comparison with the runtime name "eager" may stay, and why: the runtime registry itself, and the
#: profile-dir name (that layer must not import the runtimes; eager profiles keep their pre-runtime path)
EAGER_NAMED = ("vitsearch.evaluators.runtimes.", "vitsearch.evaluators.latency.predict.study")


def _eager_comparisons(path: Path) -> list[int]:
    """Lines of ``path`` that compare something with the string "eager" (==, !=, in)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(isinstance(o, ast.Constant) and o.value == "eager" for o in operands):
                lines.append(node.lineno)
    return lines


def test_eager_is_named_only_in_the_runtime_registry():
    """Eager is a runtime like the others: no code outside the registry branches on its name."""
    found = {name: _eager_comparisons(path) for name, path in MODULES.items() if not name.startswith(EAGER_NAMED)}
    assert {name: lines for name, lines in found.items() if lines} == {}


def test_an_eager_branch_is_found(tmp_path):
    module = tmp_path / "m.py"
    module.write_text('def f(rt):\n    return 1 if rt.name != "eager" else 2\n')
    assert _eager_comparisons(module) == [2]
