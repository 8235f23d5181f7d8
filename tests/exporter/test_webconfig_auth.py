"""Web-config basic authentication as WSGI middleware, called in process: every refusal for its one reason.

test_web.py proves the same rules over real TLS sockets; these tests call ``common.http.Guarded`` and
``common.webconfig`` directly so that mutation testing (docs/testing.md) can see each decision: who is let in,
with which status, realm and headers, and what the bcrypt cache may and may not remember.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from pathlib import Path

import bcrypt
import pytest

from common import webconfig
from common.http import Guarded
from common.settings import ConfigError
from common.webconfig import BasicAuth, WebConfigSource

HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()


class Response:
    def __init__(self) -> None:
        self.status = ""
        self.headers: dict[str, str] = {}
        self.body = b""

    def start(self, status: str, headers: list[tuple[str, str]], exc_info: object = None) -> None:
        self.status, self.headers = status, dict(headers)


def app(environ: dict, start_response) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


def call(guard: Guarded, authorization: str | None = None, method: str = "GET") -> Response:
    environ = {"REQUEST_METHOD": method, "PATH_INFO": "/metrics"}
    if authorization is not None:
        environ["HTTP_AUTHORIZATION"] = authorization
    response = Response()
    response.body = b"".join(guard(environ, response.start))
    return response


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def guard(tmp_path: Path, text: str, realm: str = "tee-exporter") -> Guarded:
    path = tmp_path / "web.yml"
    path.write_text(text)
    return Guarded(app, WebConfigSource(path), realm)


@pytest.fixture
def guarded(tmp_path: Path) -> Guarded:
    return guard(tmp_path, f"basic_auth_users:\n  alice: '{HASH}'\n")


def test_right_password_is_let_in(guarded: Guarded) -> None:
    response = call(guarded, basic("alice", "s3cret"))
    assert (response.status, response.body) == ("200 OK", b"hello")


@pytest.mark.parametrize("authorization", [
    None,  # no credentials
    basic("alice", "wrong"),  # wrong password
    basic("bob", "s3cret"),  # unknown user with a known password
    basic("alice", "s3cret").replace("Basic ", "Bearer "),  # another scheme
    "Basic !!!!",  # not base64
    "Basic " + base64.b64encode(b"\xffalice:s3cret").decode(),  # not UTF-8
    "Basic " + base64.b64encode(b"alices3cret").decode(),  # no colon: user "alices3cret", empty password
])
def test_anything_else_is_401_with_the_realm(guarded: Guarded, authorization: str | None) -> None:
    response = call(guarded, authorization)
    assert response.status == "401 Unauthorized" and response.body == b"Unauthorized\n"
    assert response.headers["WWW-Authenticate"] == 'Basic realm="tee-exporter"'
    assert response.headers["Content-Length"] == "13"


def test_password_containing_a_colon_is_split_at_the_first(tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"a:b", bcrypt.gensalt(rounds=4)).decode()
    assert call(guard(tmp_path, f"basic_auth_users:\n  carol: '{hashed}'\n"), basic("carol", "a:b")).status == "200 OK"


def test_without_users_no_credentials_are_asked(tmp_path: Path) -> None:
    assert call(guard(tmp_path, "{}\n")).status == "200 OK"


def test_configured_headers_are_added_to_every_answer(tmp_path: Path) -> None:
    g = guard(tmp_path, f"basic_auth_users:\n  alice: '{HASH}'\nhttp_server_config:\n  headers:\n"
                        "    X-Frame-Options: deny\n")
    assert call(g, basic("alice", "s3cret")).headers["X-Frame-Options"] == "deny"
    assert call(g).headers["X-Frame-Options"] == "deny"  # the 401 too


def test_head_answers_the_get_status_and_length_without_a_body(guarded: Guarded) -> None:
    response = call(guarded, basic("alice", "s3cret"), method="HEAD")
    assert (response.status, response.headers["Content-Length"], response.body) == ("200 OK", "5", b"")


def test_config_broken_while_running_answers_500(tmp_path: Path, guarded: Guarded) -> None:
    (tmp_path / "web.yml").write_text("basic_auth_users: [\n")
    response = call(guarded, basic("alice", "s3cret"))
    assert response.status == "500 Internal Server Error"
    assert response.body == b"web config invalid; see the server log\n"


# --- the bcrypt cache ------------------------------------------------------------------------------------------

class CountingBcrypt:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[bytes] = []
        real = bcrypt.checkpw

        def checkpw(password: bytes, hashed: bytes) -> bool:
            self.calls.append(hashed)
            return real(password, hashed)

        monkeypatch.setattr(webconfig.bcrypt, "checkpw", checkpw)


def test_a_success_is_cached_and_a_failure_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    counting = CountingBcrypt(monkeypatch)
    auth, users = BasicAuth(), {"alice": HASH.encode()}
    assert auth.check(users, "alice", "s3cret") and auth.check(users, "alice", "s3cret")
    assert len(counting.calls) == 1
    assert not auth.check(users, "alice", "wrong") and not auth.check(users, "alice", "wrong")
    assert len(counting.calls) == 3


def test_changing_the_hash_forgets_the_cached_password(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = BasicAuth()
    assert auth.check({"alice": HASH.encode()}, "alice", "s3cret")
    rotated = bcrypt.hashpw(b"n3w", bcrypt.gensalt(rounds=4))
    assert not auth.check({"alice": rotated}, "alice", "s3cret")
    assert auth.check({"alice": rotated}, "alice", "n3w")


def test_cache_of_one_user_does_not_admit_another(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = BasicAuth()
    users = {"alice": HASH.encode(), "bob": HASH.encode()}  # same hash, same password: distinct cache entries
    assert auth.check(users, "alice", "s3cret")
    counting = CountingBcrypt(monkeypatch)
    assert auth.check(users, "bob", "s3cret") and counting.calls == [HASH.encode()]


def test_unknown_user_costs_a_bcrypt_check_like_a_known_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """No user enumeration by timing: the unknown user's password is checked against a dummy hash."""
    counting = CountingBcrypt(monkeypatch)
    assert not BasicAuth().check({"alice": HASH.encode()}, "mallory", "s3cret")
    assert counting.calls == [webconfig._DUMMY_HASH]
    assert webconfig._DUMMY_HASH.startswith(b"$2b$10$")  # the cost of a production hash


