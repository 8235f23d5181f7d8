"""The test harness's own guards: the Elasticsearch fixtures refuse a server of the wrong version on their port,
free ports are free, and golden files cannot be rewritten in CI (which would make golden tests self-comparisons)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.exporter.helpers import golden_update_requested
from tests.fixtures.elasticsearch import check_reused
from tests.fixtures.ports import free_ports


def _server(version: str | None) -> ThreadingHTTPServer:
    """A stand-in on 127.0.0.1 answering ``/_nodes/_local/version`` like an Elasticsearch of ``version``, or
    (None) 404 to everything, like a web server that is not an Elasticsearch."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if version is None or self.path != "/_nodes/_local/version":
                self.send_error(404)
                return
            body = json.dumps({"nodes": {"n1": {"version": version}}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


@pytest.fixture
def answering() -> Iterator:
    servers: list[ThreadingHTTPServer] = []

    def start(version: str | None) -> str:
        server = _server(version)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_es_fixture_reuses_the_version_it_wants(answering) -> None:
    assert check_reused(answering("9.2.4"), "9.2.4", "TEE_TEST_ES_PORT") is True
    assert check_reused(answering("8.19.3"), "8.", "TEE_TEST_ES8_PORT") is True


@pytest.mark.parametrize(("found", "wanted"), [("8.19.3", "9.2.4"), ("9.2.3", "9.2.4"), ("9.2.4", "8.")])
def test_es_fixture_refuses_another_version_on_its_port(answering, found: str, wanted: str) -> None:
    url = answering(found)
    with pytest.raises(pytest.fail.Exception) as refused:
        check_reused(url, wanted, "TEE_TEST_ES_PORT")
    assert str(refused.value) == (f"{url} runs Elasticsearch {found}, not {wanted}; stop it or set "
                                  "TEE_TEST_ES_PORT to another port")


def test_es_fixture_refuses_a_port_taken_by_something_else(answering) -> None:
    url = answering(None)
    with pytest.raises(pytest.fail.Exception, match="is taken by something that is not an Elasticsearch"):
        check_reused(url, "9.2.4", "TEE_TEST_ES_PORT")


def test_es_fixture_starts_its_own_when_nothing_listens() -> None:
    port = free_ports((0,))
    assert check_reused(f"http://127.0.0.1:{port}", "9.2.4", "TEE_TEST_ES_PORT") is False


def test_free_ports_are_free_at_every_offset() -> None:
    base = free_ports((0, 100, 10, 110))
    for offset in (0, 100, 10, 110):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", base + offset))


@pytest.mark.parametrize("ci", ["true", "1", "yes"])
def test_update_golden_is_refused_in_ci(ci: str) -> None:
    with pytest.raises(RuntimeError, match="UPDATE_GOLDEN is set in CI"):
        golden_update_requested({"UPDATE_GOLDEN": "1", "CI": ci})


def test_update_golden_works_for_a_developer() -> None:
    assert golden_update_requested({"UPDATE_GOLDEN": "1"}) is True
    assert golden_update_requested({"UPDATE_GOLDEN": "1", "CI": "false"}) is True
    assert golden_update_requested({"CI": "true"}) is False
