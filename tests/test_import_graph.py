"""The package's import graph points down: no cycle, no upward import, no hidden local import.

The graph is read from the source with `ast` (nothing is imported): one node per module of
`jaxformer/`, one edge per `import` / `from ... import` that names a jaxformer module (or a name
in a package's `__init__`, which is an edge to that package). Three rules, each a specification:

(a) no cycle among jaxformer modules;
(b) no edge from a module to a module on a higher floor (`FLOORS`, from the design map);
(c) no import inside a function or class body, except of an optional dependency (`OPTIONAL_DEPS`):
    jaxformer modules and required dependencies are imported at the top of the module, so the
    graph above is the whole truth and a missing package fails at import, not halfway through a run.

The checker functions are tested on a small synthetic graph first, so a broken checker cannot pass.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "jaxformer"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

# Floors, lowest first; a module may import its own floor or any lower one (never a cycle).
# The longest matching prefix decides a module's floor. Mirrors /work/shared/DESIGN.md "Floors".
FLOORS: tuple[tuple[str, ...], ...] = (
    # 0: the ground floor: typed configs, errors, suggest(), safe writing of user-named outputs;
    # imports nothing else from jaxformer.
    ("jaxformer.errors", "jaxformer.config", "jaxformer.outputs"),
    # 1: fixed facts of each architecture and the presets built from them (configs only).
    ("jaxformer.architectures", "jaxformer.presets"),
    # 2: layers.
    ("jaxformer.layers",),
    # 3: the three model families, heads, embeddings, the scanned stack.
    ("jaxformer.models", "jaxformer.nnx_bridge"),
    # 4: data sources, tokenizers, batching.
    ("jaxformer.data",),
    # 5: experiment files -> typed `Experiment`. It needs presets (floor 1) and `DataConfig`
    # (floor 4) and is used by train/, inference and the CLI, so it sits right above data and
    # below sharding: building a config never needs the mesh, the train state or a step.
    ("jaxformer.experiment",),
    # 6: meshes and shardings; multi-host start-up.
    ("jaxformer.sharding", "jaxformer.distributed"),
    # 7: decoding (cache, greedy/sampling, beam, metrics). DESIGN.md lists it after train/, but it
    # needs only models and configs while train/ decodes its evaluation samples through it
    # (train/samples.py), so it sits below train: the code's edge decides, and it points down.
    ("jaxformer.decoding",),
    # 8: training.
    ("jaxformer.train",),
    # 9: Hugging Face interop.
    ("jaxformer.hf",),
    # 10: running a workdir or a checkpoint.
    ("jaxformer.inference", "jaxformer.demo", "jaxformer.drafting", "jaxformer.encoder_tasks"),
    # 11: the thin command line; the package's own `__init__` sits with it (it may re-export anything).
    ("jaxformer.cli", "jaxformer"),
)

# Imported only inside the functions that need them, so a user without them can still run
# everything else. Anything else imported inside a function is a finding.
OPTIONAL_DEPS = frozenset(
    {
        "tensorflow_datasets",  # [tfds] extra
        "tensorflow",
        "datasets",  # [hf] extra
        "gradio",  # [demo] extra
        "gradio_client",
        "torch",  # tests / parity only
        "transformers",
        "peft",
        "qwix",
        "matplotlib",
    }
)

# Findings tolerated for now, each with the reason and who removes it (an entry must stay needed:
# test_local_import_allowlist_entries_are_still_needed fails on a stale one). Empty: nothing tolerated.
UPWARD_ALLOWLIST: frozenset[tuple[str, str]] = frozenset()
LOCAL_IMPORT_ALLOWLIST: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True)
class Import:
    importer: str  # module doing the import
    target: str  # imported module (a jaxformer module) or top-level package name (external)
    line: int
    local: bool  # inside a function or class body


def module_name(path: Path, root: Path) -> str:
    """jaxformer/data/sources.py -> jaxformer.data.sources; jaxformer/data/__init__.py -> jaxformer.data."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(name: str, modules: frozenset[str]) -> str | None:
    """The jaxformer module an imported dotted name lives in (itself or its nearest package)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _absolute(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(source: str, importer: str, is_package: bool, modules: frozenset[str]) -> list[Import]:
    """Every import in one module's source: jaxformer targets as modules, others as top-level names."""
    found: list[Import] = []

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(_target(alias.name, importer, child.lineno, local))
            elif isinstance(child, ast.ImportFrom):
                base = _absolute(child, importer, is_package)
                for alias in child.names:
                    # `from pkg import sub` names the module pkg.sub when it exists, else a name in pkg.
                    full = f"{base}.{alias.name}"
                    found.append(_target(full if full in modules else base, importer, child.lineno, local))
            visit(child, inner)

    def _target(name: str, who: str, line: int, local: bool) -> Import:
        inside = _resolve(name, modules) if name.split(".")[0] == importer.split(".")[0] else None
        return Import(who, inside or name.split(".")[0], line, local)

    visit(ast.parse(source), local=False)
    return found


def package_imports(root: Path = ROOT) -> list[Import]:
    paths = sorted(root.rglob("*.py"))
    modules = frozenset(module_name(p, root) for p in paths)
    found: list[Import] = []
    for path in paths:
        name = module_name(path, root)
        found += imports_of(path.read_text(), name, path.name == "__init__.py", modules)
    return found


def internal_edges(found: Iterable[Import]) -> dict[str, set[str]]:
    """importer -> modules of its own package it imports (a package importing its own name dropped)."""
    graph: dict[str, set[str]] = {}
    for imp in found:
        graph.setdefault(imp.importer, set())
        package = imp.importer.split(".")[0]
        if (imp.target == package or imp.target.startswith(package + ".")) and imp.target != imp.importer:
            graph[imp.importer].add(imp.target)
    return graph


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(cycles)


