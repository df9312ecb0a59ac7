"""Shaping the forwarded request through a real Envoy 1.40 (SPEC §12): what the upstream sees of the
headers a policy sets and removes, a credential the agent never holds, a key rotated while requests
flow, and secrets that appear in nothing Mandate writes or answers.

Its own Mandate (with an admin listener) and Envoy, in front of an echo upstream that records
every request's headers; the suite's PKI and callers.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.harness.clients import raw_client
from tests.harness.envoy import EnvoyProcess, mesh_envoy_config
from tests.harness.pki import CertPair, MeshPKI
from tests.harness.policies import INTERN_ID, SUPPORT_ID
from tests.harness.processes import MandateProcess, wait_until
from tests.harness.upstreams import SeenRequest, Upstream, echo, serve_upstream

SHAPED_HOST, OPENAI_HOST = "shaped.ops.svc.cluster.local", "api.openai.test"

POLICY = f"""
apiVersion: mandate.dev/v1alpha1
kind: Target
metadata: {{name: shaped}}
spec:
  kind: http
  hosts: [{SHAPED_HOST}]
  requestHeaders:
    set: {{x-forwarded-by: "mandate for {{caller.principal}}", x-team: everyone}}
    remove: [x-internal-debug]
---
apiVersion: mandate.dev/v1alpha1
kind: Target
metadata: {{name: openai}}
spec: {{kind: egress, hosts: [{OPENAI_HOST}]}}
---
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {{name: support-agent}}
spec:
  principals: [{SUPPORT_ID}]
  mission: Answers tickets with a model; team A's key.
  http:
    - target: shaped
      paths: ["/api/*"]
      requestHeaders: {{set: {{x-team: support, x-decision: "{{decision_id}}"}}}}
  egress:
    - host: {OPENAI_HOST}
      requestHeaders: {{set: {{authorization: "Bearer {{secret:%(team_a)s}}"}}}}
---
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {{name: intern-agent}}
spec:
  principals: [{INTERN_ID}]
  mission: Drafts replies with a model; team B's key.
  egress:
    - host: {OPENAI_HOST}
      requestHeaders: {{set: {{authorization: "Bearer {{secret:%(team_b)s}}"}}}}
