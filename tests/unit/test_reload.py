"""Live policy reload (SPEC §7) the way Kubernetes delivers it: a ConfigMap volume whose
files are symlinks through `..data`, which the kubelet swaps to a new timestamped directory
in one rename.

- a real `mandate serve` process sees a swap within 2 s, keeps the last good set when the
  new one is broken (and says so in its metrics and log, with file:line), reloads on SIGHUP;
- under concurrent gRPC Checks, every answer is the answer of one whole policy set, never of
  a mix of two (hypothesis drives the reload sequence, the request mix and the concurrency);
- a reload that reads the directory while the kubelet swaps it never goes live half old,
  half new.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import signal
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import orjson
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from authz.check.pipeline import Authorizer
from authz.policy.compiled import PolicySet
from authz.policy.compiler import compile_directory
from authz.serve.metrics import Metrics
from authz.serve.reload import PolicyWatcher
from authz.serve.service import MandateServer, ServeOptions
from tests.harness.example_policies import EXAMPLES, GITHUB_HOST, SUPPORT
from tests.harness.processes import MandateProcess, free_port, wait_until


class ConfigMapVolume:
    """A directory laid out as the kubelet lays out a ConfigMap volume, and updated as it
    updates one: write `..<timestamp>/`, point `..data_tmp` at it, rename it over `..data`
    (the one atomic step), fix up the top-level symlinks, delete the old generation."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._generation = itertools.count()

    def publish(self, files: dict[str, str]) -> None:
        generation = f"..2026_01_01_00_00_00.{next(self._generation):06d}"
        directory = self.root / generation
        directory.mkdir()
        for name, text in files.items():
            (directory / name).write_text(text)
        data = self.root / "..data"
        old = os.readlink(data) if data.is_symlink() else None
        os.symlink(generation, self.root / "..data_tmp")
        os.replace(self.root / "..data_tmp", data)
        for name in files:
            link = self.root / name
            if not link.is_symlink():
                os.symlink(f"..data/{name}", link)
        for entry in self.root.iterdir():
            if not entry.name.startswith(".") and entry.name not in files:
                entry.unlink()
        if old is not None:
            shutil.rmtree(self.root / old)


def example_files() -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted(EXAMPLES.glob("*.yaml"))}


READ_ONLY = "tools: [get_me, list_issues, get_issue]"
READ_WRITE = "tools: [get_me, list_issues, get_issue, create_issue]"


def with_tools(tools: str) -> dict[str, str]:
    files = example_files()
    assert READ_ONLY in files["agents.yaml"]
    files["agents.yaml"] = files["agents.yaml"].replace(READ_ONLY, tools)
    return files


def tool_call(tool: str, principal: str = SUPPORT, host: str = GITHUB_HOST) -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    request.attributes.source.principal = principal
    http = request.attributes.request.http
    http.method, http.path, http.host = "POST", "/mcp", host
    http.raw_body = orjson.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": {}}}
    )
    return request


def answer_bytes(response: bytes) -> tuple[str, ...]:
    return answer(external_auth_pb2.CheckResponse.FromString(response))


def answer(response: external_auth_pb2.CheckResponse) -> tuple[str, ...]:
    """What a decision says, without its per-request ids: allow with the rule that allowed
    it, or deny with status, reason and message (which names the server and the tool)."""
    if response.HasField("ok_response"):
        fields = response.dynamic_metadata.fields
        return ("allow", fields["profile"].string_value, fields["rule"].string_value)
    body = orjson.loads(response.denied_response.body)
    error = body["error"]
    return ("deny", str(response.denied_response.status.code), error["data"]["reason"], error["message"])


def counter(metrics: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


# --- a real `mandate serve` under a ConfigMap volume ------------------------------------------


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[MandateProcess, ConfigMapVolume, grpc.Channel]]:
    volume = ConfigMapVolume(tmp_path / "policies")
    volume.publish(with_tools(READ_ONLY))
    process = MandateProcess(volume.root, tmp_path / "run").start()
    channel = grpc.insecure_channel(f"127.0.0.1:{process.grpc_port}")
    yield process, volume, channel
    channel.close()
    process.stop()


