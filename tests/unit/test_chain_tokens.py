"""Chain tokens `<id>.<mac>` and the key file behind them (SPEC §5 "Header").

A token is either genuine (its id comes back) or `ForgedToken`: never another exception,
whatever text a client puts in the header.
"""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.chains.tokens import ChainKeys, ForgedToken, KeyFileError, chain_id_of

KEY_1 = "11" * 32
KEY_2 = "ab" * 40  # longer than the minimum is fine
B64URL = string.ascii_letters + string.digits + "-_"
HEX = "0123456789abcdef"
_FIXED_KEYS = ChainKeys([bytes.fromhex(KEY_1)])
_FIXED_ID = _FIXED_KEYS.new_id()
_FIXED_TOKEN = _FIXED_KEYS.sign(_FIXED_ID)


def key_file(tmp_path, text: str, name: str = "chain.key"):
    path = tmp_path / name
    path.write_text(text)
    return path


# --- sign / verify ------------------------------------------------------------------------


def test_round_trip():
    keys = ChainKeys.ephemeral()
    chain_id = keys.new_id()
    token = keys.sign(chain_id)
    assert token.startswith(chain_id + ".")
    assert keys.verify(token) == chain_id


def test_ids_are_unguessable_and_distinct():
    keys = ChainKeys.ephemeral()
    ids = {keys.new_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(i) == 36 and set(i) <= set(HEX) for i in ids)  # hex: never a leading "-" on a command line


def test_sign_is_deterministic_per_key_and_differs_across_keys(tmp_path):
    one = ChainKeys.from_file(key_file(tmp_path, KEY_1 + "\n"))
    again = ChainKeys.from_file(key_file(tmp_path, KEY_1 + "\n", "again.key"))
    other = ChainKeys.from_file(key_file(tmp_path, KEY_2 + "\n", "other.key"))
    chain_id = one.new_id()
    assert one.sign(chain_id) == again.sign(chain_id)
    assert one.sign(chain_id) != other.sign(chain_id)
    with pytest.raises(ForgedToken):
        other.verify(one.sign(chain_id))


def test_chain_id_of_accepts_token_or_bare_id():
    keys = ChainKeys.ephemeral()
    chain_id = keys.new_id()
    assert chain_id_of(keys.sign(chain_id)) == chain_id
    assert chain_id_of(f"  {chain_id} ") == chain_id


# --- rotation -------------------------------------------------------------------------------


def test_rotation_first_key_signs_every_key_verifies(tmp_path):
    old = ChainKeys.from_file(key_file(tmp_path, KEY_1 + "\n", "old.key"))
    rotated = ChainKeys.from_file(key_file(tmp_path, f"{KEY_2}\n{KEY_1}\n", "rotated.key"))
    new_only = ChainKeys.from_file(key_file(tmp_path, KEY_2 + "\n", "new.key"))
    chain_id = old.new_id()
    issued_before = old.sign(chain_id)
    issued_after = rotated.sign(chain_id)
    assert issued_after != issued_before  # the prepended key signs
    assert issued_after == new_only.sign(chain_id)
    assert rotated.verify(issued_before) == chain_id  # tokens from before the rotation still verify
    assert rotated.verify(issued_after) == chain_id
    # the old key is dropped: its tokens are forgeries now
    with pytest.raises(ForgedToken, match="MAC"):
        new_only.verify(issued_before)
    assert new_only.verify(issued_after) == chain_id


def test_key_file_comments_blank_lines_and_whitespace(tmp_path):
    path = key_file(tmp_path, f"# rotated 2026-01\n\n  {KEY_2.upper()}  \n# old\n{KEY_1}\n")
    keys = ChainKeys.from_file(path)
    reference = ChainKeys.from_file(key_file(tmp_path, KEY_2 + "\n", "ref.key"))
    chain_id = keys.new_id()
    assert keys.sign(chain_id) == reference.sign(chain_id)  # upper-case hex is the same key


# --- tampering --------------------------------------------------------------------------------