def test_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = BasicAuth()
    monkeypatch.setattr(webconfig.bcrypt, "checkpw", lambda password, hashed: True)
    for i in range(1026):
        auth.check({"alice": HASH.encode()}, "alice", f"p{i}")
    assert len(auth._verified) <= 1025


# --- the file's users ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["plain", "$1$md5crypt", 7])
def test_user_without_a_bcrypt_hash_is_refused(tmp_path: Path, value: object) -> None:
    with pytest.raises(ConfigError, match=r"basic_auth_users\.alice: expected a bcrypt hash"):
        webconfig.parse(f"basic_auth_users:\n  alice: {value!r}\n".encode(), tmp_path / "web.yml")


@pytest.mark.parametrize("prefix", ["$2a$", "$2b$", "$2y$"])
def test_every_bcrypt_variant_is_accepted(tmp_path: Path, prefix: str) -> None:
    hashed = prefix + HASH[4:]
    config = webconfig.parse(f"basic_auth_users:\n  alice: '{hashed}'\n".encode(), tmp_path / "web.yml")
    assert config.users == {"alice": hashed.encode()}


def test_start_up_with_an_invalid_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text("basic_auth_users:\n  alice: plain\n")
    with pytest.raises(ConfigError, match="expected a bcrypt hash"):
        WebConfigSource(path)


# --- TLS settings as the SSL context gets them (the handshakes themselves: test_web.py) ---------------------------

