"""Mandate's PEP 517 build backend: setuptools' own, asking for mypy only when the build compiles.

setup.py compiles the request path with mypyc, which ships inside mypy, so a compiled build
needs mypy, and exactly the release CI type-checks with (what mypy accepts is what mypyc
compiles). With MANDATE_COMPILE=0 nothing is compiled: pulling mypy into the build
environment there only costs time and ties a plain-Python install to a pin it never uses.
So `[build-system] requires` names setuptools alone, and the hooks below add mypy, the pin
from `[project.optional-dependencies] test`, only when the build will compile. Everything
else (building wheels, sdists and editable installs) is setuptools.build_meta unchanged.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from setuptools import build_meta as _setuptools
from setuptools.build_meta import (  # noqa: F401  the hooks this backend passes through unchanged
    build_editable,
    build_sdist,
    build_wheel,
    get_requires_for_build_sdist,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

PYPROJECT = Path("pyproject.toml")  # frontends call the hooks from the source tree's root (PEP 517)


def compiles() -> bool:
    """Whether setup.py will compile: the same test it makes (MANDATE_COMPILE unset means yes)."""
    return os.environ.get("MANDATE_COMPILE", "1") != "0"


def mypy_requirement(pyproject: Path = PYPROJECT) -> str:
    """The mypy pin of the test extra: one pin for the type check and the compiler, so the
    modules mypyc compiles are the ones CI type-checked with that same release."""
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    pins = [item for item in extras["test"] if item.replace(" ", "").startswith("mypy==")]
    if len(pins) != 1:
        raise RuntimeError(f"{pyproject}: [project.optional-dependencies] test must pin mypy exactly once (mypy==X.Y)")
    return pins[0]


def _compiler() -> list[str]:
    return [mypy_requirement()] if compiles() else []


def get_requires_for_build_wheel(config_settings: dict | None = None) -> list[str]:
    """setuptools' requirements, plus mypy when this wheel will hold compiled modules."""
    return _setuptools.get_requires_for_build_wheel(config_settings) + _compiler()


def get_requires_for_build_editable(config_settings: dict | None = None) -> list[str]:
    """As for a wheel: `pip install -e .` compiles beside the sources unless MANDATE_COMPILE=0."""
    return _setuptools.get_requires_for_build_editable(config_settings) + _compiler()
