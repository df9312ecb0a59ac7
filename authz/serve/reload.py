"""Hot reload (SPEC §7): validate the whole set, then swap one reference; and the secret files its
`requestHeaders` read (SPEC §12), looked at on the same tick.

Polling a cheap signature (names, inodes, sizes, mtimes of the files as resolved through
symlinks) notices both in-place edits and Kubernetes' `..data` symlink swap, without
inotify's blind spots for symlinked ConfigMap mounts. In-flight checks keep the snapshot
they started with, so none ever sees half of two sets.

A reload is shaped not to stall the Checks running beside it (measured by
loadtest/reload_stall.py): a child process compiles the set and this thread reads it a slice at a
time (authz/policy/transfer.py); the GIL changes hands every 0.5 ms instead of 5, the garbage
collector is paused while the set arrives and never walks it afterwards, and the replaced set is
freed a slice at a time (authz/serve/heap.py).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from authz.check.pipeline import Authorizer
from authz.policy.compiled import PolicySet
from authz.policy.compiler import collector_paused
from authz.policy.loader import PolicyLoadError
from authz.policy.secrets import APPLIED
from authz.policy.transfer import TransferError, compile_elsewhere
from authz.serve.heap import adopt, release, switching_often
from authz.serve.metrics import Metrics

log = logging.getLogger("mandate")


def directory_signature(directory: str) -> tuple[tuple[str, int, int, int], ...]:
    entries = []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return ()
    for name in names:
        if name.startswith(".") or not name.endswith((".yaml", ".yml")):
            continue
        try:
            stat = os.stat(Path(directory, name))  # follows the ConfigMap symlinks
        except OSError:
            continue
        entries.append((name, stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return tuple(entries)


class PolicyWatcher:
    def __init__(
        self,
        directory: str,
        authorizer: Authorizer,
        metrics: Metrics,
        interval: float = 0.4,
        compiler: Callable[[str], PolicySet] = compile_elsewhere,
    ) -> None:
        self.directory = directory
        self.compiler = compiler  # tests that reach into the compile pass compile_directory
        self.authorizer = authorizer
        self.metrics = metrics
        self.interval = interval
        self._signature = directory_signature(directory)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="policy-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def reload_now(self) -> None:
        """SIGHUP: reload on the watcher thread, even if nothing seems to have changed."""
        self._signature = ()
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            self.refresh_secrets()
            signature = directory_signature(self.directory)
            if signature == self._signature:
                continue
            # Debounce: an editor's truncate-then-write must not load a half-written file.
            self._stop.wait(self.interval / 2)
            if directory_signature(self.directory) != signature:
                continue
            self._signature = signature
            self.reload()

    def refresh_secrets(self) -> None:
        """Read the live set's changed secret files again. A new value gives the set fresh response
        templates and a fresh decision cache (the policy setter's), so no answer built with the old
        value is given again; a file that gives no value keeps the old one, counted as stale."""
        policy = self.authorizer.policy
        outcomes = policy.secrets.refresh()
        for outcome in outcomes:
            self.metrics.secret_reloads.labels(outcome).inc()
        self.metrics.secrets_stale.set(policy.secrets.stale)
        if APPLIED in outcomes and self.authorizer.policy is policy:
            self.authorizer.policy = policy

    def reload(self) -> bool:
        started = time.perf_counter()
        with switching_often():
            with collector_paused():  # from compiling until the new set is frozen (heap.adopt)
                policy = self._compile_or_report()
                if policy is None:
                    return False
                compiled = time.perf_counter() - started
                replaced = [self.authorizer.policy]
                self.authorizer.policy = policy
                adopt()
            released = time.perf_counter()
            release(replaced)
        self.metrics.reloads.labels("applied").inc()
        self.metrics.policy_errors.set(0)
        self.metrics.serving(policy.version)
        log.info(
            "policy reloaded: version %s, %d profiles, compiled in %.2f s, the old set freed in %.2f s",
            policy.version,
            len(policy.profiles),
            compiled,
            time.perf_counter() - released,
        )
        return True

    def _compile_or_report(self) -> PolicySet | None:
        """The directory compiled, or None with the reason logged and counted."""
        try:
            return self._compile_one_generation()
        except _StillChanging:
            log.warning(
                "policy directory %s kept changing while it was read; trying again at the next look", self.directory
            )
            self._signature = ()
        except PolicyLoadError as exc:
            self.metrics.reloads.labels("rejected").inc()
            self.metrics.policy_errors.set(len(exc.errors))
            for error in exc.errors:
                log.error("policy reload rejected, keeping version %s: %s", self.authorizer.policy.version, error)
        except TransferError as exc:
            self.metrics.reloads.labels("rejected").inc()
            log.error("policy reload failed, keeping version %s: %s", self.authorizer.policy.version, exc)
        except Exception:
            self.metrics.reloads.labels("rejected").inc()
            log.exception("policy reload failed, keeping version %s", self.authorizer.policy.version)
        return None

    def _compile_one_generation(self, attempts: int = 5) -> PolicySet:
        """Compile the directory, and make sure every file came from one generation of it.

        Files are read one by one, so a ConfigMap swap (or an editor) in the middle of a read
        could hand the compiler half the old set and half the new one, and that mix could even
        be valid. If the directory's signature moved while it was read, the result is dropped
        and the directory read again; errors from such a read are not reported either.
        """
        for _ in range(attempts):
            before = directory_signature(self.directory)
            try:
                policy = self.compiler(self.directory)
            except Exception:
                if directory_signature(self.directory) == before:
                    self._signature = before
                    raise
                continue
            if directory_signature(self.directory) == before:
                self._signature = before
                return policy
        raise _StillChanging


class _StillChanging(Exception):
    """The policy directory changed during every attempt to read it."""
