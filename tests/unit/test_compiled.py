"""The request path runs compiled (setup.py, mypyc), and never from a build older than its source."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import tomllib
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

from authz import stale_compiled_modules

ROOT = Path(__file__).resolve().parents[2]
COMPILED = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mandate"]["compiled"]
SUFFIX = EXTENSION_SUFFIXES[0]  # e.g. .cpython-311-x86_64-linux-gnu.so


def test_every_step_of_the_request_path_runs_as_installed() -> None:
    """Compiled, unless installed with MANDATE_COMPILE=0; never half of each."""
    interpreted = [
        path
        for path in COMPILED
        if importlib.import_module(path.removesuffix(".py").replace("/", ".")).__file__.endswith(".py")  # type: ignore[union-attr]
    ]
    assert interpreted == (COMPILED if os.environ.get("MANDATE_COMPILE") == "0" else [])


def package(tmp_path: Path, manifest: dict[str, str] | None) -> Path:
    """`pkg/` with one source, a compiled module beside it, and the manifest a build wrote."""
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "step.py").write_text("ANSWER = 1\n")
    (root / "sub" / f"step{SUFFIX}").write_bytes(b"\x7fELF")
    (root / "plain.py").write_text("ANSWER = 2\n")  # not compiled: never stale
    if manifest is not None:
        (root / "_compiled.json").write_text(json.dumps(manifest))
    return root


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_a_build_of_the_current_source_is_accepted(tmp_path: Path) -> None:
    assert stale_compiled_modules(package(tmp_path, {"pkg/sub/step.py": digest("ANSWER = 1\n")})) == []


def test_a_source_edited_after_the_build_is_refused(tmp_path: Path) -> None:
    root = package(tmp_path, {"pkg/sub/step.py": digest("ANSWER = 1\n")})
    (root / "sub" / "step.py").write_text("ANSWER = 3\n")
    assert stale_compiled_modules(root) == ["pkg/sub/step.py"]


def test_a_compiled_module_the_manifest_does_not_vouch_for_is_refused(tmp_path: Path) -> None:
    assert stale_compiled_modules(package(tmp_path, None)) == ["pkg/sub/step.py"]
    assert stale_compiled_modules(package(tmp_path / "other", {"pkg/plain.py": digest("ANSWER = 2\n")})) == [
        "pkg/sub/step.py"
    ]
