"""A policy set compiled in a child process (authz/policy/transfer.py) is the set compiled in
process: the same structure, object for object, and the same answer to every request; nothing
but a set's own parts crosses, what belongs to one process is made afresh, and every way the
child can fail keeps the set in service."""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse

from authz.check.pipeline import Authorizer
from authz.policy import transfer
from authz.policy.compiled import PolicySet
from authz.policy.compiler import compile_directory
from authz.policy.loader import PolicyLoadError
from authz.policy.transfer import REDUCERS, SLICE, TransferError, compile_elsewhere, receive, send
from authz.users.keys import remote_keys
from loadtest import stream
from loadtest.micro.policyset import write_policy_set
from tests.harness.answers import decision_id, header
from tests.harness.example_policies import EXAMPLES
from tests.harness.headers_policy import KEY_A, KEY_B, POLICY
from tests.harness.users import Idp, users_settings

REMOTE_ISSUER = """\
      - issuer: https://remote.example
        audiences: [mandate]
        jwksUri: https://remote.example/jwks.json
"""


def canonical(value: Any, seen: dict[int, int] | None = None) -> Any:
    """The value as the constructors that would build it again, all the way down, each object of
    Mandate's and each dict or list numbered at first sight (so sharing them counts): equal
    forms, equal sets."""
    seen = {} if seen is None else seen
    if value is None or isinstance(value, (str, bytes, int, float)):
        return (type(value).__name__, value)
    if isinstance(value, tuple):  # immutable values: equal ones are interchangeable
        return ("tuple", tuple(canonical(item, seen) for item in value))
    if isinstance(value, frozenset):
        return ("frozenset", tuple(sorted(repr(canonical(item, {})) for item in value)))
    if id(value) in seen:
        return ("same as", seen[id(value)])
    seen[id(value)] = len(seen)
    if isinstance(value, list):
        return ("list", tuple(canonical(item, seen) for item in value))
    if isinstance(value, dict):
        return ("dict", tuple((canonical(key, seen), canonical(item, seen)) for key, item in value.items()))
    maker, arguments = REDUCERS[type(value)](value)  # a fresh tuple of the object's parts: not numbered
    return (getattr(maker, "__qualname__", repr(maker)), tuple(canonical(part, seen) for part in arguments))


@pytest.fixture
def users_and_secrets(tmp_path: Path, write_policies: Callable[..., Path]) -> Path:
    """A set with every per-process part: users from a JWKS file and a JWKS URL, headers reading
    secret files, `when`s."""
    (tmp_path / "key-a").write_text(KEY_A + "\n")
    (tmp_path / "key-b").write_text(KEY_B + "\n")
    settings = users_settings(Idp().write_jwks(tmp_path / "jwks.json")) + REMOTE_ISSUER
    text = POLICY % {"key_a": tmp_path / "key-a", "key_b": tmp_path / "key-b"}
    return write_policies(a_settings=settings, policy=text)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("generated")
    write_policy_set(directory, 600)
    return directory


def test_the_example_policies_arrive_as_compiled() -> None:
    assert canonical(compile_elsewhere(str(EXAMPLES))) == canonical(compile_directory(EXAMPLES))


def test_a_generated_set_arrives_as_compiled(generated: Path) -> None:
    here, there = compile_directory(generated), compile_elsewhere(str(generated))
    assert canonical(there) == canonical(here)
    assert list(there.profiles) == list(here.profiles)  # the order the files gave


def test_users_headers_and_secrets_arrive_as_compiled(users_and_secrets: Path) -> None:
    here, there = compile_directory(users_and_secrets), compile_elsewhere(str(users_and_secrets))
    assert canonical(there) == canonical(here)
    secret = next(iter(there.secrets.files.values()))
    assert secret.value in (KEY_A, KEY_B)  # read again on arrival, not sent


def test_what_belongs_to_one_process_is_made_afresh(users_and_secrets: Path) -> None:
    """Rule 2: `when` answers, verified tokens and a URL's keys are not the child's."""
    there = compile_elsewhere(str(users_and_secrets))
    conditions = {id(rule.when._results) for rule in _rules(there) if rule.when is not None}  # type: ignore[attr-defined]
    assert conditions <= {id(there.condition_results)} and len(there.condition_results) == 0
    users = there.settings.users
    assert users is not None and len(users._verified) == 0
    remote = users.issuers["https://remote.example"].keys
    assert remote is remote_keys("https://remote.example/jwks.json", None)  # this process's own source


def _rules(policy: PolicySet) -> list[Any]:
    return [rule for profile in policy.profiles.values() for rules in profile.scope.mcp.values() for rule in rules]


def test_every_request_of_the_stream_gets_the_same_answer() -> None:
    """2,000 distinct requests over the example policies, each decided afresh by both sets."""
    here = Authorizer(compile_directory(EXAMPLES), decision_cache=0)
    there = Authorizer(compile_elsewhere(str(EXAMPLES)), decision_cache=0)
    for payload in stream.generate(2_000, seed=5).payloads:
        assert _masked(there.check_bytes(payload)) == _masked(here.check_bytes(payload))


