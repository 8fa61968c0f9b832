"""The package picture of docs/architecture.md, held against the code: every import between packages of
lib/ goes down the layers (no circle, no back arrow), only lib/ui imports streamlit, only
lib/queue/store.py writes post_queue, and lib/ and worker/ import at the top of a file (a lazy import says why)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# lowest first: a package may import the ones before it, never one after it
LAYERS = ("lib.core", "lib.alerts", "lib.activity", "lib.instagram", "lib.queue", "lib.analytics", "lib.health",
          "lib.notify", "lib.ui")
OURS = ("lib", "worker", "sandbox", "bench", "pages")


def _modules(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py"))


def _package(module: str) -> str | None:
    return next((p for p in LAYERS if module == p or module.startswith(p + ".")), None)


def _imports(path: Path) -> list[tuple[ast.stmt, str, bool]]:
    """(statement, imported module, inside a function) for every import in the file."""
    found: list[tuple[ast.stmt, str, bool]] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.extend((child, f"{child.module}.{a.name}" if _package(f"{child.module}.{a.name}") else child.module,
                              nested) for a in child.names)
            elif isinstance(child, ast.Import):
                found.extend((child, a.name, nested) for a in child.names)
            visit(child, nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(ast.parse(path.read_text()), False)
    return found


def _name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def test_every_lib_module_belongs_to_a_layer():
    loose = [_name(p) for p in _modules("lib") if _package(_name(p)) is None]
    assert loose == ["lib", "lib.db"], loose  # the package itself, and `python -m lib.db`


@pytest.mark.parametrize("path", _modules("lib"), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_go_down_the_layers(path):
    mine = _package(_name(path))
    for stmt, module, _ in _imports(path):
        theirs = _package(module)
        if mine is None or theirs is None:
            assert module.split(".")[0] not in ("worker", "sandbox", "bench", "pages"), (path, stmt.lineno, module)
            continue
        assert LAYERS.index(theirs) <= LAYERS.index(mine), f"{path}:{stmt.lineno}: {mine} imports {module}"


@pytest.mark.parametrize("path", _modules("lib", "worker"), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_are_at_the_top(path):
    """Except a heavy or optional import that a process should not pay for at start (pandas, pyarrow,
    Apprise, uvicorn), which says so: `# lazy: <why>` on its line or on the comment or import lines
    right above it."""
    lines = path.read_text().splitlines()

    def says_why(stmt: ast.stmt) -> bool:
        i = stmt.end_lineno - 1
        while i >= 0:
            line = lines[i].strip()
            if "# lazy: " in line or line.startswith("# lazy: "):
                return True
            if not line.startswith(("import ", "from ", "#")):
                return False
            i -= 1
        return False

    nested = [(stmt.lineno, module) for stmt, module, inside in _imports(path) if inside and not says_why(stmt)]
    assert nested == [], f"{path}: function-local imports without a reason {nested}"


def test_the_worker_starts_without_pandas():
    """The worker and the API import no pandas at start (~1 s and ~80 MiB per process): only a digest,
    an export or an anomaly pass loads it."""
    import subprocess
    import sys

    code = "import sys, worker.cli, worker.api; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_only_lib_ui_imports_streamlit():
    outside = [(str(p), stmt.lineno) for p in _modules("lib", "worker") if "lib/ui/" not in str(p)
               for stmt, module, _ in _imports(p) if module.split(".")[0] == "streamlit"]
    assert outside == []


def test_post_queue_is_written_by_the_store_only():
    """Every INSERT/UPDATE/DELETE naming post_queue (by any alias) sits in lib/queue/store.py."""
    writers = set()
    for path in _modules("lib", "worker", "pages"):
        tree = ast.parse(path.read_text())
        aliases = {"post_queue"} | {a.asname for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                                    for a in n.names if a.name == "post_queue" and a.asname}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("insert", "update", "delete") and node.args
                    and isinstance(node.args[0], ast.Name) and node.args[0].id in aliases):
                writers.add(str(path.relative_to(ROOT)))
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                  and node.func.id in ("insert_ignore", "upsert", "dialect_insert") and len(node.args) > 1
                  and isinstance(node.args[1], ast.Name) and node.args[1].id in aliases):
                writers.add(str(path.relative_to(ROOT)))
    assert writers == {"lib/queue/store.py"}, writers