"""


def canary(name: str) -> str:
    return f"sk-{name}-canary-{os.urandom(6).hex()}"


@dataclass
class Shaping:
    mandate: MandateProcess
    envoy: EnvoyProcess
    upstream: Upstream
    policies: Path
    team_a: Path
    team_b: Path
    canaries: list[str]  # every value a secret file has held


def replace_atomically(path: Path, text: str) -> None:
    beside = path.with_name(path.name + ".new")
    beside.write_text(text + "\n")
    os.replace(beside, path)


@pytest.fixture(scope="module")
def shaping(pki: MeshPKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shaping]:
    secrets = tmp_path_factory.mktemp("secrets")
    team_a, team_b = secrets / "team-a-key", secrets / "team-b-key"
    values = [canary("team-a"), canary("team-b")]
    team_a.write_text(values[0] + "\n")
    team_b.write_text(values[1] + "\n")
    policies = tmp_path_factory.mktemp("shaping-policies")
    (policies / "policy.yaml").write_text(POLICY % {"team_a": team_a, "team_b": team_b})
    upstream = serve_upstream("shaped-echo", echo.build_app())
    mandate = MandateProcess(policies, tmp_path_factory.mktemp("shaping-mandate"), admin_args=[]).start()
    config = mesh_envoy_config(pki, mandate.grpc_port, {SHAPED_HOST: upstream.port, OPENAI_HOST: upstream.port})
    envoy = EnvoyProcess(config, tmp_path_factory.mktemp("shaping-envoy")).start()
    yield Shaping(mandate, envoy, upstream, policies, team_a, team_b, values)
    envoy.stop()
    mandate.stop()
    upstream.stop()


def send(
    shaping: Shaping, pki: MeshPKI, cert: CertPair, host: str, path: str, headers: list[tuple[str, str]]
) -> tuple[httpx.Response, list[SeenRequest]]:
    """One request over HTTP/1.1 (header names in the case the client chose), and what reached the upstream."""
    mark = shaping.upstream.recorder.mark()
    with raw_client(shaping.envoy, pki, cert, host) as client:
        response = client.get(path, headers=headers)
    return response, shaping.upstream.recorder.since(mark)


def test_a_set_header_replaces_every_copy_the_client_sent_and_a_removed_one_is_gone(
    shaping: Shaping, pki: MeshPKI, support_cert: CertPair
) -> None:
    sent = [
        ("X-Team", "chosen-by-agent"),
        ("x-team", "chosen-again"),
        ("X-Forwarded-By", "the agent itself"),
        ("X-Internal-Debug", "1"),
        ("x-internal-debug", "2"),
    ]
    response, seen = send(shaping, pki, support_cert, SHAPED_HOST, "/api/tickets", sent)
    assert response.status_code == 200
    (request,) = seen
    assert request.header_values("x-team") == ["support"]  # the rule's, over the Target's
    assert request.header_values("x-forwarded-by") == [f"mandate for {SUPPORT_ID}"]
    assert request.header_values("x-internal-debug") == []
    (decision,) = request.header_values("x-mandate-decision-id")
    assert request.header_values("x-decision") == [decision]


def test_a_denied_request_is_refused_as_it_was_and_reaches_nobody(
    shaping: Shaping, pki: MeshPKI, support_cert: CertPair
) -> None:
    response, seen = send(shaping, pki, support_cert, SHAPED_HOST, "/admin", [("x-team", "mine")])
    assert response.status_code == 403
    assert response.json()["reason"] == "http_not_allowed"
    assert seen == []


def test_each_team_sends_its_own_key_which_the_agent_never_holds(
    shaping: Shaping, pki: MeshPKI, support_cert: CertPair, intern_cert: CertPair
) -> None:
    own = [("Authorization", "Bearer agent-chosen"), ("authorization", "Bearer another")]
    team_a = send(shaping, pki, support_cert, OPENAI_HOST, "/v1/models", own)[1][0]
    team_b = send(shaping, pki, intern_cert, OPENAI_HOST, "/v1/models", own)[1][0]
    assert team_a.header_values("authorization") == [f"Bearer {current(shaping.team_a)}"]
    assert team_b.header_values("authorization") == [f"Bearer {current(shaping.team_b)}"]


def current(path: Path) -> str:
    return path.read_text().strip()


def test_a_key_rotated_while_requests_flow_is_in_use_within_2_s_and_none_fails(
    shaping: Shaping, pki: MeshPKI, support_cert: CertPair
) -> None:
    old, new = current(shaping.team_a), canary("team-a-rotated")
    shaping.canaries.append(new)
    seen: list[tuple[float, int, str]] = []  # (when sent, status, the authorization the upstream saw)
    stop = threading.Event()

    def flow() -> None:
        with raw_client(shaping.envoy, pki, support_cert, OPENAI_HOST) as client:
            while not stop.is_set():
                mark, sent = shaping.upstream.recorder.mark(), time.monotonic()
                status = client.get("/v1/chat", headers={"authorization": "Bearer agent"}).status_code
                got = shaping.upstream.recorder.since(mark)
                seen.append((sent, status, got[0].header_values("authorization")[0] if got else ""))

    threads = [threading.Thread(target=flow) for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    rotated = time.monotonic()
    replace_atomically(shaping.team_a, new)
    wait_until(lambda: any(value == f"Bearer {new}" for *_, value in seen) or None, 5.0, "the rotated key upstream")
    time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join(10)
    assert {status for _, status, _ in seen} == {200}
    assert {value for *_, value in seen} == {f"Bearer {old}", f"Bearer {new}"}
    first_new = min(sent for sent, _, value in seen if value == f"Bearer {new}")
    assert first_new - rotated < 2.0
    assert all(value == f"Bearer {new}" for sent, _, value in seen if sent > rotated + 2.0)


def test_a_key_file_that_disappears_keeps_the_last_good_value_and_says_so(
    shaping: Shaping, pki: MeshPKI, intern_cert: CertPair
) -> None:
    last_good = current(shaping.team_b)
    shaping.team_b.unlink()
    try:
        wait_until(lambda: "mandate_secrets_stale 1.0" in shaping.mandate.metrics_text() or None, 5.0, "stale")
        request = send(shaping, pki, intern_cert, OPENAI_HOST, "/v1/models", [])[1][0]
        assert request.header_values("authorization") == [f"Bearer {last_good}"]
        assert f"cannot read secret file {shaping.team_b}" in shaping.mandate.stderr_tail(200)
        assert 'mandate_secret_reloads_total{result="kept"} 1.0' in shaping.mandate.metrics_text()
    finally:
        replace_atomically(shaping.team_b, last_good)
    wait_until(lambda: "mandate_secrets_stale 0.0" in shaping.mandate.metrics_text() or None, 5.0, "stale no more")


def explain_outputs(shaping: Shaping, tmp_path: Path) -> list[str]:
    """`mandate explain` of an allowed egress call: from the files and from the live server, text and JSON."""
    request = tmp_path / "request.yaml"
    request.write_text(yaml.safe_dump({"source": SUPPORT_ID, "method": "GET", "host": OPENAI_HOST, "path": "/v1/x"}))
    server = ["--server", f"127.0.0.1:{shaping.mandate.admin_port}"]
    outputs = []
    for extra in ([], ["--json"], server, [*server, "--json"]):
        command = [*MandateProcess.command(), "explain", str(shaping.policies), "--request", str(request), *extra]
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    return outputs


def test_secrets_appear_in_nothing_mandate_writes_or_answers(
    shaping: Shaping, pki: MeshPKI, support_cert: CertPair, intern_cert: CertPair, tmp_path: Path
) -> None:
    for cert in (support_cert, intern_cert):  # allowed and denied calls of both teams
        send(shaping, pki, cert, OPENAI_HOST, "/v1/models", [("authorization", "Bearer agent")])
        denied = send(shaping, pki, cert, SHAPED_HOST, "/admin", [])[0]
        assert denied.status_code == 403 and all(value not in denied.text for value in shaping.canaries)
    explained = explain_outputs(shaping, tmp_path)
    assert all(f"Bearer {{secret:{shaping.team_a}}}" in output for output in explained)
    time.sleep(0.2)  # the audit lines of the last answers
    produced = {
        "audit (stdout)": shaping.mandate.stdout_text(),
        "log (stderr)": shaping.mandate.stderr_path.read_text(),
        "metrics": shaping.mandate.metrics_text(),
        "Envoy's access log": str(shaping.envoy.access_log()),
        **{f"explain {index}": output for index, output in enumerate(explained)},
    }
    assert len(shaping.canaries) >= 3  # the two keys and the rotated one (tests run in order)
    leaked = [(where, value) for where, text in produced.items() for value in shaping.canaries if value in text]
    assert leaked == []
