"""The package's structure, checked: the core imports no harness, no import circle, few imports back up the
layers, and no file too long to read (docs/architecture.md draws the layers)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vlmeval_echosafe"
HARNESSES = ("vlmeval", "lmms_eval")

# Lower layers never need higher ones; an import from a lower layer to a higher one "runs back up".
LAYERS = {
    "paths": 0, "redact": 0, "memory": 0, "encoders": 0, "models": 0, "datasets": 0, "judges": 0, "metrics": 0,
    "core": 1,
    "defenses": 2, "echosafe": 2,
    "catalog": 3, "api": 3, "evaluation": 3,
    "report": 4, "compare": 4, "vlmevalkit": 4, "lmms": 4, "serve": 4, "launcher": 4, "console": 4, "__init__": 4,
}  # fmt: skip


def _module(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module(p) for p in PACKAGE.rglob("*.py")} if PACKAGE.is_dir() else set()


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at module level or inside functions, as absolute names: ``from X import Y``
    is module ``X.Y`` where that is a module of the package, else ``X``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module(path) if path.name == "__init__.py" else _module(path).rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            for alias in node.names:
                sub = f"{stem}.{alias.name}"
                out.add(sub if sub in MODULES else stem)
    return out


def _graph() -> dict[str, set[str]]:
    """Package module -> the package modules it imports."""
    files = {_module(p): p for p in PACKAGE.rglob("*.py")}
    return {mod: {t for t in _imports(path) if t in files and t != mod} for mod, path in files.items()}


def _top(mod: str) -> str:
    """The package's subpackage or top-level module that ``mod`` belongs to (``__init__`` for the package)."""
    return mod.split(".")[1] if "." in mod else "__init__"


def _layer(mod: str) -> int:
    return LAYERS[_top(mod)]


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(m for m in _graph() if _top(m) not in LAYERS)
    assert not unplaced, f"modules whose top-level name has no entry in LAYERS: {unplaced}"


def test_the_core_and_the_method_import_no_harness() -> None:
    offenders = [
        f"{_module(p)} imports {t}"
        for sub in ("core", "echosafe", "defenses", "memory", "encoders", "models", "serve")
        for p in (PACKAGE / sub).rglob("*.py")
        for t in _imports(p)
        if t.split(".")[0] in HARNESSES
    ]
    offenders += [f"api imports {t}" for t in _imports(PACKAGE / "api.py") if t.split(".")[0] in HARNESSES]
    assert not offenders


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_circle() -> None:
    assert _cycles(_graph()) == []


def test_a_circle_is_found() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def back_up() -> list[str]:
    return sorted(f"{m} -> {t}" for m, ts in _graph().items() for t in ts if _layer(t) > _layer(m))


def test_at_most_five_imports_run_back_up_the_layers() -> None:
    found = back_up()
    assert len(found) <= 5, "\n".join(found)


def test_no_file_of_the_package_is_over_400_lines_and_none_of_the_core_over_300() -> None:
    long = [
        f"{p.relative_to(PACKAGE)}: {n}" for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400
    ]
    core = [
        f"{p.relative_to(PACKAGE)}: {n}"
        for p in (PACKAGE / "core").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 300
    ]
    assert not long and not core, long + core


def test_the_api_runs_where_no_harness_can_be_imported() -> None:
    """`import vlmeval_echosafe.api` and building a row's catalog entry work with both harnesses blocked."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {HARNESSES!r}: raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import vlmeval_echosafe.api as api\n"
        "print(api.load_defense.__name__, len(api.row_names()))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