def floor_of(module: str, floors: tuple[tuple[str, ...], ...] = FLOORS) -> int:
    """The floor of the longest entry naming `module` or a package above it; the root package's own
    entry ("jaxformer": its `__init__`) names only itself, so a new module must be given a floor."""
    best, best_len = -1, -1
    for level, prefixes in enumerate(floors):
        for prefix in prefixes:
            inside = "." in prefix and module.startswith(prefix + ".")
            if (module == prefix or inside) and len(prefix) > best_len:
                best, best_len = level, len(prefix)
    if best < 0:
        raise AssertionError(f"{module} has no floor: add it to FLOORS in {Path(__file__).name}")
    return best


def upward_edges(
    graph: Mapping[str, Iterable[str]], floors: tuple[tuple[str, ...], ...] = FLOORS
) -> list[tuple[str, str]]:
    return sorted(
        (src, dst) for src, dsts in graph.items() for dst in dsts if floor_of(dst, floors) > floor_of(src, floors)
    )


def local_imports(
    found: Iterable[Import], optional: frozenset[str] = OPTIONAL_DEPS, allowed: frozenset[tuple[str, str]] = frozenset()
) -> list[Import]:
    """Imports inside a function or class body, except of optional dependencies or allowlisted pairs."""
    return sorted(
        (
            imp
            for imp in found
            if imp.local and imp.target not in optional and (imp.importer, imp.target) not in allowed
        ),
        key=lambda imp: (imp.importer, imp.line, imp.target),
    )


def local_import_findings(
    found: Iterable[Import], optional: frozenset[str] = OPTIONAL_DEPS, allowed: frozenset[tuple[str, str]] = frozenset()
) -> list[str]:
    return [
        f"{imp.importer}:{imp.line} imports {imp.target} inside a function"
        for imp in local_imports(found, optional, allowed)
    ]


# --- the checker, on a synthetic package -------------------------------------------------------

_TOY_FLOORS = (("toy.low",), ("toy.mid",), ("toy.high",))


def _toy(root: Path, files: dict[str, str]) -> list[Import]:
    for rel, text in files.items():
        path = root / "toy" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package_imports(root / "toy")


def test_checker_finds_a_cycle_an_upward_edge_and_a_local_import(tmp_path: Path) -> None:
    found = _toy(
        tmp_path,
        {
            "__init__.py": "",
            "low.py": "from toy import mid\n",  # upward, and closes the cycle low -> mid -> low
            "mid.py": "import toy.low\n\ndef f():\n    import numpy\n    import torch\n    from . import high\n",
            "high.py": "from toy.low import x\nfrom .mid import y\n",
        },
    )
    graph = internal_edges(found)
    assert graph["toy.mid"] == {"toy.low", "toy.high"}
    assert graph["toy.high"] == {"toy.low", "toy.mid"}  # relative import resolved
    assert find_cycles(graph) == [["toy.high", "toy.low", "toy.mid"]]
    assert upward_edges(graph, _TOY_FLOORS) == [("toy.low", "toy.mid"), ("toy.mid", "toy.high")]
    assert local_import_findings(found) == [
        "toy.mid:4 imports numpy inside a function",  # a required dependency: flagged
        "toy.mid:6 imports toy.high inside a function",  # a package module: flagged
    ]  # torch is optional: allowed


def test_every_module_needs_a_floor() -> None:
    assert floor_of("toy.mid.part", _TOY_FLOORS) == 1
    with pytest.raises(AssertionError, match=r"toy\.new has no floor"):
        floor_of("toy.new", (*_TOY_FLOORS, ("toy",)))
    assert floor_of("toy", (*_TOY_FLOORS, ("toy",))) == 3


def test_checker_passes_a_clean_downward_graph(tmp_path: Path) -> None:
    found = _toy(
        tmp_path,
        {
            "__init__.py": "",
            "low.py": "import numpy\n",
            "mid.py": "from toy import low\n",
            "high.py": "from toy import low, mid\n\ndef f():\n    import datasets\n",
        },
    )
    graph = internal_edges(found)
    assert find_cycles(graph) == []
    assert upward_edges(graph, _TOY_FLOORS) == []
    assert local_import_findings(found) == []


# --- the package --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jaxformer_imports() -> list[Import]:
    return package_imports()


def test_every_module_has_a_floor(jaxformer_imports: list[Import]) -> None:
    for module in internal_edges(jaxformer_imports):
        floor_of(module)


def test_jaxformer_has_no_import_cycle(jaxformer_imports: list[Import]) -> None:
    assert find_cycles(internal_edges(jaxformer_imports)) == []


def test_jaxformer_imports_point_down(jaxformer_imports: list[Import]) -> None:
    upward = [edge for edge in upward_edges(internal_edges(jaxformer_imports)) if edge not in UPWARD_ALLOWLIST]
    assert upward == [], "\n".join(f"{src} -> {dst}" for src, dst in upward)


def test_upward_allowlist_entries_are_still_needed(jaxformer_imports: list[Import]) -> None:
    assert set(upward_edges(internal_edges(jaxformer_imports))) >= UPWARD_ALLOWLIST


def test_jaxformer_has_no_function_local_import_but_optional_deps(jaxformer_imports: list[Import]) -> None:
    findings = local_import_findings(jaxformer_imports, allowed=LOCAL_IMPORT_ALLOWLIST)
    assert findings == [], "\n".join(findings)


def test_local_import_allowlist_entries_are_still_needed(jaxformer_imports: list[Import]) -> None:
    present = {(imp.importer, imp.target) for imp in local_imports(jaxformer_imports)}
    assert present >= LOCAL_IMPORT_ALLOWLIST
