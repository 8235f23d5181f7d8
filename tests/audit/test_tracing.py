"""OpenTelemetry: spans around batch, sign and ship reach an OTLP/HTTP endpoint when one is configured."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.audit.kit import keys, ship_once, write_journal


class _Collector:
    """The receiving end of OTLP/HTTP: keeps every POSTed body (protobuf ExportTraceServiceRequest)."""

    def __init__(self) -> None:
        bodies: list[tuple[str, str, bytes]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                bodies.append((self.path, self.headers.get("Content-Type", ""), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.bodies = bodies
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def collector() -> Iterator[_Collector]:
    c = _Collector()
    yield c
    c.httpd.shutdown()
    c.httpd.server_close()


def test_batch_sign_and_ship_spans_are_exported_over_otlp(tmp_path: Path, collector: _Collector) -> None:
    key, _ = keys(tmp_path / "keys")
    journal = tmp_path / "journal.jsonl"
    write_journal(journal, 30)
    assert ship_once([journal], key, tmp_path / "spool", store=tmp_path / "store",
                     otlp_endpoint=collector.url) == 0
    assert collector.bodies, "no OTLP export arrived"
    paths = {path for path, _, _ in collector.bodies}
    assert paths == {"/v1/traces"}
    payload = b"".join(body for _, _, body in collector.bodies)
    assert all(ctype == "application/x-protobuf" for _, ctype, _ in collector.bodies)
    for span in (b"audit.batch", b"audit.sign", b"audit.ship"):
        assert span in payload
    assert b"tee-audit" in payload  # service.name resource attribute
