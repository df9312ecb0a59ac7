"""The admin API's checked-in stubs are what proto/ generates today (authz/admin/generate.py says
why they are checked in); regenerate with `python -m authz.admin.generate`."""

from __future__ import annotations

from pathlib import Path

from authz.admin.generate import PACKAGE, REPO, STUBS, generate


def test_the_checked_in_stubs_are_generated_from_the_proto(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(REPO)  # protoc reads proto/ relative to the root, as the generator does
    generated = generate(tmp_path)
    stale = [path.name for path in generated if path.read_bytes() != (REPO / PACKAGE / path.name).read_bytes()]
    assert stale == [], "run `python -m authz.admin.generate` and commit the stubs"
    assert sorted(path.name for path in generated) == sorted(STUBS)
