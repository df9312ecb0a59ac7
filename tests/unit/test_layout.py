"""The test tree's layout: what tests share lives in tests/harness/ (fixtures in the conftest.py
files), and the harness is imported one way only, `from tests.harness.<module> import …`.

So no file under tests/ imports a test module or a conftest.py: one imported by another runs
twice under two names (once as pytest loads it, once imported), with its fixtures and tests.
And none imports `harness.…` (nor relatively, nor with sys.path changed to allow it):
`harness.pki` beside `tests.harness.pki` is two copies of every class, so an `isinstance` or a
module-level registry silently disagrees. pytest imports every file under tests/ as
`tests.<folder>.<module>` (each folder is a package, the checkout is the root), so
`from tests.… import …` is the one spelling that works everywhere.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.harness.example_policies import REPO

TESTS = REPO / "tests"
FOLDERS = {path.name for path in TESTS.iterdir() if path.is_dir() and path.name != "__pycache__"}


def tree_files() -> list[Path]:
    """Every Python file under tests/."""
    return sorted(path for path in TESTS.rglob("*.py") if "__pycache__" not in path.parts)


def is_test_module(name: str) -> bool:
    """A module pytest collects or loads itself: test_*.py, *_test.py, conftest.py."""
    last = name.rpartition(".")[2]
    return last.startswith("test_") or last.endswith("_test") or last == "conftest"


def imported_names(node: ast.Import | ast.ImportFrom) -> list[str]:
    """Every module the statement may import: `from a.b import c` may be the module a.b.c."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    module = node.module or ""
    return [module, *(f"{module}.{alias.name}" for alias in node.names)]


def import_problem(node: ast.Import | ast.ImportFrom) -> str:
    """What is wrong with one import statement, or ""."""
    if isinstance(node, ast.ImportFrom) and node.level:
        return "a relative import; write `from tests.… import …`"
    for name in imported_names(node):
        if is_test_module(name):
            return f"imports {name}, which pytest loads itself; share it through tests/harness/"
        if name.partition(".")[0] in FOLDERS:
            return f"imports {name}; write tests.{name}"
    return ""


def layout_problems(source: str) -> list[str]:
    """What in `source` breaks the layout, one line each (empty: nothing)."""
    problems = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom) and (problem := import_problem(node)):
            problems.append(f"line {node.lineno}: {problem}")
        elif (
            isinstance(node, ast.Attribute)
            and node.attr == "path"
            and isinstance(node.value, ast.Name)
            and node.value.id == "sys"
        ):
            problems.append(f"line {node.lineno}: uses sys.path; pytest puts the checkout on it")
    return problems


def test_no_test_imports_another_test_module_or_the_harness_another_way() -> None:
    files = tree_files()
    assert Path(__file__).resolve() in files and len(files) > 50  # the scan sees the tree
    found = {
        path.relative_to(REPO).as_posix(): problems for path in files if (problems := layout_problems(path.read_text()))
    }
    assert found == {}


def test_every_folder_of_the_tests_is_a_package() -> None:
    """So pytest names every module from the checkout, `tests.unit.test_x`, `tests.e2e.conftest`:
    without an `__init__.py`, a folder's modules are top-level (`test_x`) with the folder
    itself on sys.path."""
    folders = {path.parent for path in tree_files()}
    assert (
        sorted(folder.relative_to(REPO).as_posix() for folder in folders if not (folder / "__init__.py").exists()) == []
    )


@pytest.mark.parametrize(
    "source",
    [
        "from tests.unit.test_decide import tool",
        "from tests.unit import test_decide",
        "import tests.e2e.test_e2e_mcp",
        "from tests.conftest import REPO",
        "from harness.pki import MeshPKI",
        "import harness.policies",
        "from unit.test_decide import tool",
        "import test_decide",
        "from .pki import MeshPKI",
        "from . import pki",
        "def f():\n    from tests.unit.test_busy_ports import serve_again",
        "import sys\nsys.path.insert(0, 'tests')",
    ],
)
def test_the_scan_finds(source: str) -> None:
    assert layout_problems(source)


@pytest.mark.parametrize(
    "source",
    [
        "from tests.harness.pki import MeshPKI",
        "import tests.harness.policies",
        "from tests.harness import image_build",
        "from authz.check.request import AuthzInput",
        "from loadtest import hostile",
        "import sys\nsys.executable",
    ],
)
def test_the_scan_passes(source: str) -> None:
    assert layout_problems(source) == []
