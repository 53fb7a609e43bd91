"""The shape of the code base: rrg_core's layers import only downwards and in no circle, no source file
is over 450 lines, and the store stays in a handful of modules.

Imports inside functions count too: a lazy import that closes a circle still ties the two modules.
Imports under ``if TYPE_CHECKING:`` do not (they never run), nor does the package's own façade,
``rrg_core/__init__.py``, whose lazy ``load_generator``/``load_pipeline`` sit above everything.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _modules() -> dict[str, Path]:
    found = {}
    for path in (ROOT / "rrg_core").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The rrg_core modules ``module`` imports anywhere in its body (``from pkg import submodule`` too)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            submodules = {f"{base}.{alias.name}" for alias in node.names} & modules.keys()
            # ``from pkg import submodule`` imports the submodule, not what pkg/__init__ re-exports
            targets.update(submodules if len(submodules) == len(node.names) else {base, *submodules})
    return {t for t in targets if t in modules and t != module and t != "rrg_core"}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circles() -> None:
    modules = _modules()
    graph = {m: _imports(m, p, modules) for m, p in modules.items()}
    assert not _cycles(graph), f"import circles: {_cycles(graph)}"


#: rrg_core's layers, lowest first: a module imports from its own layer or the ones below, never above.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "observations", "atomic_files", "review_result", "progress"),
    ("data",),
    ("labeler", "metrics", "checkpoints", "corrections", "store"),
    ("phantoms", "models"),
    (
        "evaluation",
        "image_dependence",
        "evaluation_tables",
        "baselines",
        "retrieval",
        "study_input",
        "disagreements",
        "support",
        "table_consistency",
    ),
    ("generators",),
    ("explain",),
    ("pipeline", "training_curves"),
)


def _layer(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else ""
    for number, names in enumerate(LAYERS):
        if top in names:
            return number
    raise AssertionError(f"{module} belongs to no layer: add its top-level name to LAYERS")


def test_no_import_runs_up_a_layer() -> None:
    modules = _modules()
    upward = {
        m: sorted(t for t in _imports(m, modules[m], modules) if _layer(t) > _layer(m))
        for m in modules
        if m != "rrg_core"
    }
    upward = {m: targets for m, targets in upward.items() if targets}
    assert not upward, f"imports running up a layer: {upward}"


def test_no_source_file_is_over_450_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): count
        for folder in ("rrg_core", "train", "ui", "tests", "benchmarks")
        for path in (ROOT / folder).rglob("*.py")
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > 450
    }
    assert not long, f"files over 450 lines: {long}"


def test_the_store_is_at_most_eight_modules() -> None:
    store = sorted(path.name for path in (ROOT / "rrg_core" / "store").glob("*.py"))
    assert len(store) <= 8, store


def test_phantoms_sit_above_data_and_labeler() -> None:
    modules = _modules()
    below = [m for m in modules if m.startswith(("rrg_core.data", "rrg_core.labeler"))]
    upward = {m: i for m in below if (i := {t for t in _imports(m, modules[m], modules) if "phantoms" in t})}
    assert not upward, f"imports of the phantoms from below them: {upward}"
