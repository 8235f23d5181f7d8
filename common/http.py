"""HTTP serving for both daemons: cheroot (a threaded WSGI server) under a thin web-config layer.

What the layer adds to cheroot, and why:

* TLS handshakes run in worker threads under the socket timeout, never in the accepting thread: the acceptor only
  wraps the socket (no I/O), and a new connection waits in cheroot's selector until the client sends its first
  bytes, so an idle client costs a file descriptor, not the server.
* The web config is looked up for every handshake and request (``common.webconfig``).
* Bounded: a fixed worker pool, a bounded accept queue (cheroot answers 503 beyond it), and ``max_requests``
  concurrent metric scrapes (node_exporter's ``--web.max-requests``; 503 beyond it).
* cheroot's error log goes to our logger as one line; a client hanging up mid-scrape is not a stack trace.
"""

from __future__ import annotations

import base64
import binascii
import html
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cheroot import errors as cheroot_errors
from cheroot import wsgi
from cheroot.server import HTTPConnection
from cheroot.ssl.builtin import BuiltinSSLAdapter
from prometheus_client import CollectorRegistry, make_wsgi_app

from common.settings import ConfigError
from common.webconfig import WebConfig, WebConfigSource

log = logging.getLogger(__name__)

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


class ServeError(Exception):
    """The server cannot start (bad listen address, port in use); the message is one line for the operator."""


def parse_listen_address(address: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``:port`` (all interfaces, IPv4 and IPv6, as node_exporter)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ServeError(f"listen address {address!r}: expected host:port, [ipv6]:port or :port")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ServeError(f"listen address {address!r}: unbalanced brackets around the IPv6 address")
        host = host[1:-1]
    elif ":" in host:
        raise ServeError(f"listen address {address!r}: put an IPv6 address in brackets, e.g. [::1]:9940")
    if not host:
        host = "::" if socket.has_ipv6 and _ipv6_usable() else "0.0.0.0"  # cheroot makes '::' dual-stack
    return host, int(port)


def _ipv6_usable() -> bool:
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close()
        return True
    except OSError:
        return False


# -- web config as WSGI middleware ---------------------------------------------------------------------------


def _plain(start_response: StartResponse, status: str, text: str,
           extra: list[tuple[str, str]] | None = None) -> list[bytes]:
    body = (text + "\n").encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
                            *(extra or [])])
    return [body]