def _replace(text: str, index: int) -> list[str]:
    return [text[:index] + c + text[index + 1 :] for c in B64URL if c != text[index]]


def test_tampering_any_character_of_the_id_is_forged():
    keys = ChainKeys.ephemeral()
    token = keys.sign(keys.new_id())
    chain_id, _, mac = token.partition(".")
    assert keys.verify(token) == chain_id  # remembered as genuine: its neighbours must still fail
    for index in range(len(chain_id)):
        for tampered in _replace(chain_id, index)[:8]:
            with pytest.raises(ForgedToken):
                keys.verify(f"{tampered}.{mac}")


def test_tampering_any_character_of_the_mac_is_forged():
    keys = ChainKeys.ephemeral()
    token = keys.sign(keys.new_id())
    chain_id, _, mac = token.partition(".")
    assert keys.verify(token) == chain_id
    for index in range(len(mac)):  # every position, including the last (it carries 2 padding bits)
        for tampered in _replace(mac, index):
            with pytest.raises(ForgedToken):
                keys.verify(f"{chain_id}.{tampered}")


def test_swapping_macs_between_tokens_is_forged():
    keys = ChainKeys.ephemeral()
    first, second = keys.sign(keys.new_id()), keys.sign(keys.new_id())
    with pytest.raises(ForgedToken):
        keys.verify(first.split(".")[0] + "." + second.split(".")[1])


# --- malformed ---------------------------------------------------------------------------------


def malformed_variants(token: str) -> list[str]:
    chain_id, _, mac = token.partition(".")
    return [
        "",
        ".",
        chain_id,
        chain_id + ".",
        "." + mac,
        mac,
        f"{chain_id}.{mac}.",
        f"{chain_id}.{mac}.{mac}",
        f"{chain_id}..{mac}",
        f"x{chain_id}.{mac}",
        f"{chain_id}.{mac}x",
        f"{chain_id[:-1]}.{mac}",
        f"{chain_id}.{mac[:-1]}",
        f" {token}",
        f"{token} ",
        f"{chain_id} .{mac}",
        f"{chain_id}. {mac}",
        f"{token}\n",
        f"{token}\r\n",
        f"\n{token}",
        f"{token}\x00",
        f"{token},{token}",  # a duplicated header, joined as HTTP joins them
        f"{token}, {token}",
        f"{token},",
        f"Bearer {token}",
        token + "=",  # base64 padding is not part of the form
        f"{chain_id}={'.'}{mac}",
        token.upper() if token.upper() != token else token + "A",
        token * 2,
        "a" * 36 + "." + "A" * 43 + "A" * 10_000,  # overlong
        "A" * 100_000,
        "\u0430" * 36 + "." + mac,  # Cyrillic look-alikes
        chain_id.replace(chain_id[0], "\uff21", 1) + "." + mac,  # full-width A
        f"{chain_id}.{mac}".replace(".", "\u2024"),  # one-dot leader
    ]


def test_malformed_tokens_are_forged_never_another_error():
    keys = ChainKeys.ephemeral()
    token = keys.sign(keys.new_id())
    for text in malformed_variants(token):
        if text == token:
            continue
        try:
            keys.verify(text)
        except ForgedToken:
            continue
        pytest.fail(f"{text[:100]!r} verified as a genuine token")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_is_forged(text):
    with pytest.raises(ForgedToken):
        _FIXED_KEYS.verify(text)


@settings(max_examples=200, deadline=None)
@given(
    prefix=st.text(max_size=5),
    suffix=st.text(max_size=5),
    cut=st.integers(min_value=0, max_value=66),
    insert=st.text(min_size=1, max_size=3),
)
def test_near_misses_of_a_genuine_token_are_forged(prefix, suffix, cut, insert):
    """Edits around and inside a real token: only the exact token verifies."""
    token = _FIXED_TOKEN
    for text in (prefix + token + suffix, token[:cut] + insert + token[cut:], token[:cut] + token[cut + 1 :]):
        if text == token:
            assert _FIXED_KEYS.verify(text) == _FIXED_ID
            continue
        with pytest.raises(ForgedToken):
            _FIXED_KEYS.verify(text)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=HEX, min_size=36, max_size=36), st.text(alphabet=B64URL, min_size=43, max_size=43))
