"""The admin API (proto/mandate/admin/v1alpha1) through a real gRPC client against a real
`mandate serve` subprocess: status, reload, explain against the live set, and chains in the
in-process store, which only the admin API can reach."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3.external_auth_pb2_grpc import AuthorizationStub

from authz.admin import auth
from authz.admin.auth import BearerKeys
from authz.admin.client import AdminClient, AdminCredentials, AdminError
from authz.admin.commands import _worker_lines
from authz.check.request import to_check_request
from authz.cli import main
from authz.explain import explain, read_request_file
from authz.policy.compiler import compile_directory
from tests.harness.answers import header, outcome
from tests.harness.example_policies import EXAMPLES, REPO
from tests.harness.pki import MeshPKI
from tests.harness.processes import MandateProcess, free_port, wait_until
from tests.harness.requests import tool
from tests.harness.users import ISSUER, USER_PROFILES, Idp, users_settings

KEY = "k" * 40


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MandateProcess]:
    """`mandate serve` on a copy of the example policies, its admin API on loopback without credentials."""
    work = tmp_path_factory.mktemp("admin")
    policies = Path(shutil.copytree(EXAMPLES, work / "policies"))
    server = MandateProcess(policies, work, admin_args=[]).start()
    yield server
    server.stop()


def admin(server: MandateProcess, key_file: str | None = None) -> AdminClient:
    return AdminClient(f"127.0.0.1:{server.admin_port}", AdminCredentials(key_file=key_file))


def check(server: MandateProcess, example: str, chain: str = ""):
    request = read_request_file(str(REPO / "examples" / example)).input
    if chain:
        request.headers["x-delegation-chain"] = chain
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        return AuthorizationStub(channel).Check(to_check_request(request), timeout=5)


def test_status_names_the_live_policy_set(served: MandateProcess) -> None:
    with admin(served) as client:
        status = client.status()
    assert (status.profiles, status.targets) == (4, 4)
    assert status.policy_version == compile_directory(EXAMPLES).version
    assert status.chain_store.startswith("in-process") and status.workers == 1
    assert not status.HasField("last_reload")


def test_explain_decides_against_the_live_set_as_explain_does_locally(served: MandateProcess) -> None:
    path = REPO / "examples" / "refund-for-support.yaml"
    with admin(served) as client:
        remote = client.explain(path.read_text())
    local = explain(compile_directory(EXAMPLES), read_request_file(str(path)))
    keys = ("decision", "status", "reason", "rule", "refused_by_hop", "chain", "hops", "profile", "target")
    assert {key: remote[key] for key in keys} == {key: local[key] for key in keys}
    assert remote["refused_by_hop"] == "support-agent"


def test_explain_names_the_user_a_request_acts_for_as_explain_does_locally(tmp_path: Path) -> None:
    """A described `user` (SPEC §10) comes back as its issuer and subject, never a token."""
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "settings.yaml").write_text(users_settings(Idp().write_jwks(tmp_path / "jwks.json")))
    (policies / "profiles.yaml").write_text(USER_PROFILES)
    request = tmp_path / "balance.yaml"
    request.write_text(
        "source: spiffe://cluster.local/ns/billing-agent/sa/billing-agent\nhost: billing-db.local\n"
        "method: POST\npath: /mcp\nheaders: {content-type: application/json}\n"
        "body: {jsonrpc: '2.0', id: 1, method: tools/call, params: {name: balance, arguments: {}}}\n"
        f"user: {{iss: '{ISSUER}', sub: alice}}\n"
    )
    server = MandateProcess(policies, tmp_path / "work", admin_args=[]).start()
    try:
        with admin(server) as client:
            remote = client.explain(request.read_text())
    finally:
        server.stop()
    local = explain(compile_directory(policies), read_request_file(str(request)))
    assert remote["user"] == local["user"] == {"iss": ISSUER, "sub": "alice"}
    assert (
        (remote["decision"], remote["rule"]) == (local["decision"], local["rule"]) == ("allow", "billing-agent.mcp[1]")
    )


def test_an_unreadable_request_is_invalid_argument(served: MandateProcess) -> None:
    with admin(served) as client, pytest.raises(AdminError) as refused:
        client.explain("surprise: field")
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT and "unknown field(s) surprise" in str(refused.value)


def test_revoking_an_in_process_chain_is_seen_by_the_next_check(served: MandateProcess, capsys) -> None:
    token = header(check(served, "ask-billing.yaml"), "x-delegation-chain")
    lookup = tool("lookup_invoice", "spiffe://cluster.local/ns/billing/sa/billing-agent", invoice=7)
    lookup.host, lookup.headers["x-delegation-chain"] = "billing-db-mcp.billing.svc.cluster.local", token
    with grpc.insecure_channel(f"127.0.0.1:{served.grpc_port}") as channel:
        stub = AuthorizationStub(channel)
        assert outcome(stub.Check(to_check_request(lookup), timeout=5)) == ("allow", "allowed")
        with admin(served) as client:
            shown = client.chain_show(token)
            assert [hop.profile for hop in shown.hops] == ["support-agent", "billing-agent"] and not shown.revoked
            client.chain_revoke(token)
            assert client.chain_show(token).revoked
        assert outcome(stub.Check(to_check_request(lookup), timeout=5)) == ("deny", "chain_revoked")
    assert main(["chain", "show", token, "--server", f"127.0.0.1:{served.admin_port}"]) == 0
    assert "revoked: yes" in capsys.readouterr().out


def test_an_unknown_chain_is_not_found(served: MandateProcess, capsys) -> None:
    assert main(["chain", "show", "0" * 32, "--server", f"127.0.0.1:{served.admin_port}"]) == 1
    assert "unknown or expired" in capsys.readouterr().err


def test_reload_rejects_a_broken_set_with_every_error_and_keeps_the_live_one(served: MandateProcess) -> None:
    agents = served.policies / "agents.yaml"
    original = agents.read_text()
    agents.write_text(original.replace("server: github", "server: gitlab"))
    try:
        with admin(served) as client:
            result = client.reload()
            status = client.status()
    finally:
        agents.write_text(original)
    assert not result.applied and len(result.errors) == original.count("server: github")
    assert all(error.startswith(f"{agents}:") and "gitlab" in error for error in result.errors)
    assert status.policy_version == compile_directory(EXAMPLES).version
    assert status.last_reload.errors == result.errors
    with admin(served) as client:
        assert client.reload().applied


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MandateProcess, Path]]:
    work = tmp_path_factory.mktemp("admin-keyed")
    key_file = work / "admin.key"
    key_file.write_text(f"{'n' * 40}\n{KEY}\n")  # rotation: any key of the file is accepted
    server = MandateProcess(EXAMPLES, work, admin_args=["--admin-key", str(key_file)]).start()
    yield server, key_file
    server.stop()


@pytest.mark.parametrize("presented", [None, "w" * 40, f"{KEY}x"], ids=["no key", "wrong key", "longer key"])
def test_a_call_without_a_valid_key_is_unauthenticated(keyed, tmp_path: Path, presented: str | None) -> None:
    server, _ = keyed
    key_file = None
    if presented is not None:
        key_file = tmp_path / "presented.key"
        key_file.write_text(presented)
    for call in ("status", "reload"):
        with admin(server, str(key_file) if key_file else None) as client, pytest.raises(AdminError) as refused:
            getattr(client, call)()
        assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_a_call_with_any_key_of_the_file_is_served(keyed, tmp_path: Path) -> None:
    server, _ = keyed
    presented = tmp_path / "presented.key"
    presented.write_text(KEY + "\n")
    with admin(server, str(presented)) as client:
        assert client.status().profiles == 4


def test_a_key_removed_from_the_file_is_refused_from_the_next_call_without_a_restart(keyed, tmp_path: Path) -> None:
    """Rotation: the file is read again when it changes; a file that breaks keeps the last good keys."""
    server, key_file = keyed
    original, new = key_file.read_text(), "r" * 48
    old_key, new_key = tmp_path / "old.key", tmp_path / "new.key"
    old_key.write_text(KEY + "\n")
    new_key.write_text(new + "\n")
    try:
        replace(key_file, f"{KEY}\n{new}\n")  # the new key added first
        with admin(server, str(new_key)) as client:
            assert client.status().profiles == 4
        replace(key_file, f"{new}\n")  # then the old one removed
        with admin(server, str(old_key)) as client, pytest.raises(AdminError) as refused:
            client.status()
        assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
        replace(key_file, "short\n")  # unusable: the keys read before stay
        with admin(server, str(new_key)) as client:
            assert client.status().profiles == 4
    finally:
        replace(key_file, original)


def replace(path: Path, text: str) -> None:
    beside = path.with_name(path.name + ".new")
    beside.write_text(text)
    os.replace(beside, path)


def test_a_key_file_read_while_it_is_written_is_not_believed(tmp_path: Path, monkeypatch) -> None:
    """A key half written (a prefix of the real one) is never accepted: the file is read again
    only once its signature held still across the read."""
    path = tmp_path / "admin.key"
    path.write_text(KEY + "\n")
    keys = BearerKeys(str(path))
    path.write_text("h" * 32 + "\n")  # the first half of a new key, as a writer leaves it for a moment
    real_read = auth.read_keys

    def read_then_finish(name: str) -> list[bytes]:
        found = real_read(name)
        path.write_text("h" * 64 + "\n")  # the writer finishes while Mandate reads
        return found

    monkeypatch.setattr(auth, "read_keys", read_then_finish)
    assert not keys.accepts([("authorization", "Bearer " + "h" * 32)])
    monkeypatch.setattr(auth, "read_keys", real_read)
    assert keys.accepts([("authorization", "Bearer " + "h" * 64)])
    assert not keys.accepts([("authorization", f"Bearer {KEY}")])


def serve_with(*args: str) -> subprocess.CompletedProcess[str]:
    command = [*MandateProcess.command(), "serve", "--policies", str(EXAMPLES), "--listen", f"127.0.0.1:{free_port()}"]
    command += ["--metrics-listen", "", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, check=False)


@pytest.mark.parametrize("address", ["0.0.0.0", "[::]", "10.1.2.3"])
def test_a_non_loopback_admin_listener_without_credentials_is_refused_at_start(address: str) -> None:
    finished = serve_with("--admin-listen", f"{address}:{free_port()}")
    assert finished.returncode == 2
    lines = [line for line in finished.stderr.splitlines() if "mandate:" not in line]  # log lines aside
    assert len(lines) == 1 and lines[0].startswith(f"refusing --admin-listen {address}:")


def test_a_short_admin_key_is_refused_at_start(tmp_path: Path) -> None:
    key_file = tmp_path / "admin.key"
    key_file.write_text("secret\n")
    finished = serve_with("--admin-listen", f"0.0.0.0:{free_port()}", "--admin-key", str(key_file))
    assert finished.returncode == 2 and "at least 32 ASCII characters" in finished.stderr


def test_the_admin_listener_is_on_loopback_by_default(monkeypatch) -> None:
    from authz.cli import build_parser

    monkeypatch.delenv("MANDATE_ADMIN_LISTEN")
    assert build_parser().parse_args(["serve"]).admin_listen == "127.0.0.1:9192"


@pytest.fixture(scope="module")
def mutual_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MandateProcess, MeshPKI]]:
    work = tmp_path_factory.mktemp("admin-mtls")
    pki = MeshPKI(work / "pki")
    tls = ["--admin-tls-cert", str(pki.server.cert), "--admin-tls-key", str(pki.server.key)]
    server = MandateProcess(EXAMPLES, work, admin_args=[*tls, "--admin-client-ca", str(pki.ca_cert)]).start()
    yield server, pki
    server.stop()


def test_with_mtls_a_client_certificate_from_the_ca_is_served(mutual_tls) -> None:
    server, pki = mutual_tls
    cert = pki.client_cert("ops", "admin")
    credentials = AdminCredentials(ca=str(pki.ca_cert), cert=str(cert.cert), key=str(cert.key))
    with AdminClient(f"127.0.0.1:{server.admin_port}", credentials) as client:
        assert client.status().profiles == 4


@pytest.mark.parametrize("untrusted", [None, True], ids=["no certificate", "another CA's certificate"])
def test_with_mtls_a_client_without_a_certificate_from_the_ca_is_refused(mutual_tls, untrusted) -> None:
    server, pki = mutual_tls
    cert = pki.client_cert("ops", "admin", untrusted=True) if untrusted else None
    credentials = AdminCredentials(
        ca=str(pki.ca_cert), cert=str(cert.cert) if cert else None, key=str(cert.key) if cert else None
    )
    with AdminClient(f"127.0.0.1:{server.admin_port}", credentials) as client, pytest.raises(AdminError):
        client.status()


def test_with_workers_the_supervisor_serves_the_admin_api_over_the_shared_chains(redis_server, tmp_path: Path) -> None:
    """`--workers 2`: one admin listener (the supervisor's); a chain a worker minted is revoked
    through it and refused by the workers; a Reload reaches them all, and Status shows the set
    each worker serves."""
    key = tmp_path / "chain.key"
    key.write_text(os.urandom(32).hex())
    policies = tmp_path / "policies"
    shutil.copytree(EXAMPLES, policies)
    grpc_port, admin_port, metrics_port = free_port(), free_port(), free_port()
    command = [*MandateProcess.command(), "serve", "--policies", str(policies), "--workers", "2"]
    command += ["--listen", f"127.0.0.1:{grpc_port}", "--metrics-listen", f"127.0.0.1:{metrics_port}"]
    command += ["--redis", redis_server.url, "--chain-key", str(key), "--admin-listen", f"127.0.0.1:{admin_port}"]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    server = MandateProcess(EXAMPLES, tmp_path)
    server.grpc_port, server.admin_port = grpc_port, admin_port
    try:
        wait_until(lambda: _ready(metrics_port), 30, "both workers to serve")  # the supervisor's /readyz
        with admin(server) as client:
            assert client.status().workers == 2
            token = header(check(server, "ask-billing.yaml"), "x-delegation-chain")
            assert client.chain_show(token).hops[0].profile == "support-agent"
            client.chain_revoke(token)
            assert client.reload().applied
            before = client.status().policy_version
            wait_until(lambda: assert_every_worker_serves(client, before), 10, "each worker's set reported")
            with (policies / "agents.yaml").open("a") as agents:
                agents.write("\n# a new version of the set\n")
            reloaded = client.reload()
            assert reloaded.applied and reloaded.policy_version != before
            wait_until(lambda: assert_every_worker_serves(client, reloaded.policy_version), 10, "each worker's reload")
        lookup = tool("lookup_invoice", "spiffe://cluster.local/ns/billing/sa/billing-agent", invoice=7)
        lookup.host, lookup.headers["x-delegation-chain"] = "billing-db-mcp.billing.svc.cluster.local", token
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = AuthorizationStub(channel)
            wait_until(
                lambda: outcome(stub.Check(to_check_request(lookup), timeout=5)) == ("deny", "chain_revoked"),
                2,
                "the revocation to reach the workers",
            )
    finally:
        process.terminate()
        process.wait(15)


def assert_every_worker_serves(client: AdminClient, version: str) -> bool:
    """Status names two workers, each serving `version` (False while one does not yet)."""
    workers = client.status().worker_sets
    assert len(workers) == 2 and all(worker.pid for worker in workers)
    return all(worker.policy_version == version and worker.loaded_at > 0 for worker in workers)


def test_status_says_which_worker_serves_another_set() -> None:
    report = {
        "policy_version": "aaa",
        "worker_sets": [
            {"pid": 11, "policy_version": "aaa", "loaded_at": 1.0},
            {"pid": 12, "policy_version": "bbb", "loaded_at": 2.0},
            {"pid": 13, "policy_version": "", "loaded_at": 0.0},
        ],
    }
    lines = _worker_lines(report)
    assert lines[0].startswith("worker:   pid 11 serves the set above")
    assert "pid 12 serves bbb, NOT the set above" in lines[1]
    assert "pid 13 has reported no set" in lines[2]


def _ready(metrics_port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/readyz", timeout=1).status == 200
    except OSError:
        return False