def decide_over_grpc(channel: grpc.Channel, tool: str) -> tuple[str, ...]:
    return answer(external_auth_pb2_grpc.AuthorizationStub(channel).Check(tool_call(tool), timeout=5))


def test_a_configmap_swap_applies_within_two_seconds(serve) -> None:
    process, volume, channel = serve
    assert decide_over_grpc(channel, "create_issue")[:3] == ("deny", "403", "tool_not_allowed")
    for tools, expected in ((READ_WRITE, "allow"), (READ_ONLY, "deny"), (READ_WRITE, "allow")):
        volume.publish(with_tools(tools))
        swapped = time.monotonic()
        wait_until(
            lambda expected=expected: decide_over_grpc(channel, "create_issue")[0] == expected,
            2.0,
            f"create_issue -> {expected} after the swap",
        )
        assert time.monotonic() - swapped < 2.0
    metrics = process.metrics_text()
    assert counter(metrics, "mandate_policy_reloads_total", result="applied") == 3
    assert counter(metrics, "mandate_policy_errors") == 0


def test_a_broken_set_keeps_the_last_good_one_and_raises_the_metric(serve) -> None:
    process, volume, channel = serve
    volume.publish(with_tools(READ_WRITE))
    wait_until(lambda: decide_over_grpc(channel, "create_issue")[0] == "allow", 2.0, "the good set")
    broken = with_tools(READ_WRITE)
    dangling = broken["agents.yaml"].count("server: github")
    assert dangling >= 2
    broken["agents.yaml"] = broken["agents.yaml"].replace("server: github", "server: gitlab")  # every one now dangles
    volume.publish(broken)
    wait_until(
        lambda: counter(process.metrics_text(), "mandate_policy_reloads_total", result="rejected") == 1,
        2.0,
        "the rejection",
    )
    metrics = process.metrics_text()
    assert counter(metrics, "mandate_policy_errors") == dangling
    assert counter(metrics, "mandate_policy_reloads_total", result="applied") == 1
    # Still the last good set: create_issue allowed, everything else as before.
    assert decide_over_grpc(channel, "create_issue")[0] == "allow"
    assert decide_over_grpc(channel, "delete_repo")[:3] == ("deny", "403", "tool_not_allowed")
    # Every error in the log, with the file (as mounted) and the line.
    log = process.stderr_path.read_text()
    lines = [
        number for number, line in enumerate(broken["agents.yaml"].splitlines(), start=1) if "server: gitlab" in line
    ]
    assert len(lines) == dangling
    for number in lines:
        assert f"{volume.root / 'agents.yaml'}:{number}: 'gitlab' is not a Target" in log, number
    assert "policy reload rejected, keeping version" in log
    # Fixed: applied, and the error gauge back to zero.
    volume.publish(with_tools(READ_ONLY))
    wait_until(lambda: decide_over_grpc(channel, "create_issue")[0] == "deny", 2.0, "the fixed set")
    assert counter(process.metrics_text(), "mandate_policy_errors") == 0


def test_sighup_forces_a_reload(serve) -> None:
    process, _, _ = serve
    assert process.proc is not None
    before = counter(process.metrics_text(), "mandate_policy_reloads_total", result="applied")
    process.proc.send_signal(signal.SIGHUP)
    wait_until(
        lambda: counter(process.metrics_text(), "mandate_policy_reloads_total", result="applied") == before + 1,
        2.0,
        "the SIGHUP reload",
    )


# --- never a mix of two sets --------------------------------------------------------------------

# N policy sets over the same workloads, each split over two files as a team would write
# them. In set i the server `srv<i>` (one principal, one host for all) is the MCP target and
# the caller may call only `tool<i>` on it. A request for tool<j> therefore gets, under set i,
# "allow by profile caller<i>" if i == j, else "deny: tool<j> on srv<i>". A decision that
# took the target from one set and the caller's rules from another would be a different
# answer ("no rule for server srv<i>"): test_the_answers_tell_a_mix_apart shows it is.
SETS = 3
CALLER = "spiffe://cluster.local/ns/agents/sa/caller"
SERVER = "spiffe://cluster.local/ns/tools/sa/server"
SERVER_HOST = "server.tools.svc.cluster.local"


