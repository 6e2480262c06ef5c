"""The package layers import only downward, counting imports inside functions, and no modules import
each other in a cycle. docs/architecture.md draws the same picture.

Every module of embg (and bench, which sits on top) is parsed, not imported: ``import x``, ``from x
import y`` (y as a submodule when it is one), relative imports and ``importlib.import_module("...")``
with a literal name all count, wherever they appear (module level, functions, TYPE_CHECKING blocks).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: lowest first; a package may import only packages of lower layers (and itself)
LAYERS: list[tuple[str, ...]] = [
    ("errors",),
    ("atomic", "registry", "cache_dir", "quiet"),
    ("bundle",),       # the bundle format: Artifact, Manifest, I/O names, integrity, buckets, digest
    ("textdata",),     # built-in and shipped text sets, as data
    ("model",),        # the checkpoint's spec, strict weights, tokenizer, the export graph
    ("quantize",),     # recipes, presets, grids, backends
    ("fixtures",),     # offline checkpoints in the real layout (snapped onto quantize's grids)
    ("checkpoint",),   # --model -> a loaded model (hub, directory or fixture)
    ("runtimes",),     # engines and the sentence-transformers reference
    ("parity",),       # the one parity path and its metrics
    ("export",),       # targets and the pipeline (checks parity of the written file)
    ("devices",),      # where a runtime executes
    ("validate",),     # embg-validate: measurement, gate, reports
    ("cli", "bench"),  # entry points
]
LAYER_OF = {package: index for index, group in enumerate(LAYERS) for package in group}


def module_sources(root: Path = ROOT) -> dict[str, str]:
    """{dotted module name: source} for embg/** and bench/**."""
    sources = {}
    for top in ("embg", "bench"):
        for path in sorted((root / top).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            sources[".".join(parts)] = path.read_text(encoding="utf-8")
    return sources


def package_of(module: str) -> str:
    """embg.validate.run -> validate; embg.errors -> errors; bench.report -> bench; embg -> embg."""
    parts = module.split(".")
    if parts[0] == "bench":
        return "bench"
    return parts[1] if len(parts) > 1 else "embg"


def imported_modules(module: str, source: str, known: set[str]) -> Iterator[tuple[str, int]]:
    """(imported embg/bench module, line) for every import in ``source``, at any depth."""
    is_package = any(name.startswith(module + ".") for name in known) or module in ("embg", "bench")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield from _resolve(alias.name, node.lineno, known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                child = f"{base}.{alias.name}"
                yield from _resolve(child if child in known else base, node.lineno, known)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            yield from _resolve(node.args[0].value, node.lineno, known)


def _resolve(name: str, line: int, known: set[str]) -> Iterator[tuple[str, int]]:
    """The longest known module that ``name`` names (``embg.bundle.Artifact`` -> ``embg.bundle``)."""
    parts = name.split(".")
    if parts[0] not in ("embg", "bench"):
        return
    while parts and ".".join(parts) not in known:
        parts.pop()
    if parts:
        yield ".".join(parts), line


def import_graph(sources: dict[str, str]) -> dict[str, dict[str, int]]:
    known = set(sources)
    return {module: {target: line for target, line in imported_modules(module, source, known) if target != module}
            for module, source in sources.items()}


def upward_imports(sources: dict[str, str]) -> list[str]:
    """Every import of a package from the same or a higher layer (other than itself), and every
    package missing from LAYERS."""
    problems = []
    for module, targets in import_graph(sources).items():
        mine = package_of(module)
        if mine == "embg":  # the top-level embg/__init__.py holds only the version
            problems += [f"embg/__init__.py imports {t}" for t in targets]
            continue
        for target, line in sorted(targets.items()):
            theirs = package_of(target)
            if theirs == mine:
                continue
            if mine not in LAYER_OF or theirs not in LAYER_OF:
                problems.append(f"{module}:{line} imports {target}: package {mine if mine not in LAYER_OF else theirs}"
                                " has no layer in tests/test_import_layers.py LAYERS")
            elif LAYER_OF[theirs] >= LAYER_OF[mine]:
                problems.append(f"{module}:{line} imports {target}: {mine} (layer {LAYER_OF[mine]}) may import "
                                f"only lower layers, {theirs} is layer {LAYER_OF[theirs]}")
    return problems


def import_cycles(sources: dict[str, str]) -> list[list[str]]:
    """Strongly connected groups of modules that import each other, directly or through others
    (a package cycle shows up here too: layering forbids it, and this names the modules)."""
    graph = {module: set(targets) for module, targets in import_graph(sources).items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:  # Tarjan, recursive: the graph has a few hundred modules
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


# ---------------------------------------------------------------- the tests


def test_every_package_imports_only_lower_layers():
    problems = upward_imports(module_sources())
    assert not problems, "upward imports (see docs/architecture.md):\n" + "\n".join(problems)


def test_no_modules_import_each_other():
    cycles = import_cycles(module_sources())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_layer_check_fails_on_an_upward_import_inside_a_function():
    sources = module_sources()
    assert not upward_imports(sources)  # control: the real tree is clean
    probe = dict(sources)
    probe["embg.bundle.probe"] = "def load():\n    from embg.validate.run import prepare\n    return prepare\n"
    problems = upward_imports(probe)
    assert len(problems) == 1 and problems[0].startswith("embg.bundle.probe:2 imports embg.validate.run"), problems
    relative = dict(sources)
    relative["embg.model.probe"] = "from ..runtimes import base\n"
    assert upward_imports(relative) == [
        "embg.model.probe:1 imports embg.runtimes.base: model (layer 4) may import only lower layers, runtimes is "
        "layer 8"]
    dynamic = dict(sources)
    dynamic["embg.parity.probe"] = "import importlib\nimportlib.import_module('embg.export.pipeline')\n"
    assert [p.split(":")[0] for p in upward_imports(dynamic)] == ["embg.parity.probe"]
    sideways = dict(sources)
    sideways["embg.registry"] = sources["embg.registry"] + "\nfrom embg import quiet\n"  # same layer: refused too
    assert any(p.startswith("embg.registry:") and "embg.quiet" in p for p in upward_imports(sideways))


def test_the_cycle_check_fails_on_two_modules_that_import_each_other():
    sources = module_sources()
    probe = dict(sources)
    probe["embg.validate.probe_a"] = "def f():\n    from embg.validate import probe_b\n"
    probe["embg.validate.probe_b"] = "from embg.validate.probe_a import f\n"
    assert ["embg.validate.probe_a", "embg.validate.probe_b"] in import_cycles(probe)
