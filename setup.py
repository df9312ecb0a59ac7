"""Compile the request path to C with mypyc; everything else is declared in pyproject.toml.

Compiled, the modules a Check runs through decide in about half the time (BENCHMARKS.md). The
sources stay the truth: they are type-checked and compiled as they are, and with
MANDATE_COMPILE=0, or where there is no C compiler or no Python headers, the same package
installs as plain Python (`mandate serve` says which in its first log line). Each build writes
`authz/_compiled.json`, the hash of every source it compiled, so that `import authz` refuses a
compiled module whose source has changed since (see authz/__init__.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tomllib
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

# The steps of a Check, in the order a request meets them ([tool.mandate] in pyproject.toml).
REQUEST_PATH: list[str] = tomllib.loads(Path("pyproject.toml").read_text())["tool"]["mandate"]["compiled"]
MANIFEST = "authz/_compiled.json"


class BuildWithManifest(build_ext):
    """build_ext that, once the modules are built, records which sources they were built from;
    when they cannot be built here, it leaves none of them behind and the sources run."""

    def run(self) -> None:
        root = Path(".") if self.inplace else Path(self.build_lib)
        try:
            super().run()
        except (CCompilerError, ExecError, PlatformError) as exc:
            print(f"warning: cannot compile the request path ({exc}); installing it uncompiled", file=sys.stderr)
            _remove_built(root)
            return
        manifest = root / MANIFEST
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json.dumps({path: _digest(path) for path in REQUEST_PATH}, indent=1) + "\n")


def _remove_built(root: Path) -> None:
    """Take away compiled modules and the manifest under `root`: a half-built set would not import."""
    for path in REQUEST_PATH:
        for built in (root / path).parent.glob(Path(path).stem + ".*.so"):
            built.unlink()
    for group in root.glob("authz_compiled__mypyc.*.so"):
        group.unlink()
    (root / MANIFEST).unlink(missing_ok=True)


def _digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def ext_modules() -> list:
    """What to compile: nothing for metadata or an sdist (no C needed for those), nothing with
    MANDATE_COMPILE=0, else the request path through mypyc (type-checked first, by mypyc itself)."""
    if sys.argv[1:2] in (["egg_info"], ["dist_info"], ["sdist"]):
        return []  # pip asking for requirements or metadata, or a source archive: no need to type-check and generate C
    if os.environ.get("MANDATE_COMPILE", "1") == "0":
        _remove_built(Path("."))  # an editable install keeps its earlier build beside the sources: it would run
        return []
    try:
        from mypyc.build import mypycify
    except ImportError as exc:  # only without build isolation: build_backend/mandate_build.py asks for mypy otherwise
        raise SystemExit(
            f"setup.py: compiling the request path needs mypyc ({exc}): install the mypy pinned in pyproject.toml's "
            "test extra into the build environment, or build with MANDATE_COMPILE=0 to install it uncompiled"
        ) from exc
    return mypycify(REQUEST_PATH, opt_level="3", debug_level="0", group_name="authz_compiled")


setup(ext_modules=ext_modules(), cmdclass={"build_ext": BuildWithManifest})
