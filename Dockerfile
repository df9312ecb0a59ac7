# syntax=docker/dockerfile:1
# The image helm/mandate runs (helm/README.md, step 1):
#   docker build -t registry.example.com/platform/mandate:0.1.0 .
# Non-root (uid 10001, matching the chart's securityContext); writes nothing but /tmp.
#
# The same inputs build the same Mandate: the base image is pinned by digest, and every Python
# package, the build's (setuptools, and mypy for mypyc) as well as the runtime's, is installed
# from a lock file with hashes, as wheels only (CONTRIBUTING.md, "Lock files"). Where there is
# no Docker, .ci/image-check runs this file's pip steps and its checks in clean venvs.
#
# The base is python:3.11-slim, the interpreter the lock files are resolved for. The digest is
# the tag's multi-platform index (amd64 and arm64 alike). To verify it, or to move to the tag's
# newest build (Debian security fixes), print the tag's current digest, put it below, rebuild:
#   docker buildx imagetools inspect python:3.11-slim       # the "Digest:" line
#   crane digest python:3.11-slim                            # or: skopeo inspect docker://python:3.11-slim
ARG PYTHON=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

FROM ${PYTHON} AS build
# A C compiler for mypyc, which compiles the request path (setup.py). Debian's, as of the build:
# it compiles Mandate and stays in this stage; the image it builds has none.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements.lock requirements-build.lock ./
# What the image runs, into /install (--ignore-installed: every package, even one this stage's
# own Python has already, such as typing-extensions once the tools below are in).
RUN pip install --require-hashes --only-binary=:all: --ignore-installed --prefix=/install -r requirements.lock
# The build's tools, into this stage only.
RUN pip install --require-hashes --only-binary=:all: -r requirements-build.lock
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY build_backend ./build_backend
COPY authz ./authz
# Mandate, compiled with the tools above: no build isolation (it would fetch unpinned ones),
# no dependencies (the lock file's are in /install already).
RUN pip install --no-build-isolation --no-deps --prefix=/install .

FROM ${PYTHON}
COPY --from=build /install /usr/local
# The image works, or the build fails: every module the build recorded runs compiled (the build
# falls back to plain Python rather than fail, and that halves the throughput), the installed
# packages agree with each other, the CLI starts and loads the example policy set.
RUN ["python", "-c", "import importlib, json, pathlib, authz; built = json.loads(pathlib.Path(authz.__file__).with_name('_compiled.json').read_text()); slow = [p for p in built if not importlib.import_module(p[:-3].replace('/', '.')).__file__.endswith('.so')]; assert built and not slow, f'not compiled: {slow}'"]
RUN ["python", "-m", "pip", "check"]
RUN ["mandate", "--help"]
RUN --mount=type=bind,source=policies,target=/policies ["mandate", "validate", "/policies"]
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin mandate
USER 10001:10001
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
EXPOSE 9191 9090
ENTRYPOINT ["mandate"]
CMD ["serve", "--policies", "/etc/mandate/policies"]