def tls(tmp_path: Path, **extra: str) -> dict[str, str]:
    from tests.exporter.test_web import make_cert
    cert, key = make_cert(tmp_path)
    return {"cert_file": cert.name, "key_file": key.name, **extra}


def test_tls_defaults_are_a_server_context_from_tls12_without_client_certificates(tmp_path: Path) -> None:
    import ssl
    ctx = webconfig.tls_context(tls(tmp_path), tmp_path)
    assert ctx.protocol == ssl.PROTOCOL_TLS_SERVER and ctx.verify_mode == ssl.CERT_NONE
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.maximum_version == ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).maximum_version  # not capped


@pytest.mark.parametrize(("given", "expected"), [("TLS12", "TLSv1_2"), ("TLS13", "TLSv1_3")])
def test_max_version_caps_the_context(tmp_path: Path, given: str, expected: str) -> None:
    import ssl
    ctx = webconfig.tls_context(tls(tmp_path, min_version="TLS12", max_version=given), tmp_path)
    assert ctx.maximum_version == getattr(ssl.TLSVersion, expected)


@pytest.mark.parametrize("key", ["min_version", "max_version"])
def test_unknown_tls_version_names_the_choices(tmp_path: Path, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        webconfig.tls_context(tls(tmp_path, **{key: "SSL3"}), tmp_path)
    assert str(err.value) == f"tls_server_config.{key}: invalid value 'SSL3' (one of TLS10, TLS11, TLS12, TLS13)"


def test_unknown_client_auth_type_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        webconfig.tls_context(tls(tmp_path, client_auth_type="Maybe"), tmp_path)
    assert str(err.value) == ("tls_server_config.client_auth_type: invalid value 'Maybe' (one of NoClientCert, "
                              "RequestClientCert, VerifyClientCertIfGiven, RequireAnyClientCert, "
                              "RequireAndVerifyClientCert)")


def test_client_ca_without_client_auth_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        webconfig.tls_context(tls(tmp_path, client_ca_file="tls.crt"), tmp_path)
    assert str(err.value) == "tls_server_config: client_ca_file is set but client_auth_type is NoClientCert"


def test_client_auth_without_a_ca_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        webconfig.tls_context(tls(tmp_path, client_auth_type="RequireAnyClientCert"), tmp_path)
    assert str(err.value) == ("tls_server_config: client_auth_type RequireAnyClientCert needs client_ca_file "
                              "(client certificates are always verified against it)")


def test_unreadable_client_ca_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        webconfig.tls_context(tls(tmp_path, client_auth_type="RequireAndVerifyClientCert",
                                  client_ca_file="missing.pem"), tmp_path)
    assert str(err.value).startswith("tls_server_config: cannot load client_ca_file: ")


def test_unreadable_web_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        WebConfigSource(tmp_path / "missing.yml")
    assert str(err.value) == f"{tmp_path / 'missing.yml'}: cannot read: No such file or directory"


# --- the file, re-read while running ---------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "message"), [
    ("a: [\n", "not valid YAML: "),
    ("- 1\n", "expected a mapping at the top level"),
    ("tls_server_config: [1]\n", "tls_server_config: expected a mapping"),
    ("basic_auth_users: [1]\n", "basic_auth_users: expected a mapping"),
    ("http_server_config: [1]\n", "http_server_config: expected a mapping"),
    ("http_server_config:\n  timeouts: 1\n", "http_server_config: only 'headers' is supported"),
    ("http_server_config:\n  headers: [1]\n", "headers: expected a mapping"),
    ("http_server_config:\n  headers:\n    Server: x\n",
     ("http_server_config.headers: header(s) ['Server'] may not be set (allowed: Content-Security-Policy, "
      "Strict-Transport-Security, X-Content-Type-Options, X-Frame-Options, X-XSS-Protection)")),
])
def test_invalid_file_is_refused_at_start_with_its_reason(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "web.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        WebConfigSource(path)
    assert message in str(err.value)
    assert str(err.value).startswith((f"{path}: ", "tls_server_config", "basic_auth_users", "http_server_config",
                                      "headers"))


def test_without_a_file_the_server_is_plain_http() -> None:
    source = WebConfigSource(None)
    assert source.tls is False and source.current().users == {}


def _ca_files(tmp_path: Path) -> dict[str, str]:
    from tests.exporter.test_web import make_cert
    make_cert(tmp_path, "ca")
    return tls(tmp_path, client_auth_type="RequireAndVerifyClientCert", client_ca_file="ca.crt")


@pytest.mark.parametrize("rotated", ["cert_file", "key_file", "client_ca_file"])
def test_each_tls_file_the_config_names_is_watched(tmp_path: Path, rotated: str) -> None:
    """A rotated certificate, key or client CA is read on the next request although web.yml is unchanged."""
    import yaml
    cfg = _ca_files(tmp_path)
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump({"tls_server_config": cfg}))
    source = WebConfigSource(path)
    before = source.current()
    assert source.current() is before  # unchanged files: the parsed config is reused
    target = tmp_path / cfg[rotated]
    target.write_bytes(target.read_bytes() + b"\n")  # same content for the TLS library, another size
    assert source.current() is not before


