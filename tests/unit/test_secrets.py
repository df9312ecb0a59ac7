"""Secret files (`{secret:PATH}`): read at load, re-read on change, the last good value kept when a
change leaves nothing usable, and the content in nothing but `.value` (SPEC §12)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from authz.policy.secrets import APPLIED, KEPT, MAX_SECRET_BYTES, SecretError, SecretFile, Secrets

CANARY = "sk-canary-6f1d0c0ffee"


def replace_atomically(path: Path, text: str) -> None:
    """As a deploy tool or Kubernetes does: write beside, then rename over (a new inode)."""
    beside = path.with_name(path.name + ".new")
    beside.write_text(text)
    os.replace(beside, path)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "key"
    path.write_text(f"  {CANARY}\n")
    return path


def test_the_value_is_the_file_trimmed(key_file: Path) -> None:
    assert SecretFile(str(key_file)).value == CANARY


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "is empty"),
        (" \n\t\n", "is empty"),
        ("line one\nline two", "line break"),
        ("nul\x00inside", "control character"),
        ("clé", "not ASCII"),
        ("x" * (MAX_SECRET_BYTES + 1), "larger than"),
    ],
)
def test_a_file_that_gives_no_header_value_is_refused_without_showing_it(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "key"
    path.write_text(content)
    with pytest.raises(SecretError, match=problem) as raised:
        SecretFile(str(path))
    assert str(path) in str(raised.value)
    assert content.strip() == "" or content.strip()[:8] not in str(raised.value)


def test_a_relative_or_missing_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="must be absolute"):
        SecretFile("keys/openai")
    with pytest.raises(SecretError, match="No such file"):
        SecretFile(str(tmp_path / "absent"))


def test_a_file_replaced_atomically_is_in_use_at_the_next_look(key_file: Path) -> None:
    secret = SecretFile(str(key_file))
    assert secret.refresh() == ""
    replace_atomically(key_file, "sk-rotated\n")
    assert secret.refresh() == APPLIED
    assert secret.value == "sk-rotated"
    assert secret.refresh() == ""


def test_the_same_content_written_again_is_no_change(key_file: Path) -> None:
    secret = SecretFile(str(key_file))
    replace_atomically(key_file, CANARY)
    assert secret.refresh() == ""


@pytest.mark.parametrize("breaks", ["deleted", "emptied", "unreadable"])
def test_a_file_gone_or_emptied_keeps_the_last_good_value_and_says_so_once(
    key_file: Path, breaks: str, caplog: pytest.LogCaptureFixture
) -> None:
    secrets = Secrets()
    secret = secrets.file(str(key_file))
    if breaks == "deleted":
        key_file.unlink()
    elif breaks == "emptied":
        replace_atomically(key_file, "\n")
    else:  # a directory where the file was: unreadable as a file, even to root
        key_file.unlink()
        key_file.mkdir()
    with caplog.at_level(logging.INFO, logger="mandate"):
        assert secrets.refresh() == [KEPT]
        assert secrets.refresh() == []
    assert secret.value == CANARY
    assert secrets.stale == 1
    assert [record.levelname for record in caplog.records] == ["WARNING"]
    assert str(key_file) in caplog.text and CANARY not in caplog.text


def test_a_file_that_comes_back_is_in_use_again(key_file: Path) -> None:
    secrets = Secrets()
    secret = secrets.file(str(key_file))
    key_file.unlink()
    assert secrets.refresh() == [KEPT]
    key_file.write_text("sk-back")
    assert secrets.refresh() == [APPLIED]
    assert (secret.value, secrets.stale) == ("sk-back", 0)


def test_a_kubernetes_secret_volume_swap_is_seen_through_its_symlinks(tmp_path: Path) -> None:
    """A Secret volume: key -> ..data/key, ..data -> a timestamped directory swapped by rename."""
    first, second = tmp_path / "..2026_01", tmp_path / "..2026_02"
    first.mkdir()
    second.mkdir()
    (first / "key").write_text("sk-first")
    (second / "key").write_text("sk-second")
    (tmp_path / "..data").symlink_to(first.name)
    (tmp_path / "key").symlink_to("..data/key")
    secret = SecretFile(str(tmp_path / "key"))
    assert secret.value == "sk-first"
    (tmp_path / "..data_tmp").symlink_to(second.name)
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    assert secret.refresh() == APPLIED
    assert secret.value == "sk-second"


def test_one_file_per_path_however_many_headers_read_it(key_file: Path) -> None:
    secrets = Secrets()
    assert secrets.file(str(key_file)) is secrets.file(str(key_file))
    assert len(secrets.files) == 1


def test_a_secret_shows_its_path_never_its_value(key_file: Path) -> None:
    secret = SecretFile(str(key_file))
    assert CANARY not in repr(secret) and CANARY not in str(secret)
    assert str(key_file) in repr(secret)


# --- the offline tools without the Secrets (--no-secret-files) ---------------------------------

OFFLINE_POLICY = """
apiVersion: mandate.dev/v1alpha1
kind: Target
metadata: {name: web}
spec:
  kind: egress
  hosts: [api.example.com]
  requestHeaders: {set: {authorization: "Bearer {secret:%s}"}}
---
apiVersion: mandate.dev/v1alpha1
kind: MissionProfile
metadata: {name: alice}
spec:
  mission: calls the API
  principals: [spiffe://cluster.local/ns/alice/sa/alice]
  egress: [{host: api.example.com}]
"""


def offline_set(tmp_path: Path, secret: str) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir(exist_ok=True)
    (directory / "policy.yaml").write_text(OFFLINE_POLICY % secret)
    return directory


def test_ci_without_the_secrets_validates_tests_and_diffs_with_no_secret_files(tmp_path: Path, capsys) -> None:
    """`mandate validate` refuses a set whose secret file is missing (as `serve` does); with
    `--no-secret-files` the offline tools check the path and never open the file."""
    from authz.cli import main

    directory = offline_set(tmp_path, "/var/run/secrets/absent/token")
    assert main(["validate", str(directory)]) == 1
    assert "cannot read secret file /var/run/secrets/absent/token" in capsys.readouterr().err
    assert main(["validate", "--no-secret-files", str(directory)]) == 0
    assert main(["diff", "--no-secret-files", str(directory), str(directory), "--exit-code"]) == 0
    assert main(["test", "--no-secret-files", str(directory)]) == 2  # the set loads; it has no cases
    assert "no tests directory" in (err := capsys.readouterr().err) and "cannot read secret" not in err
    request = tmp_path / "request.yaml"
    request.write_text(
        "source: spiffe://cluster.local/ns/alice/sa/alice\nmethod: GET\nhost: api.example.com\npath: /\n"
    )
    assert main(["explain", "--no-secret-files", "--policies", str(directory), "--request", str(request)]) == 0
    assert "{secret:/var/run/secrets/absent/token}" in capsys.readouterr().out


def test_no_secret_files_still_refuses_a_relative_path_and_reads_nothing(tmp_path: Path, key_file: Path) -> None:
    from authz.policy.compiler import compile_directory
    from authz.policy.loader import PolicyLoadError

    with pytest.raises(PolicyLoadError, match="must be absolute"):
        compile_directory(offline_set(tmp_path, "relative/token"), read_secrets=False)
    policy = compile_directory(offline_set(tmp_path, str(key_file)), read_secrets=False)
    assert [secret.value for secret in policy.secrets.files.values()] == [""]  # the canary was never read
