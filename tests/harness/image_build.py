"""The Dockerfile's steps, run where there is no Docker: `python -m tests.harness.image_build`.

A Dockerfile that no one builds breaks quietly: a lock file that misses a dependency, a file
that setup.py needs but no COPY brings (or .dockerignore keeps out), a compile that falls back
to plain Python. This reads the Dockerfile itself, so it cannot drift from it, and runs:

- the build stage's `pip install` steps, in a clean venv playing the build stage's Python,
  with `--prefix=/install` pointed at a second clean venv playing the image's Python;
- from a copy of the build context made by the Dockerfile's COPY lines and .dockerignore;
- the final stage's exec-form RUN steps (the image's own checks: compiled, `pip check`,
  `mandate --help`, `mandate validate` on the bind-mounted policies) in that second venv.

Not run: apt-get (the host needs gcc and the Python headers), useradd, and the base image
itself (the host's Python 3.11 stands in for python:3.11-slim). ENV lines are not applied,
so PIP_NO_CACHE_DIR is not either: pip's cache (~/.cache/pip) is reused, and after a first
run only PyPI's index pages are fetched (the network is still needed for those).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import venv
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PREFIX = "/install"  # the build stage installs here; the final stage copies it over /usr/local


@dataclass
class Stage:
    """One FROM ... of a Dockerfile: its name and its instructions, in order."""

    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (RUN, "the rest of the line")


@dataclass
class Run:
    """A RUN instruction: its --mount flags (target -> context source) and its command."""

    mounts: dict[str, str]
    argv: list[str]
    exec_form: bool


def logical_lines(text: str) -> list[str]:
    """Instructions with their backslash continuations joined, comments and blank lines dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    return lines


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """The global ARGs (with defaults) and the stages; enough of the syntax for this repo's file."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name))
        elif keyword == "ARG" and not stages:
            key, _, default = rest.partition("=")
            args[key.strip()] = default.strip()
        elif stages:
            stages[-1].instructions.append((keyword, rest.strip()))
    return args, stages


def parse_run(rest: str) -> Run:
    """A RUN's flags and command: exec form (a JSON list) or shell form (split as sh would)."""
    mounts: dict[str, str] = {}
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        rest = rest.lstrip()
        if flag.startswith("--mount="):
            options = dict(item.split("=", 1) for item in flag.removeprefix("--mount=").split(","))
            if options.get("type") != "bind":
                raise ValueError(f"unsupported mount {flag}")
            mounts[options["target"]] = options.get("source", ".")
    if rest.startswith("["):
        return Run(mounts, json.loads(rest), exec_form=True)
    return Run(mounts, shlex.split(rest), exec_form=False)


