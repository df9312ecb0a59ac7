"""A policy set compiled in a child process and sent to the server that serves it.

Compiling a large set takes tens of seconds of CPU. Done in the server, that work takes the GIL
from the Checks running beside it for the whole time; done here, in a child process, the
server only reads the finished set, a small slice at a time, letting Checks run between slices
(ANALYSIS.md, "100,000 profiles"). `compile_elsewhere` is the server's side, `main` the child's.

Rules:

1. Only classes listed in `REDUCERS` cross, each rebuilt through its own constructor: the sender
   refuses any other object, and the receiver resolves no other global. An object received is
   one the compiler could have built.
2. What belongs to one process is made afresh on arrival, never copied: a `when`'s remembered
   answers, the user tokens verified, a JWKS URL's fetched keys (the receiver's own source for
   that URL). Files (secrets, JWKS) are read again by the receiver.
3. The set's tables cross in slices of SLICE rows; the receiver pauses between slices, so no
   Check waits for more than one slice.
4. Whatever goes wrong in the child reaches the caller as an exception, and the set in service
   stays: PolicyLoadError with every error, as in process, or TransferError saying why.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import IO, Any

from authz.check.protocols.a2a import A2aRouter
from authz.policy import compiled
from authz.policy.compiled import PolicySet, PrincipalIndex
from authz.policy.compiler import collector_paused, compile_directory
from authz.policy.conditions import Condition, Results
from authz.policy.globs import GlobSet
from authz.policy.headers import HeaderValue, Piece, RequestHeaders
from authz.policy.loader import PolicyError, PolicyLoadError
from authz.policy.secrets import SecretFile, Secrets
from authz.users.keys import FileKeys, RemoteKeys, remote_keys
from authz.users.verify import Issuer, UserSettings

log = logging.getLogger("mandate")

SLICE = 25  # rows per message: each unpickled in well under a millisecond (ANALYSIS.md)
PAUSE = 0.000_5  # seconds the receiver sleeps between slices
TIMEOUT = 900.0  # seconds a child may take before it is killed and the reload rejected
# PolicySet fields that are large tables, sent row by row before the rest of the set.
TABLES = ("profiles", "targets", "targets_by_host", "egress_hosts", "rule_headers")
INDEXES = ("callers", "targets_by_principal")  # PrincipalIndex fields: their two tables each


class TransferError(RuntimeError):
    """The child did not deliver a set; the message says why (its exit, its traceback)."""


def _secrets(files: dict[str, SecretFile]) -> Secrets:
    """The set's files, each the one object its headers read (each read again on arrival)."""
    secrets = Secrets()
    secrets.files.update(files)
    return secrets


def _index(exact: dict[str, Any], namespaces: dict[str, Any]) -> PrincipalIndex[Any]:
    index: PrincipalIndex[Any] = PrincipalIndex()
    index.exact, index.namespaces = exact, namespaces
    return index


def _fields(value: Any) -> tuple[Any, ...]:
    return tuple(getattr(value, field.name) for field in dataclasses.fields(value))


Reducer = Callable[[Any], tuple[Callable[..., Any], tuple[Any, ...]]]
REDUCERS: dict[type, Reducer] = {
    GlobSet: lambda globs: (GlobSet, (globs.patterns,)),
    Condition: lambda condition: (Condition, (condition.source, condition._results)),
    Results: lambda _: (Results, ()),
    A2aRouter: lambda router: (A2aRouter, (router.jsonrpc_path, router.rest_prefix, router.card_path)),
    Piece: lambda piece: (Piece, (piece.kind, piece.text, piece.secret)),
    HeaderValue: lambda value: (HeaderValue, (value.written, value.pieces)),
    RequestHeaders: lambda headers: (RequestHeaders, (headers.to_set, headers.to_remove)),
    SecretFile: lambda secret: (SecretFile, (secret.path,)),
    Secrets: lambda secrets: (_secrets, (secrets.files,)),
    UserSettings: lambda users: (UserSettings, (users.header, users.groups_claim, users.issuers)),
    Issuer: lambda issuer: (Issuer, (issuer.name, issuer.audiences, issuer.algorithms, issuer.keys)),
    FileKeys: lambda keys: (FileKeys, (keys.path,)),
    RemoteKeys: lambda keys: (remote_keys, (keys.uri, keys.ca_file)),
    PrincipalIndex: lambda index: (_index, (index.exact, index.namespaces)),
    **{
        kind: lambda value: (type(value), _fields(value))
        for kind in vars(compiled).values()
        if isinstance(kind, type) and dataclasses.is_dataclass(kind) and kind.__module__ == compiled.__name__
    },
}