def policy_files(index: int) -> dict[str, str]:
    return {
        "targets.yaml": textwrap.dedent(f"""\
            apiVersion: mandate.dev/v1alpha1
            kind: Target
            metadata: {{name: srv{index}}}
            spec: {{kind: mcp, principals: ["{SERVER}"], hosts: [{SERVER_HOST}]}}
            """),
        "profiles.yaml": textwrap.dedent(f"""\
            apiVersion: mandate.dev/v1alpha1
            kind: MissionProfile
            metadata: {{name: caller{index}}}
            spec:
              principals: ["{CALLER}"]
              mission: set {index}
              mcp: [{{server: srv{index}, tools: [tool{index}]}}]
            """),
    }


def request_for(tool: int) -> external_auth_pb2.CheckRequest:
    request = tool_call(f"tool{tool}", principal=CALLER, host=SERVER_HOST)
    request.attributes.destination.principal = SERVER
    return request


@pytest.fixture(scope="module")
def pure_answers(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[int, int], tuple[str, ...]]:
    """(set, tool) -> the answer of that whole set alone, decided in-process."""
    answers = {}
    for index in range(SETS):
        directory = tmp_path_factory.mktemp(f"set{index}")
        for name, text in policy_files(index).items():
            (directory / name).write_text(text)
        authorizer = Authorizer(compile_directory(directory))
        for tool in range(SETS):
            answers[(index, tool)] = answer_bytes(authorizer.check_bytes(request_for(tool).SerializeToString()))
    assert answers[(0, 0)][0] == "allow" and answers[(1, 0)][0] == "deny"
    assert len(set(answers.values())) == SETS * SETS  # every (set, request) answer is distinct
    return answers


def test_the_answers_tell_a_mix_apart(tmp_path: Path, pure_answers) -> None:
    """The detector works: a decision over set 0's targets and set 1's profiles gives an
    answer no whole set gives."""
    sets = []
    for index in (0, 1):
        directory = tmp_path / str(index)
        directory.mkdir()
        for name, text in policy_files(index).items():
            (directory / name).write_text(text)
        sets.append(compile_directory(directory))
    mixed: PolicySet = dataclasses.replace(
        sets[1],
        targets=sets[0].targets,
        targets_by_principal=sets[0].targets_by_principal,
        targets_by_host=sets[0].targets_by_host,
    )
    for tool in range(SETS):
        mixed_answer = answer_bytes(Authorizer(mixed).check_bytes(request_for(tool).SerializeToString()))
        assert mixed_answer not in pure_answers.values(), mixed_answer


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MandateServer, ConfigMapVolume]]:
    volume = ConfigMapVolume(tmp_path_factory.mktemp("live") / "policies")
    volume.publish(policy_files(0))
    server = MandateServer(ServeOptions(str(volume.root), f"127.0.0.1:{free_port()}", ""))
    server.start()
    server.watcher.stop()  # the test drives every reload itself, so it knows which sets were live
    yield server, volume
    server.stop(0)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    sequence=st.lists(st.integers(0, SETS - 1), min_size=1, max_size=6),
    tools=st.lists(st.integers(0, SETS - 1), min_size=1, max_size=4),
    clients=st.integers(1, 4),
)
def test_concurrent_checks_never_see_a_mix_of_two_sets(
    live_server, pure_answers, sequence: list[int], tools: list[int], clients: int
) -> None:
    server, volume = live_server
    current = next(
        i
        for i in range(SETS)
        if pure_answers[(i, 0)] == answer_bytes(server.authorizer.check_bytes(request_for(0).SerializeToString()))
    )
    live = {current}
    stop = threading.Event()
    seen: list[tuple[int, tuple[str, ...]]] = []
    failures: list[BaseException] = []

    def client() -> None:
        with grpc.insecure_channel(server.options.listen) as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            try:
                for tool in itertools.cycle(tools):
                    if stop.is_set():
                        return
                    seen.append((tool, answer(stub.Check(request_for(tool), timeout=5))))
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()

    def checks_flow() -> None:
        mark = len(seen)
        wait_until(lambda: len(seen) >= mark + 3 or failures, 5.0, "checks in flight")

    try:
        for index in sequence:
            checks_flow()
            volume.publish(policy_files(index))
            live.add(index)
            assert server.watcher.reload()
        checks_flow()
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
    assert not failures, failures
    allowed_answers = {tool: {pure_answers[(index, tool)] for index in live} for tool in tools}
    for tool, got in seen:
        assert got in allowed_answers[tool], (tool, got, sorted(live))
    # And fresh: once the last reload returned, only the last set answers.
    final = sequence[-1]
    for tool in set(tools):
        assert (
            answer_bytes(server.authorizer.check_bytes(request_for(tool).SerializeToString()))
            == pure_answers[(final, tool)]
        )