def _masked(answer: bytes) -> CheckResponse:
    """The answer with what is new for every decision blanked: its id, a chain token minted."""
    response = CheckResponse.FromString(answer)
    number = decision_id(response)
    masked = answer.replace(number.encode(), b"#" * len(number)) if number else answer
    for minted in filter(None, header(response, "x-delegation-chain").partition(".")[::2]):
        masked = masked.replace(minted.encode(), b"<" * len(minted))
    return CheckResponse.FromString(masked)


def test_the_tables_cross_in_slices(generated: Path) -> None:
    """Rule 3: no message carries more than SLICE rows; the set rebuilt from them is whole."""
    policy = compile_directory(generated)
    out = io.BytesIO()
    send(policy, transfer._Sender(out))
    out.seek(0)
    reader, rows = transfer._Receiver(out), 0
    while (message := reader.receive())[0] == "rows":
        assert 0 < len(message[2]) <= SLICE
        rows += len(message[2])
    assert rows == len(policy.profiles) + len(policy.targets) + len(policy.callers.exact) + _other_rows(policy)
    out.seek(0)
    assert canonical(receive(out)) == canonical(policy)


def _other_rows(policy: PolicySet) -> int:
    return (
        len(policy.callers.namespaces)
        + len(policy.targets_by_principal.exact)
        + len(policy.targets_by_principal.namespaces)
        + len(policy.targets_by_host)
        + len(policy.egress_hosts)
        + len(policy.rule_headers)
    )


def test_an_object_without_a_reducer_is_refused() -> None:
    """Rule 1, sending: a part of a set the module does not know is an error, not a guess."""

    @dataclasses.dataclass
    class Stranger:
        name: str

    with pytest.raises(TypeError, match="Stranger, which has no reducer"):
        transfer._Sender(io.BytesIO()).send(("rows", "profiles", [("x", Stranger("x"))]))


@pytest.mark.parametrize("sent", [os.system, eval, Path, dataclasses.replace])
def test_a_global_that_is_not_a_sets_part_is_refused(sent: object) -> None:
    """Rule 1, receiving: a pickle naming any other callable is refused before it is called."""
    with pytest.raises(pickle.UnpicklingError, match="not a set's part"):
        receive(io.BytesIO(pickle.dumps(("set", sent))))


def test_a_broken_set_is_refused_with_every_error_as_in_process(write_policies: Callable[..., Path]) -> None:
    """Rule 4: the same errors, with their files and lines."""
    directory = write_policies(
        a="apiVersion: mandate.dev/v1alpha1\nkind: MissionProfile\nmetadata: {name: a}\nspec: {principals: [x]}\n",
        b="not: [valid\n",
    )
    with pytest.raises(PolicyLoadError) as here:
        compile_directory(directory)
    with pytest.raises(PolicyLoadError) as there:
        compile_elsewhere(str(directory))
    assert [str(error) for error in there.value.errors] == [str(error) for error in here.value.errors]
    assert len(there.value.errors) >= 2


def test_a_child_that_fails_is_reported_with_its_traceback() -> None:
    failed = io.BytesIO()
    transfer._Sender(failed).send(("failed", "Traceback ...\nMemoryError"))
    failed.seek(0)
    with pytest.raises(TransferError, match="failed:\nTraceback ...\nMemoryError"):
        receive(failed)


def test_a_child_that_takes_too_long_is_killed(generated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transfer, "TIMEOUT", 0.05)
    with pytest.raises(TransferError, match=r"killed after 0 s"):
        compile_elsewhere(str(generated))


def test_a_child_that_dies_mid_set_is_reported(generated: Path) -> None:
    out = io.BytesIO()
    send(compile_directory(generated), transfer._Sender(out))
    with pytest.raises((EOFError, pickle.UnpicklingError)):
        receive(io.BytesIO(out.getvalue()[: len(out.getvalue()) // 2]))


def test_the_childs_warnings_reach_the_servers_log(
    write_policies: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    directory = write_policies(
        a="apiVersion: mandate.dev/v1alpha1\nkind: MissionProfile\nmetadata: {name: a}\n"
        "spec: {mission: m, principals: ['spiffe://cluster.local/ns/a/sa/a']}\n"
    )
    logged = io.BytesIO()
    sender = transfer._Sender(logged)
    transfer._Forward(sender).emit(_record("secret file /x is empty"))
    send(compile_directory(directory), sender)
    logged.seek(0)
    with caplog.at_level("WARNING", logger="mandate"):
        receive(logged)
    assert "compiling process: secret file /x is empty" in caplog.text


def _record(message: str) -> Any:
    import logging

    return logging.LogRecord("mandate", logging.WARNING, __file__, 1, message, None, None)