def test_loading_and_refusing_are_logged_once_each_with_the_file(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    import logging
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  alice: '{HASH}'\n")
    with caplog.at_level(logging.INFO, logger="common.webconfig"):
        source = WebConfigSource(path)
        source.current()
        path.write_text("basic_auth_users: [\n")
        for _ in range(2):
            with pytest.raises(ConfigError):
                source.current()
    records = [(r.levelname, r.getMessage(), r.file, getattr(r, "error", None) is not None)
               for r in caplog.records if r.name == "common.webconfig"]
    assert records == [("INFO", "web config loaded", str(path), False),
                       ("ERROR", "web config invalid; refusing requests until it is fixed", str(path), True)]
    assert caplog.records[-1].error.startswith(f"{path}: not valid YAML")


def test_credentials_with_characters_outside_base64_are_refused(guarded: Guarded) -> None:
    """Strict base64: a lenient decoder would drop the junk and let these in."""
    assert call(guarded, basic("alice", "s3cret") + "!!").status == "401 Unauthorized"


def test_headers_middleware_passes_status_and_exc_info_through(tmp_path: Path) -> None:
    """An application replacing its response after an error (PEP 3333 exc_info) keeps doing so behind the web
    config's headers."""
    seen: list[tuple[str, object]] = []

    def failing(environ: dict, start_response) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        error = (ValueError, ValueError("late"), None)
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")], error)
        return [b"failed"]

    path = tmp_path / "web.yml"
    path.write_text("http_server_config:\n  headers:\n    X-Frame-Options: deny\n")
    guard = Guarded(failing, WebConfigSource(path), "tee-exporter")

    def start(status: str, headers: list[tuple[str, str]], exc_info: object = None) -> None:
        seen.append((status, exc_info))
        assert ("X-Frame-Options", "deny") in headers

    assert b"".join(guard({"REQUEST_METHOD": "GET"}, start)) == b"failed"
    assert [status for status, _ in seen] == ["200 OK", "500 Internal Server Error"]
    assert seen[0][1] is None and seen[1][1] is not None and seen[1][1][0] is ValueError


def test_head_closes_the_get_body_it_does_not_send(guarded: Guarded) -> None:
    """PEP 3333: the server must call close() on the iterable; for HEAD the middleware is the one dropping it."""
    closed: list[bool] = []

    class Body(list):
        def close(self) -> None:
            closed.append(True)

    def with_close(environ: dict, start_response) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Length", "5")])
        return Body([b"hello"])

    guard = Guarded(with_close, guarded.web, "tee-exporter")
    assert call(guard, basic("alice", "s3cret"), method="HEAD").body == b"" and closed == [True]