def _made(number: int, maker: Callable[..., Any], arguments: tuple[Any, ...]) -> Any:
    """Named in the stream for each of Mandate's objects; a receiver resolves it to its own."""
    raise pickle.UnpicklingError("_made is resolved by a _Receiver")


_MAKERS: tuple[Callable[..., Any], ...] = (*REDUCERS, _secrets, _index, remote_keys, _made)
_GLOBALS = {(maker.__module__, getattr(maker, "__qualname__", "")): maker for maker in _MAKERS}


class _Sender(pickle.Pickler):
    """Each message its own pickle (a memo per message, so the receiver never frees a large
    one in one go); an object of Mandate's is numbered when first sent and referred to by
    number afterwards, in any later message."""

    def __init__(self, file: IO[bytes]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._numbers: dict[int, int] = {}
        self._sent: list[Any] = []  # alive while their ids are keys above

    def send(self, message: tuple[Any, ...]) -> None:
        self.dump(message)
        self.clear_memo()

    def persistent_id(self, obj: Any) -> int | None:
        return self._numbers.get(id(obj)) if type(obj) in REDUCERS else None

    def reducer_override(self, obj: Any) -> Any:
        reducer = REDUCERS.get(type(obj))
        if reducer is not None:
            number = self._numbers[id(obj)] = len(self._sent)
            self._sent.append(obj)
            return (_made, (number, *reducer(obj)))
        name = (getattr(obj, "__module__", ""), getattr(obj, "__qualname__", ""))
        if callable(obj) and _GLOBALS.get(name) is obj:
            return NotImplemented  # a constructor named by reference
        raise TypeError(f"a compiled set holds a {type(obj).__qualname__}, which has no reducer in transfer.py")


class _Receiver:
    """Reads the messages of one stream, each with an unpickler of its own (and so a memo of
    its own), the objects of Mandate's shared between them by number."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.made: dict[int, Any] = {}

    def receive(self) -> Any:
        return _Unpickler(self).load()

    def make(self, number: int, maker: Callable[..., Any], arguments: tuple[Any, ...]) -> Any:
        made = self.made[number] = maker(*arguments)
        return made

    def let_go(self) -> None:
        """Drop the numbering a slice at a time: at 100,000 profiles it holds a million objects."""
        made = self.made
        while made:
            for _ in range(min(len(made), 1_000)):
                made.popitem()
            time.sleep(0)


class _Unpickler(pickle.Unpickler):
    def __init__(self, receiver: _Receiver) -> None:
        super().__init__(receiver.stream)
        self.receiver = receiver

    def persistent_load(self, pid: Any) -> Any:
        found = self.receiver.made.get(pid)
        if found is None:
            raise pickle.UnpicklingError(f"the compiling process referred to object {pid!r} before sending it")
        return found

    def find_class(self, module: str, name: str) -> Any:
        found = _GLOBALS.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"the compiling process sent {module}.{name}, which is not a set's part")
        return self.receiver.make if found is _made else found


# --- the child ---------------------------------------------------------------------------


def send(policy: PolicySet, sender: _Sender) -> None:
    """The set as slices of its tables' rows, then the rest of it (its tables empty)."""
    for name in TABLES:
        _send_rows(sender, name, getattr(policy, name))
    for name in INDEXES:
        index = getattr(policy, name)
        _send_rows(sender, f"{name}.exact", index.exact)
        _send_rows(sender, f"{name}.namespaces", index.namespaces)
    empty: dict[str, Any] = {name: {} for name in TABLES}
    empty.update({name: PrincipalIndex() for name in INDEXES})
    sender.send(("set", dataclasses.replace(policy, **empty)))


def _send_rows(sender: _Sender, table: str, rows: dict[str, Any]) -> None:
    items = list(rows.items())
    for start in range(0, len(items), SLICE):
        sender.send(("rows", table, items[start : start + SLICE]))


class _Forward(logging.Handler):
    """The child's log records, sent to the server to log as its own."""

    def __init__(self, sender: _Sender) -> None:
        super().__init__()
        self.sender = sender

    def emit(self, record: logging.LogRecord) -> None:
        self.sender.send(("log", record.levelno, record.getMessage()))


def main(argv: list[str] | None = None) -> None:
    """`python -m authz.policy.transfer DIRECTORY`: compile it, the set to stdout."""
    (directory,) = argv if argv is not None else sys.argv[1:]
    out = sys.stdout.buffer
    sender = _Sender(out)
    logging.getLogger().handlers = [_Forward(sender)]
    try:
        with collector_paused():
            policy = compile_directory(directory)
            send(policy, sender)
    except PolicyLoadError as exc:
        sender.send(("errors", [(e.file, e.line, e.message, e.document) for e in exc.errors]))
    except Exception:  # noqa: BLE001 - the server reports it and keeps its set
        sender.send(("failed", traceback.format_exc(limit=8)))
    out.flush()


# --- the server ------------------------------------------------------------------------


def compile_elsewhere(directory: str) -> PolicySet:
    """`compile_directory(directory)`, done by a child process (rules 3 and 4)."""
    command = [sys.executable, "-m", "authz.policy.transfer", str(directory)]
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    timer = threading.Timer(TIMEOUT, child.kill)
    timer.start()
    try:
        assert child.stdout is not None
        return receive(child.stdout)
    except (EOFError, pickle.UnpicklingError) as exc:
        code = child.wait()
        why = f"killed after {TIMEOUT:.0f} s" if timer.finished.is_set() and code < 0 else f"exit {code}"
        raise TransferError(f"the compiling process ended without a set ({why}): {exc}") from None
    finally:
        timer.cancel()
        child.kill()
        child.wait()


def receive(stream: IO[bytes]) -> PolicySet:
    """Read what `send` wrote, a slice at a time (rule 3); raises what the child reported."""
    receiver = _Receiver(stream)
    try:
        with collector_paused():
            return _read(receiver)
    finally:
        receiver.let_go()


def _read(receiver: _Receiver) -> PolicySet:
    tables: dict[str, dict[str, Any]] = {}
    while True:
        message = receiver.receive()
        kind = message[0]
        if kind == "rows":
            tables.setdefault(message[1], {}).update(message[2])
            time.sleep(PAUSE)
        elif kind == "log":
            log.log(message[1], "compiling process: %s", message[2])
        elif kind == "set":
            return _assembled(message[1], tables)
        elif kind == "errors":
            raise PolicyLoadError([PolicyError(*error) for error in message[1]])
        else:
            raise TransferError(f"the compiling process failed:\n{message[1]}")


def _assembled(rest: PolicySet, tables: dict[str, dict[str, Any]]) -> PolicySet:
    parts: dict[str, Any] = {name: tables.get(name, {}) for name in TABLES}
    for name in INDEXES:
        parts[name] = _index(tables.get(f"{name}.exact", {}), tables.get(f"{name}.namespaces", {}))
    return dataclasses.replace(rest, **parts)


if __name__ == "__main__":
    from authz.policy.transfer import main as imported  # its constructors named as the receiver names them

    imported()
    os._exit(0)  # the set is sent: not freed object by object on the way out, a core's work beside the Checks
