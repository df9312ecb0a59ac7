"""Mandate: an Envoy ext_authz service that holds AI agents to their mission profiles."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

__version__ = "0.1.0"


def stale_compiled_modules(package: Path) -> list[str]:
    """Sources whose compiled module beside them was built from other text, or from unrecorded text.

    setup.py compiles the request path with mypyc and records each source's hash in
    `_compiled.json`. Python imports a compiled module before its source, so an edited checkout
    would go on running the old code without a word; for an authorizer that is a policy hole.
    """
    manifest = package / "_compiled.json"
    built: dict[str, str] = json.loads(manifest.read_text()) if manifest.exists() else {}
    stale = []
    for module in sorted(package.rglob("*.so")):
        source = module.with_name(module.name.split(".")[0] + ".py")
        name = source.relative_to(package.parent).as_posix()
        if source.exists() and built.get(name) != hashlib.sha256(source.read_bytes()).hexdigest():
            stale.append(name)
    return stale


if _stale := stale_compiled_modules(Path(__file__).parent):
    raise ImportError(
        f"{', '.join(_stale)} changed after it was compiled: run `pip install -e .` again to rebuild, "
        "or `MANDATE_COMPILE=0 pip install -e .` to run the sources uncompiled"
    )
