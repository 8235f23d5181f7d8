"""One libvirt connection shared by the libvirt-facing collectors, kept alive and reopened when it drops.

* libvirt's default event loop is registered once per process (before the first ``open``, as libvirt requires
  for events and keepalive) and run in its own daemon thread.
* Keepalive probes make a libvirtd that died or hung without closing the socket visible within
  ``interval * (count + 1)`` seconds; the close callback then marks the connection dead.
* Reopening is rate-limited by a capped exponential backoff so a dead libvirtd costs one failed ``connect()``
  per backoff step, and a scrape meanwhile fails at once instead of waiting.
* Domain event callbacks are remembered and registered again on every new connection. libvirt-python refuses a
  second registration of the same event id on one connection, so one dispatcher per event id fans out to all.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import libvirt

from exporter.collectors.base import CollectorError

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


class Backoff:
    """Capped exponential backoff: ``initial`` doubling up to ``cap`` seconds; ``reset`` after a success."""

    def __init__(self, initial: float = 0.5, cap: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.initial, self.cap, self.clock = initial, cap, clock
        self.delay = 0.0
        self.next_attempt = 0.0

    def ready(self) -> bool:
        return self.clock() >= self.next_attempt

    def failed(self) -> None:
        self.delay = min(self.cap, self.delay * 2 if self.delay else self.initial)
        self.next_attempt = self.clock() + self.delay

    def reset(self) -> None:
        self.delay = 0.0
        self.next_attempt = 0.0


class LibvirtConnection:
    """Lazily opened, self-healing connection. ``get()`` returns a live ``virConnect`` or raises CollectorError."""

    def __init__(self, uri: str, keepalive_interval: int = 5, keepalive_count: int = 3,
                 backoff: Backoff | None = None) -> None:
        self.uri = uri
        self.keepalive = (keepalive_interval, keepalive_count)
        self.backoff = backoff or Backoff()
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.RLock()
        self._events: dict[int, list[Callable[..., Any]]] = {}
        self._reconnect_listeners: list[Callable[[], None]] = []
        self.last_error = ""
        self.generation = 0  # bumped on every successful open; lets users drop state tied to the old connection

    @property
    def up(self) -> bool:
        with self._lock:
            return self._conn is not None and self._alive(self._conn)

    def get(self) -> libvirt.virConnect:
        with self._lock:
            if self._conn is not None and self._alive(self._conn):
                return self._conn
            self._drop()
            if not self.backoff.ready():
                raise CollectorError(f"libvirt {self.uri} unreachable ({self.last_error}); "
                                     f"next reconnect in {self.backoff.next_attempt - self.backoff.clock():.1f}s")
            return self._open()

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
            if first and self._conn is not None:
                self._register(self._conn, event_id)

    def on_reconnect(self, listener: Callable[[], None]) -> None:
        """Called after each new connection: events may have been missed while disconnected."""
        with self._lock:
            self._reconnect_listeners.append(listener)

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _open(self) -> libvirt.virConnect:
        ensure_event_loop()
        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError as exc:
            self.last_error = str(exc)
            self.backoff.failed()
            log.warning("libvirt connection failed", extra={"uri": self.uri, "error": str(exc),
                                                             "retry_in_seconds": self.backoff.delay})
            raise CollectorError(f"cannot connect to {self.uri}: {exc}") from None
        self._setup(conn)
        self._conn = conn
        self.generation += 1
        self.backoff.reset()
        log.info("libvirt connected", extra={"uri": self.uri, "generation": self.generation})
        for listener in list(self._reconnect_listeners):
            listener()
        return conn

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
        if conn is None:
            return
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