def _basic_credentials(environ: Environ) -> tuple[str, str] | None:
    header = environ.get("HTTP_AUTHORIZATION", "")
    if not header.startswith("Basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


class Guarded:
    """Applies the web config (basic auth, response headers) in front of ``app``; HEAD answers without a body."""

    def __init__(self, app: WSGIApp, web: WebConfigSource, realm: str) -> None:
        self.app, self.web, self.realm = app, web, realm

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            config = self.web.current()
        except ConfigError:
            return _plain(start_response, "500 Internal Server Error", "web config invalid; see the server log")
        respond = _with_headers(start_response, config)
        if config.users and not self._authorized(config, environ):
            return _plain(respond, "401 Unauthorized", "Unauthorized",
                          [("WWW-Authenticate", f'Basic realm="{self.realm}"')])
        if environ.get("REQUEST_METHOD") != "HEAD":
            return self.app(environ, respond)
        # HEAD: the GET response's status and headers (Content-Length included), no body (RFC 9110, 9.3.2)
        body = self.app({**environ, "REQUEST_METHOD": "GET"}, respond)
        if hasattr(body, "close"):
            body.close()
        return []

    def _authorized(self, config: WebConfig, environ: Environ) -> bool:
        credentials = _basic_credentials(environ)
        return credentials is not None and self.web.authorized(config, *credentials)


def _with_headers(start_response: StartResponse, config: WebConfig) -> StartResponse:
    if not config.headers:
        return start_response

    def respond(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return start_response(status, [*headers, *config.headers.items()], exc_info)

    return respond


@dataclass
class _Flight:
    done: threading.Event = field(default_factory=threading.Event)
    status: str = "500 Internal Server Error"
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


class Limited:
    """At most ``limit`` concurrent calls of ``app``; beyond it 503 at once (node_exporter's --web.max-requests).

    Requests that arrive while an identical one (same query, Accept, Accept-Encoding) is being answered wait for
    it and get the same response: 300 simultaneous scrapes cost one collection, not 40 (memory stays flat under a
    burst). The body is sent with a Content-Length, so HEAD and keep-alive work without chunked encoding.
    """

    def __init__(self, app: WSGIApp, limit: int) -> None:
        self.app = app
        self._slots = threading.BoundedSemaphore(limit) if limit > 0 else None
        self._lock = threading.Lock()
        self._flights: dict[tuple[str, str, str], _Flight] = {}

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        key = (environ.get("QUERY_STRING", ""), environ.get("HTTP_ACCEPT", ""),
               environ.get("HTTP_ACCEPT_ENCODING", ""))
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if leader:
            self._fly(flight, key, environ)
        else:
            flight.done.wait()
        if flight.status.startswith("503") and not leader:
            return _plain(start_response, "503 Service Unavailable", "too many concurrent requests")
        start_response(flight.status, [*(h for h in flight.headers if h[0].lower() != "content-length"),
                                       ("Content-Length", str(len(flight.body)))])
        return [flight.body]

    def _fly(self, flight: _Flight, key: tuple[str, str, str], environ: Environ) -> None:
        try:
            if self._slots is not None and not self._slots.acquire(blocking=False):
                flight.status, flight.body = "503 Service Unavailable", b"too many concurrent requests\n"
                flight.headers = [("Content-Type", "text/plain; charset=utf-8")]
                return
            try:
                def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
                    flight.status, flight.headers = status, headers

                flight.body = b"".join(self.app(environ, capture))
            finally:
                if self._slots is not None:
                    self._slots.release()
        finally:
            with self._lock:
                del self._flights[key]
            flight.done.set()


def router(routes: dict[str, WSGIApp]) -> WSGIApp:
    def route(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        app = routes.get(environ.get("PATH_INFO", "/"))
        if app is None:
            return _plain(start_response, "404 Not Found", "Not Found")
        return app(environ, start_response)

    return route


def static(body: bytes, content_type: str, status: str = "200 OK") -> WSGIApp:
    def app(_environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]

    return app


def landing_page(telemetry_path: str, title: str) -> bytes:
    path = html.escape(telemetry_path)
    return (f"<!doctype html><html><head><title>{title}</title></head><body><h1>{title}</h1>"
            f'<p><a href="{path}">Metrics</a> · <a href="/healthz">Health</a></p></body></html>').encode()


# -- cheroot -------------------------------------------------------------------------------------------------


class _DeferredTLSAdapter(BuiltinSSLAdapter):
    """Wraps accepted sockets with the web config's current context, leaving the handshake to the worker."""

    def __init__(self, web: WebConfigSource) -> None:  # no certificate files of its own to load
        self.web = web
        self.context = None

    def bind(self, sock: socket.socket) -> socket.socket:
        return sock

    def wrap(self, sock: socket.socket) -> tuple[ssl.SSLSocket, dict[str, str]]:
        try:
            context = self.web.current().ssl_context
        except ConfigError as exc:
            raise cheroot_errors.FatalSSLAlert(f"web config invalid: {exc}") from None
        if context is None:
            raise cheroot_errors.FatalSSLAlert("web config no longer has tls_server_config; restart to serve HTTP")
        wrapped = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return wrapped, {"wsgi.url_scheme": "https", "HTTPS": "on"}

    def get_environ(self, sock: Any = None) -> dict[str, str]:
        return {"wsgi.url_scheme": "https", "HTTPS": "on"}


class _Connection(HTTPConnection):
    """Completes the TLS handshake in the worker, under the socket timeout, and logs a failed one."""

    parked = False
    handshaken = False

    def communicate(self) -> bool:
        if isinstance(self.socket, ssl.SSLSocket) and not self.handshaken:
            try:
                self.socket.do_handshake()
            except (OSError, ssl.SSLError) as exc:  # socket.timeout is an OSError
                log.warning("TLS handshake failed", extra={"client": self.remote_addr,
                                                           "error": _one_line(exc)})
                return False
            self.handshaken = True
        return bool(super().communicate())


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:300]


class _Server(wsgi.Server):
    ConnectionClass = _Connection

    def process_conn(self, conn: _Connection) -> None:
        # A new connection first waits in the selector for its first bytes; only then does it take a worker.
        if not conn.parked:
            conn.parked = True
            self._connections.put(conn)  # type: ignore[attr-defined]  # set by prepare(); not in the stubs
            return
        super().process_conn(conn)

    def error_log(self, msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
        log.log(level if level >= logging.WARNING else logging.DEBUG, "http server: %s",
                msg.splitlines()[0] if msg else "error")


class MetricsServer:
    """``/`` landing page, ``/metrics`` (or ``telemetry_path``), ``/healthz``; ``start``/``shutdown``."""

    def __init__(self, registry: CollectorRegistry, address: str, telemetry_path: str = "/metrics",
                 web: WebConfigSource | None = None, title: str = "tee-exporter",
                 healthy: Callable[[], bool] = lambda: True, max_requests: int = 40) -> None:
        metrics = Limited(make_wsgi_app(registry), max_requests)
        routes: dict[str, WSGIApp] = {telemetry_path: metrics, "/healthz": _health(healthy),
                  "/": static(landing_page(telemetry_path, title), "text/html; charset=utf-8")}
        self.server = Server(router(routes), address, web or WebConfigSource(None), title,
                             workers=max(max_requests, 1) + 4)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def scheme(self) -> str:
        return self.server.scheme

    def start(self) -> threading.Thread:
        return self.server.start()

    def shutdown(self) -> None:
        self.server.shutdown()


def _health(healthy: Callable[[], bool]) -> WSGIApp:
    def app(_environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        ok = healthy()
        return _plain(start_response, "200 OK" if ok else "503 Service Unavailable", "ok" if ok else "unhealthy")

    return app


class Server:
    """A WSGI app behind the web config on ``address``. Raises ServeError with one line when it cannot listen."""

    def __init__(self, app: WSGIApp, address: str, web: WebConfigSource, name: str, workers: int = 8,
                 max_body_bytes: int = 0, timeout: int = 10) -> None:
        self.address = address
        bind = parse_listen_address(address)
        self.wsgi = _Server(bind, Guarded(app, web, name), numthreads=workers, max=workers, server_name=name,
                            timeout=timeout, accepted_queue_size=workers * 4, accepted_queue_timeout=0,
                            request_queue_size=socket.SOMAXCONN)
        self.wsgi.max_request_body_size = max_body_bytes
        self.wsgi.max_request_header_size = 64 * 1024
        self.scheme = "https" if web.tls else "http"
        if web.tls:
            self.wsgi.ssl_adapter = _DeferredTLSAdapter(web)
        try:
            self.wsgi.prepare()
        except OSError as exc:
            raise ServeError(f"cannot listen on {address}: {_one_line(exc)}") from None

    @property
    def port(self) -> int:
        return int(self.wsgi.bind_addr[1])

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.wsgi.serve, name=f"http-{self.port}", daemon=True)
        thread.start()
        return thread

    def shutdown(self) -> None:
        self.wsgi.stop()
