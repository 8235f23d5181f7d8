"""One libvirt connection shared by the libvirt-facing collectors, kept alive and reopened when it drops.

* libvirt's default event loop is registered once per process (before the first ``open``, as libvirt requires
  for events and keepalive) and run in its own daemon thread.
* Keepalive probes make a libvirtd that died or hung without closing the socket visible within
  ``interval * (count + 1)`` seconds; the close callback then marks the connection dead.
* Reopening is rate-limited by a capped exponential backoff so a dead libvirtd costs one failed ``connect()``
  per backoff step, and a scrape meanwhile fails at once instead of waiting.
* Nothing that can block on libvirtd runs under the connection's lock: ``virConnectOpen`` to a hung libvirtd
  never returns (keepalive only starts once it is open), so it runs in its own thread and callers wait at most
  ``open_timeout``; closing a connection (an RPC too) happens in the background.
* Domain event callbacks are remembered and registered again on every new connection. libvirt-python refuses a
  second registration of the same event id on one connection, so one dispatcher per event id fans out to all.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import libvirt

from common.backoff import Backoff

log = logging.getLogger(__name__)

_loop_lock = threading.Lock()
_loop_thread: threading.Thread | None = None


def _silence(_ctx: Any, _err: Any) -> None:
    """libvirt prints every error to stderr by default; we log the ones that matter ourselves."""


def ensure_event_loop() -> None:
    """Register libvirt's default event loop implementation and run it, once per process."""
    global _loop_thread
    with _loop_lock:
        if _loop_thread is not None:
            return
        libvirt.registerErrorHandler(_silence, None)
        libvirt.virEventRegisterDefaultImpl()
        _loop_thread = threading.Thread(target=_run_loop, name="libvirt-events", daemon=True)
        _loop_thread.start()


def _run_loop() -> None:
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except libvirt.libvirtError as exc:  # one bad iteration must not end event delivery for good
            log.warning("libvirt event loop iteration failed", extra={"error": str(exc)})
            time.sleep(0.1)


class LibvirtUnavailable(Exception):
    """libvirt cannot be reached now; the message says why (and when the next attempt is)."""


@dataclass
class _Opening:
    """One ``virConnectOpen`` in flight in its own thread."""

    started: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    error: str = ""