def test_well_formed_but_unsigned_tokens_are_forged(chain_id, mac):
    with pytest.raises(ForgedToken, match="MAC"):
        _FIXED_KEYS.verify(f"{chain_id}.{mac}")


# --- key file errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line"),
    [
        pytest.param("ab" * 31 + "\n", 1, id="short key (62 hex)"),
        pytest.param("a" * 63 + "\n", 1, id="short odd key"),
        pytest.param(KEY_1[:-1] + "g\n", 1, id="non-hex"),
        pytest.param("0x" + KEY_1 + "\n", 1, id="0x prefix"),
        pytest.param("a" * 65 + "\n", 1, id="odd length"),
        pytest.param(f"{KEY_1}\n\n# comment\n{KEY_1[:-2]}zz\n", 4, id="bad second key on line 4"),
        pytest.param(f"{KEY_1}\nsecret-passphrase-of-sixty-four-characters-exactly-xxxxxxxxxxxx\n", 2, id="passphrase"),
        pytest.param(f"{KEY_1[:32]} {KEY_1[32:]}\n", 1, id="space inside key"),
    ],
)
def test_bad_key_line_is_reported_with_path_and_line(tmp_path, text, line):
    path = key_file(tmp_path, text)
    with pytest.raises(KeyFileError) as caught:
        ChainKeys.from_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert "64" in message and "hex" in message


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "   \n# x\n"])
def test_empty_key_file(tmp_path, text):
    path = key_file(tmp_path, text)
    with pytest.raises(KeyFileError) as caught:
        ChainKeys.from_file(path)
    assert str(caught.value).startswith(f"{path}: no keys"), caught.value


def test_missing_key_file(tmp_path):
    path = tmp_path / "absent.key"
    with pytest.raises(KeyFileError) as caught:
        ChainKeys.from_file(path)
    assert str(caught.value).startswith(f"{path}: cannot read"), caught.value


def test_unreadable_key_file(tmp_path):
    path = key_file(tmp_path, KEY_1)
    path.write_bytes(b"\xff\xfe" + KEY_1.encode())  # not ASCII
    with pytest.raises(KeyFileError, match=str(path)):
        ChainKeys.from_file(path)
    directory = tmp_path / "a-directory"
    directory.mkdir()
    with pytest.raises(KeyFileError, match="cannot read"):
        ChainKeys.from_file(directory)


def test_key_file_without_trailing_newline(tmp_path):
    keys = ChainKeys.from_file(key_file(tmp_path, KEY_1))
    chain_id = keys.new_id()
    assert keys.verify(keys.sign(chain_id)) == chain_id


def test_no_keys_at_all():
    with pytest.raises(KeyFileError):
        ChainKeys([])


def test_ephemeral_keys_differ():
    first, second = ChainKeys.ephemeral(), ChainKeys.ephemeral()
    chain_id = first.new_id()
    with pytest.raises(ForgedToken):
        second.verify(first.sign(chain_id))


def test_a_remembered_token_stays_bound_to_its_keys_and_the_memory_stays_bounded(monkeypatch):
    monkeypatch.setattr("authz.chains.tokens.REMEMBERED_TOKENS", 3)
    keys, other = ChainKeys.ephemeral(), ChainKeys.ephemeral()
    tokens = [keys.sign(keys.new_id()) for _ in range(10)]
    for _ in range(2):
        assert [keys.verify(token) for token in tokens] == [chain_id_of(token) for token in tokens]
    assert len(keys._genuine) <= 3
    for token in tokens:
        with pytest.raises(ForgedToken):
            other.verify(token)  # genuine under `keys` only
        with pytest.raises(ForgedToken):
            keys.verify(token + "\n")
