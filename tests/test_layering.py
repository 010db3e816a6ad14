"""Dependencies point one way (docs/architecture.md, "The layering rule"): api → storage (and the
RL engine's catalogues, and analytics for its read-only API), actors → storage + RL engine, the RL
engine → nothing of ours, analytics → snapshots (and storage, to rebuild them) and the engine's
statistics only.
Also: no import cycle inside a package, and importing any module connects to nothing and reads no
settings."""

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> the first-party packages it may import
ALLOWED = {
    "storage": {"storage"},
    # actors.rl for its statistics only (actors/rl/stats.py, numpy and scipy): one library computes
    # every score, so a report and the hub agree by construction.
    "analytics": {"analytics", "storage", "actors.rl"},
    "actors.rl": {"actors.rl"},
    "actors": {"actors", "actors.rl", "storage", "analytics"},
    "api": {"api", "storage", "actors.rl", "analytics"},
}
# The CLI and the uvicorn factory compose every part; that is their job.
COMPOSITION_ROOTS = {"api/cli.py", "api/gateway.py"}
FIRST_PARTY = ("api", "actors", "analytics", "storage")


def _package_of(path: Path) -> str:
    rel = path.relative_to(ROOT).as_posix()
    return "actors.rl" if rel.startswith("actors/rl/") else rel.split("/")[0]


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def _module_name(path: Path) -> str:
    name = path.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".")
    return name.removesuffix(".__init__")


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _run_at_import(statements) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module is imported: not those inside functions, nor
    those under ``if TYPE_CHECKING:``, which only serve annotations."""
    for node in statements:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _run_at_import(node.orelse)
        elif not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            children = ast.iter_child_nodes(node)  # the bodies of if, try, with, class, ...
            yield from _run_at_import(c for c in children if isinstance(c, ast.stmt | ast.excepthandler))


def _module_level_imports(path: Path, modules: set[str]) -> set[str]:
    """The modules of ``modules`` that importing ``path`` imports; ``from a import b`` imports the
    module ``a.b`` when there is one."""
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in _run_at_import(ast.parse(path.read_text()).body):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
            continue
        base = node.module or ""
        if node.level:
            parent = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*parent, *([node.module] if node.module else [])])
        found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
    return (found & modules) - {here}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return cycles


def _first_party(module: str) -> str | None:
    if module.startswith("actors.rl"):
        return "actors.rl"
    top = module.split(".")[0]
    return top if top in FIRST_PARTY else None


def test_dependencies_point_one_way():
    violations = []
    for package in FIRST_PARTY:
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            if rel in COMPOSITION_ROOTS or "/migrations/" in rel:
                continue
            allowed = ALLOWED[_package_of(path)]
            for module in _imports(path):
                target = _first_party(module)
                if target is not None and target not in allowed:
                    violations.append(f"{rel} imports {module}")
    assert violations == []


@pytest.mark.parametrize("package", FIRST_PARTY)
def test_no_import_cycle_inside_a_package(package):
    """Counting the imports that run when a module is imported (not those inside functions, nor under
    ``if TYPE_CHECKING``): in a cycle, whether an import works depends on which module came first."""
    paths = [p for p in (ROOT / package).rglob("*.py") if "/migrations/" not in p.as_posix()]
    modules = {_module_name(p) for p in paths}
    graph = {_module_name(p): _module_level_imports(p, modules) for p in paths}
    assert _cycles(graph) == []


def test_analytics_takes_only_the_statistics_from_the_engine():
    violations = []
    for path in (ROOT / "analytics").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "actors.rl":
                names = {a.name for a in node.names} - {"stats"}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("actors.rl."):
                names = set() if node.module == "actors.rl.stats" else {node.module}
            elif isinstance(node, ast.Import):
                names = {a.name for a in node.names if a.name.startswith("actors.rl") and a.name != "actors.rl.stats"}
            else:
                continue
            violations += [f"{path.relative_to(ROOT)} imports {name}" for name in sorted(names)]
    assert violations == []


def test_importing_everything_connects_to_nothing(tmp_path):
    """With every service URL pointing at a closed port, importing all modules still works."""
    modules = []
    for package in FIRST_PARTY:
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("").as_posix()
            if rel.endswith("__init__") or "/migrations/" in rel or rel == "actors/worker":
                continue
            modules.append(rel.replace("/", "."))
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\nprint('ok')"
    env = {"PATH": "/usr/bin:/bin", "RESIMHUB_DATABASE_URL": "postgresql+psycopg2://nobody@127.0.0.1:1/x",
           "RESIMHUB_BROKER_URL": "amqp://nobody@127.0.0.1:1/", "RESIMHUB_REDIS_URL": "redis://127.0.0.1:1/0",
           "RESIMHUB_DATA_DIR": str(tmp_path / "never-created")}
    proc = subprocess.run([sys.executable, "-c", code, *modules], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (tmp_path / "never-created").exists()