class LibvirtConnection:
    """Lazily opened, self-healing connection. ``get()`` returns a live ``virConnect`` or raises LibvirtUnavailable
    within ``open_timeout`` seconds."""

    def __init__(self, uri: str, keepalive_interval: int = 5, keepalive_count: int = 3,
                 backoff: Backoff | None = None, open_timeout: float = 5.0) -> None:
        self.uri = uri
        self.keepalive = (keepalive_interval, keepalive_count)
        self.backoff = backoff or Backoff()
        self.open_timeout = open_timeout
        self._conn: libvirt.virConnect | None = None
        self._opening: _Opening | None = None
        self._lock = threading.RLock()
        self._events: dict[int, list[Callable[..., Any]]] = {}
        self._reconnect_listeners: list[Callable[[], None]] = []
        self.last_error = ""
        self.generation = 0  # bumped on every successful open; lets users drop state tied to the old connection

    @property
    def up(self) -> bool:
        with self._lock:
            return self._conn is not None and self._alive(self._conn)

    def get(self, wait: bool = True) -> libvirt.virConnect:
        """The live connection; while there is none, (re)open it, waiting at most ``open_timeout`` (or not at all
        with ``wait=False``: the open goes on in the background and the caller fails now)."""
        with self._lock:
            if self._conn is not None and self._alive(self._conn):
                return self._conn
            self._drop()
            opening = self._opening or self._start_open()
        # Wait without the lock, and only for what is left of this open's budget: a second caller during a hung
        # open fails at once instead of waiting again.
        remaining = opening.started + self.open_timeout - time.monotonic() if wait else 0.0
        if not opening.done.wait(max(0.0, remaining)):
            raise LibvirtUnavailable(f"libvirt {self.uri}: no answer to connect within {self.open_timeout:g}s "
                                     "(libvirtd hung?)")
        with self._lock:
            if self._conn is not None:
                return self._conn
        raise LibvirtUnavailable(f"cannot connect to {self.uri}: {opening.error}")

    def _start_open(self) -> _Opening:
        if not self.backoff.ready():
            raise LibvirtUnavailable(f"libvirt {self.uri} unreachable ({self.last_error}); "
                                     f"next reconnect in {self.backoff.next_attempt - self.backoff.clock():.1f}s")
        self._opening = _Opening()
        threading.Thread(target=self._open, args=(self._opening,), name="libvirt-open", daemon=True).start()
        return self._opening

    def mark_failed(self, exc: libvirt.libvirtError) -> None:
        """A call on the connection failed: if the failure is the connection itself, drop it for a reopen."""
        if exc.get_error_domain() in (libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE) or \
                exc.get_error_code() in (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_NO_CONNECT,
                                         libvirt.VIR_ERR_INVALID_CONN):
            with self._lock:
                self.last_error = str(exc)
                self._drop()

    def on_domain_event(self, event_id: int, callback: Callable[..., Any]) -> None:
        """Register ``callback`` for ``event_id`` now (if connected) and on every future connection."""
        with self._lock:
            first = event_id not in self._events
            self._events.setdefault(event_id, []).append(callback)
            conn = self._conn
        if first and conn is not None:
            self._register(conn, event_id)

    def on_reconnect(self, listener: Callable[[], None]) -> None:
        """Called after each new connection: events may have been missed while disconnected."""
        with self._lock:
            self._reconnect_listeners.append(listener)

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _open(self, opening: _Opening) -> None:
        """In its own thread: may block for as long as libvirtd does."""
        ensure_event_loop()
        try:
            conn = libvirt.open(self.uri)
            self._setup(conn)
        except libvirt.libvirtError as exc:
            with self._lock:
                self.last_error = opening.error = str(exc)
                self.backoff.failed()
                self._opening = None
            opening.done.set()
            log.warning("libvirt connection failed", extra={"uri": self.uri, "error": str(exc),
                                                             "retry_in_seconds": self.backoff.delay})
            return
        with self._lock:
            self._conn = conn
            self.generation += 1
            self.backoff.reset()
            self._opening = None
            listeners = list(self._reconnect_listeners)
        log.info("libvirt connected", extra={"uri": self.uri, "generation": self.generation})
        for listener in listeners:
            listener()
        opening.done.set()

    def _setup(self, conn: libvirt.virConnect) -> None:
        try:
            conn.setKeepAlive(*self.keepalive)
        except libvirt.libvirtError:
            pass  # local drivers (test://, qemu:// embedded) have no RPC channel to keep alive
        try:
            conn.registerCloseCallback(self._closed, None)
        except libvirt.libvirtError:
            pass
        for event_id in self._events:
            self._register(conn, event_id)

    def _register(self, conn: libvirt.virConnect, event_id: int) -> None:
        def dispatch(*args: Any) -> None:
            for callback in list(self._events.get(event_id, ())):
                try:
                    callback(*args)
                except Exception:  # one broken listener must not starve the others or the event loop
                    log.exception("libvirt event callback failed", extra={"event_id": event_id})

        try:
            conn.domainEventRegisterAny(None, event_id, dispatch, None)
        except libvirt.libvirtError as exc:
            log.warning("cannot register libvirt domain events", extra={"uri": self.uri, "error": str(exc)})

    def _closed(self, conn: libvirt.virConnect, reason: int, _opaque: Any) -> None:
        # Runs in the event loop thread: only mark the connection dead, reopening happens on the next get().
        log.warning("libvirt connection closed", extra={"uri": self.uri, "reason": reason})
        with self._lock:
            if self._conn is conn:
                self.last_error = f"connection closed (reason {reason})"
                self._conn = None
                self.backoff.failed()

    @staticmethod
    def _alive(conn: libvirt.virConnect) -> bool:
        try:
            return bool(conn.isAlive())
        except libvirt.libvirtError:
            return False

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            # virConnectClose is an RPC: to a hung libvirtd it blocks, so never here, under the lock.
            threading.Thread(target=_close_quietly, args=(conn,), name="libvirt-close", daemon=True).start()


def _close_quietly(conn: libvirt.virConnect) -> None:
    try:
        conn.unregisterCloseCallback()
    except libvirt.libvirtError:
        pass
    try:
        conn.close()
    except libvirt.libvirtError:
        pass


def shared_connection(shared: dict[str, Any], uri: str) -> LibvirtConnection:
    """The process's connection for ``uri``, created by the first collector that asks (``ctx.shared``)."""
    key = f"libvirt.connection:{uri}"
    if key not in shared:
        shared[key] = LibvirtConnection(uri)
    return shared[key]
