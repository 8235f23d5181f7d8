"""HTTP serving: the landing page at ``/``, metrics at the telemetry path, ``/healthz``; TLS and basic auth from
the web config file."""

from __future__ import annotations

import base64
import binascii
import html
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from exporter.webconfig import WebConfig

log = logging.getLogger(__name__)


def parse_listen_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def landing_page(telemetry_path: str, title: str) -> bytes:
    path = html.escape(telemetry_path)
    return (f"<!doctype html><html><head><title>{title}</title></head><body><h1>{title}</h1>"
            f'<p><a href="{path}">Metrics</a> · <a href="/healthz">Health</a></p></body></html>').encode()


class MetricsServer:
    """A threading HTTP server; ``serve_forever`` in a thread, ``shutdown`` to stop."""

    def __init__(self, registry: CollectorRegistry, address: str, telemetry_path: str = "/metrics",
                 web: WebConfig | None = None, title: str = "tee-exporter",
                 healthy: Callable[[], bool] = lambda: True) -> None:
        web = web or WebConfig()
        handler = _make_handler(registry, telemetry_path, web, landing_page(telemetry_path, title), healthy)
        self.httpd = ThreadingHTTPServer(parse_listen_address(address), handler)
        self.httpd.daemon_threads = True
        if web.ssl_context is not None:
            self.httpd.socket = web.ssl_context.wrap_socket(self.httpd.socket, server_side=True)
        self.scheme = "https" if web.ssl_context else "http"

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.httpd.serve_forever, name="http", daemon=True)
        thread.start()
        return thread

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _make_handler(registry: CollectorRegistry, telemetry_path: str, web: WebConfig, landing: bytes,
                  healthy: Callable[[], bool]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "tee-exporter"

        def do_GET(self) -> None:
            if web.users and not self._authorized():
                self._send(401, b"Unauthorized\n", "text/plain",
                           {"WWW-Authenticate": 'Basic realm="tee-exporter"'})
                return
            path = urlsplit(self.path).path
            if path == telemetry_path:
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                self._send(200, encoder(registry), content_type)
            elif path == "/healthz":
                ok = healthy()
                self._send(200 if ok else 503, b"ok\n" if ok else b"unhealthy\n", "text/plain")
            elif path == "/":
                self._send(200, landing, "text/html; charset=utf-8")
            else:
                self._send(404, b"Not Found\n", "text/plain")

        def _authorized(self) -> bool:
            header = self.headers.get("Authorization", "")
            if not header.startswith("Basic "):
                return False
            try:
                user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return web.check_basic_auth(user, password)

        def _send(self, code: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in {**web.headers, **(extra or {})}.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("http request", extra={"client": self.client_address[0], "request": format % args})

    return Handler
