"""The output's lock: one object, ``OUT.zarr/.nnunetv2_topo.lock``, created exclusively in the store, so that exactly
one process creates (or replaces) the output and exactly one finalizes it.

- Created with fsspec's ``pipe_file(..., mode="create")``: ``O_EXCL`` on a local or shared POSIX file system, a
  conditional write (``If-None-Match``) on object stores whose fsspec backend supports it (s3fs does).
- The holder rewrites the lock's time every ``stale_s / 4`` seconds (a heartbeat thread) and checks before each step
  that the lock is still its own. A lock whose time is older than ``stale_s`` (default 300 s,
  ``NNUNETV2_TOPO_LOCK_STALE_S``) belongs to a killed process and is taken over: the taker first creates
  ``.nnunetv2_topo.lock-takeover/<the stale owner and time>`` exclusively, so that of several takers exactly one wins.
- Clocks of the machines that share an output must agree to well within ``stale_s``.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid

from nnunetv2_topo import errors
from nnunetv2_topo.io import atomic_path

LOCK = ".nnunetv2_topo.lock"
TAKEOVER = ".nnunetv2_topo.lock-takeover"
STALE_ENV = "NNUNETV2_TOPO_LOCK_STALE_S"


class ScrollOutputError(errors.OutputError):
    """The Zarr output of a scroll cannot be used for this run; the message names it, what differs and the fix."""


def stale_seconds() -> float:
    text = os.environ.get(STALE_ENV, "300")
    try:
        value = float(text)
    except ValueError:
        raise ScrollOutputError(f"{STALE_ENV}={text!r} is not a number of seconds; unset it or set e.g. 300") from None
    if value <= 0:
        raise ScrollOutputError(f"{STALE_ENV}={text!r} must be > 0 seconds")
    return value


class LockBusyError(ScrollOutputError):
    """Another live process holds the output's lock."""


class LockLostError(ScrollOutputError):
    """This process's lock was taken over (it looked stale to another process)."""


class StoreLock:
    """The lock of the output at ``url`` (see the module doc); a context manager once acquired."""

    def __init__(self, url: str, purpose: str, stale_s: float | None = None) -> None:
        import fsspec

        self.fs, root = fsspec.core.url_to_fs(url)
        self.url, self.root, self.purpose = url, root.rstrip("/"), purpose
        self.path = f"{self.root}/{LOCK}"
        self.stale_s = stale_seconds() if stale_s is None else stale_s
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        return json.dumps({"owner": self.token, "purpose": self.purpose, "time": time.time()}).encode()

    def holder(self) -> dict | None:
        """The lock's content (owner, purpose, time), None when there is no lock."""
        for _ in range(50):
            try:
                return json.loads(self.fs.cat_file(self.path))
            except FileNotFoundError:
                return None
            except ValueError:  # caught between a rewrite's truncation and its write
                time.sleep(0.01)
        return {"owner": "?", "purpose": "?", "time": time.time()}

    def _rewrite(self) -> None:
        """The heartbeat: a new time, replacing the lock in one step (a rename on a file system; object stores
        replace objects whole)."""
        if "file" in self.fs.protocol:
            with atomic_path(self.path) as tmp:
                tmp.write_bytes(self._body())
        else:
            self.fs.pipe_file(self.path, self._body())

    def _create_exclusive(self, path: str, data: bytes) -> bool:
        """Create ``path`` holding ``data``; False when it exists. On a file system this is ``O_EXCL`` (fsspec's
        local ``mode="create"`` checks, then writes: two threads or processes could both create); object stores get
        fsspec's ``mode="create"``."""
        if "file" in self.fs.protocol:
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return True
        try:
            self.fs.pipe_file(path, data, mode="create")
        except FileExistsError:
            return False
        return True

    def _create(self) -> bool:
        self.fs.makedirs(self.root, exist_ok=True)
        return self._create_exclusive(self.path, self._body())

    def try_acquire(self) -> bool:
        """Take the lock if it is free or stale; False when another live process holds it."""
        if self._create():
            self._start_heartbeat()
            return True
        held = self.holder()
        if held is None:
            return self.try_acquire()
        if time.time() - float(held.get("time", 0)) <= self.stale_s:
            return False
        marker = f"{self.root}/{TAKEOVER}/{held.get('owner', '?')}@{held.get('time')}".replace(":", "_")
        self.fs.makedirs(f"{self.root}/{TAKEOVER}", exist_ok=True)
        if not self._create_exclusive(marker, self.token.encode()):
            return False  # another process takes this stale lock over
        if self.holder() != held:
            return False
        self.fs.rm(self.path)
        return self.try_acquire()

    def acquire(self, wait_s: float, poll_s: float | None = None) -> StoreLock:
        """Take the lock, waiting up to ``wait_s`` seconds for a live holder; :class:`LockBusyError` after that."""
        poll_s = min(0.5, self.stale_s / 4) if poll_s is None else poll_s
        deadline = time.monotonic() + wait_s
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                held = self.holder() or {}
                age = time.time() - float(held.get("time", time.time()))
                raise LockBusyError(
                    f"{self.url} is locked by another process ({held.get('owner')}, {held.get('purpose')}, "
                    f"heartbeat {age:.0f} s ago); wait for it to finish, or, if that process is gone, retry after "
                    f"{self.stale_s:.0f} s ({STALE_ENV}) or delete {self.path}"
                )
            time.sleep(poll_s)
        return self

    def check(self) -> None:
        """Raise :class:`LockLostError` when the lock is no longer this process's."""
        held = self.holder()
        if held is None or held.get("owner") != self.token:
            raise LockLostError(
                f"the lock of {self.url} was taken over by {None if held is None else held.get('owner')} "
                f"(no heartbeat for {self.stale_s:.0f} s, {STALE_ENV}); this process stops, the other one goes on"
            )

    def _start_heartbeat(self) -> None:
        self._stop = threading.Event()

        def beat(stop: threading.Event) -> None:
            while not stop.wait(self.stale_s / 4):
                held = self.holder()
                if held is None or held.get("owner") != self.token:
                    return
                self._rewrite()

        self._thread = threading.Thread(target=beat, args=(self._stop,), daemon=True, name="nnunetv2_topo-lock")
        self._thread.start()

    def release(self) -> None:
        if self._stop is not None and self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._stop = self._thread = None
        held = self.holder()
        if held is not None and held.get("owner") == self.token:
            self.fs.rm(self.path)

    def __enter__(self) -> StoreLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