def dockerignore_patterns(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(negated, pattern) for each line: Docker's syntax as far as this repo's file uses it
    (`*`, `**`, `?`, a leading `!`, a trailing `/`); the last pattern that matches decides."""
    patterns = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        glob = line.removeprefix("!").strip("/")
        regex = ""
        for part in re.split(r"(\*\*/?|\*|\?)", glob):
            regex += {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part))
        patterns.append((negated, re.compile(regex + r"\Z")))
    return patterns


def ignored(patterns: list[tuple[bool, re.Pattern[str]]], path: str) -> bool:
    """Whether Docker leaves `path` (relative, with /) out of the context: a pattern matches a
    path when it matches the path itself or one of the directories above it."""
    parts = path.split("/")
    candidates = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    excluded = False
    for negated, pattern in patterns:
        if any(pattern.match(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


def copy_context(sources: list[str], destination: Path, patterns: list[tuple[bool, re.Pattern[str]]]) -> None:
    """Copy what the Dockerfile takes from the context, minus what .dockerignore leaves out.
    A source left out entirely is an error, as it is for `docker build`."""
    for source in sources:
        origin = REPO / source
        files = sorted(p for p in origin.rglob("*") if p.is_file()) if origin.is_dir() else [origin]
        kept = [p for p in files if p.exists() and not ignored(patterns, p.relative_to(REPO).as_posix())]
        if not kept:
            raise SystemExit(f"image-check: {source}: not in the build context (missing, or left out by .dockerignore)")
        for path in kept:
            target = destination / path.relative_to(REPO)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def context_sources(stages: list[Stage]) -> list[str]:
    """Every path a COPY (not --from another stage) or a RUN --mount=type=bind reads from the context."""
    sources: list[str] = []
    for stage in stages:
        for keyword, rest in stage.instructions:
            if keyword == "COPY" and not rest.startswith("--from="):
                sources.extend(shlex.split(rest)[:-1])
            elif keyword == "RUN":
                sources.extend(parse_run(rest).mounts.values())
    return sources


def step(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    """Run one step, echoing it and its time; its failure is the check's."""
    print("image-check: $", shlex.join(argv), flush=True)
    started = time.monotonic()
    result = subprocess.run(argv, cwd=cwd, env=env, check=False)
    print(f"image-check:   {time.monotonic() - started:.1f} s", flush=True)
    if result.returncode:
        raise SystemExit(f"image-check: failed ({result.returncode}): {shlex.join(argv)}")


def build_stage(stage: Stage, source: Path, build_python: Path, image_root: Path) -> None:
    """The build stage's `pip install` steps, with the build venv's pip and /install redirected
    to the image venv; everything else in the stage (apt-get) is the host's business."""
    for keyword, rest in stage.instructions:
        if keyword != "RUN":
            continue
        run = parse_run(rest)
        if run.argv[:2] != ["pip", "install"]:
            print(f"image-check: skipped (host's business): RUN {rest[:70]}", flush=True)
            continue
        argv = [str(build_python), "-m", *run.argv]
        argv = [f"--prefix={image_root}" if arg == f"--prefix={PREFIX}" else arg for arg in argv]
        step(argv, source)


def final_stage(stage: Stage, source: Path, image_root: Path) -> None:
    """The final stage's exec-form RUN steps (the image's checks) with the image venv's Python;
    `mandate` runs through that Python, since pip wrote the build venv's into its first line."""
    python = image_root / "bin" / "python"
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    for keyword, rest in stage.instructions:
        run = parse_run(rest) if keyword == "RUN" else None
        if run is None or not run.exec_form:
            if run is not None:
                print(f"image-check: skipped (image set-up): RUN {rest[:70]}", flush=True)
            continue
        program = {"python": [str(python)], "mandate": [str(python), str(image_root / "bin" / "mandate")]}
        if run.argv[0] not in program:
            raise SystemExit(f"image-check: no stand-in for {run.argv[0]!r} in RUN {rest}")
        mounted = {target: str(source / origin) for target, origin in run.mounts.items()}
        argv = program[run.argv[0]] + [mounted.get(arg, arg) for arg in run.argv[1:]]
        step(argv, Path(tempfile.gettempdir()), env)  # not the source tree: authz/ there is not what is installed


def check(work: Path, dockerfile: Path = REPO / "Dockerfile") -> None:
    """Build the image's Python in `work` as the Dockerfile would, then run its checks."""
    _, stages = parse_dockerfile(dockerfile.read_text())
    build, final = stages[0], stages[-1]
    source = work / "src"
    copy_context(context_sources(stages), source, dockerignore_patterns((REPO / ".dockerignore").read_text()))
    build_root, image_root = work / "build-python", work / "image-python"
    for root in (build_root, image_root):
        venv.EnvBuilder(with_pip=True, clear=True).create(root)
    build_stage(build, source, build_root / "bin" / "python", image_root)
    final_stage(final, source, image_root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="work in this directory and leave it (default: a temporary one)")
    options = parser.parse_args(argv)
    if sys.version_info[:2] != (3, 11):
        print(f"image-check: warning: the image runs Python 3.11, this is {sys.version.split()[0]}", file=sys.stderr)
    started = time.monotonic()
    if options.keep:
        options.keep.mkdir(parents=True, exist_ok=True)
        check(options.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="mandate-image-") as work:
            check(Path(work))
    print(f"image-check: ok, {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