# --- a reload racing the kubelet's swap ----------------------------------------------------------


def race_files(index: int) -> dict[str, str]:
    """Two sets whose files also combine into a valid set: a reload that read one file of
    each would compile, and go live, unless the reload notices the directory changed."""
    return {
        "targets.yaml": textwrap.dedent(f"""\
            apiVersion: mandate.dev/v1alpha1
            kind: Target
            metadata: {{name: srv}}
            spec: {{kind: mcp, principals: ["{SERVER}"], hosts: [{SERVER_HOST}], pathPrefix: /p{index}}}
            """),
        "profiles.yaml": textwrap.dedent(f"""\
            apiVersion: mandate.dev/v1alpha1
            kind: MissionProfile
            metadata: {{name: caller}}
            spec:
              principals: ["{CALLER}"]
              mission: set {index}
              mcp: [{{server: srv, tools: [tool{index}]}}]
            """),
    }


def race_answers(authorizer: Authorizer) -> frozenset[tuple[int, int, tuple[str, ...]]]:
    answers = set()
    for tool, prefix in itertools.product(range(2), range(2)):
        request = request_for(tool)
        request.attributes.request.http.path = f"/p{prefix}"
        answers.add((tool, prefix, answer_bytes(authorizer.check_bytes(request.SerializeToString()))))
    return frozenset(answers)


def test_a_reload_that_races_a_swap_never_goes_live_half_and_half(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kubelet swaps `..data` while a reload is between reading profiles.yaml and
    targets.yaml. Whatever that reload read, what goes live is one whole set."""
    pure = {}
    for index in (0, 1):
        directory = tmp_path / f"pure{index}"
        directory.mkdir()
        for name, text in race_files(index).items():
            (directory / name).write_text(text)
        pure[index] = race_answers(Authorizer(compile_directory(directory)))
    mixed_directory = tmp_path / "mixed"
    mixed_directory.mkdir()
    (mixed_directory / "profiles.yaml").write_text(race_files(0)["profiles.yaml"])
    (mixed_directory / "targets.yaml").write_text(race_files(1)["targets.yaml"])
    mixed = race_answers(Authorizer(compile_directory(mixed_directory)))
    assert mixed not in (pure[0], pure[1])  # the mix compiles, and is told apart

    volume = ConfigMapVolume(tmp_path / "policies")
    volume.publish(race_files(0))
    authorizer = Authorizer(compile_directory(volume.root))
    watcher = PolicyWatcher(
        str(volume.root), authorizer, Metrics(), compiler=compile_directory
    )  # in process: read_text is patched here
    original = Path.read_text
    swapped = threading.Event()

    def read_text(self: Path, *args, **kwargs):  # type: ignore[no-untyped-def]
        text = original(self, *args, **kwargs)
        if self.name == "profiles.yaml" and self.parent == volume.root and not swapped.is_set():
            swapped.set()
            volume.publish(race_files(1))  # after this file, before targets.yaml
        return text

    monkeypatch.setattr(Path, "read_text", read_text)
    watcher.reload()
    monkeypatch.setattr(Path, "read_text", original)
    assert swapped.is_set()
    assert race_answers(authorizer) in (pure[0], pure[1])
    # The next reload (the watcher's next look at the directory) brings in the whole new set.
    assert watcher.reload()
    assert race_answers(authorizer) == pure[1]
