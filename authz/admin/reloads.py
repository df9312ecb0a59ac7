"""The policy watcher `mandate serve` runs, remembering what its last reload did for the admin API.

A reload is the watcher's (authz/serve/reload.py): on a change, on SIGHUP, or on an admin Reload.
This subclass only takes note: when the live set was loaded, and whether the last attempt was
applied or rejected, with every error of a rejected set.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from authz.policy.compiled import PolicySet
from authz.policy.loader import PolicyLoadError
from authz.policy.transfer import TransferError
from authz.serve.reload import PolicyWatcher


@dataclass(frozen=True)
class ReloadResult:
    applied: bool
    version: str  # the live version after it
    errors: tuple[str, ...]  # every `file:line: message` of a rejected set
    at: float  # unix seconds


class RecordingWatcher(PolicyWatcher):
    """`after`, if given, runs after every reload attempt (a `--workers` worker tells its
    supervisor which set it serves)."""

    def __init__(self, *args: object, after: Callable[[], None] | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._after = after
        self._reloading = threading.Lock()  # the watcher thread and an admin Reload take turns
        self._errors: list[str] = []
        self.loaded_at = time.time()  # the first set was loaded just before the watcher was made
        self.last_result: ReloadResult | None = None

    def reload(self) -> bool:
        with self._reloading:
            self._errors = []
            applied = super().reload()
            now = time.time()
            if applied:
                self.loaded_at = now
            elif not self._errors:
                self._errors = ["the reload failed before the set was read; see the server's log"]
            self.last_result = ReloadResult(applied, self.authorizer.policy.version, tuple(self._errors), now)
            if self._after is not None:
                self._after()
            return applied

    def refresh_secrets(self) -> None:
        """In turn with reloads: a set an admin Reload just put in place is never swapped back."""
        with self._reloading:
            super().refresh_secrets()

    def _compile_one_generation(self, attempts: int = 5) -> PolicySet:
        """The watcher's compile, with a rejected set's errors kept for `last_result`."""
        try:
            return super()._compile_one_generation(attempts)
        except PolicyLoadError as exc:
            self._errors = [str(error) for error in exc.errors]
            raise
        except TransferError as exc:
            self._errors = [str(exc)]
            raise
