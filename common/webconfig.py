"""The exporter-toolkit web configuration file (``--web.config.file``), re-read while the daemon runs.

Semantics follow prometheus/exporter-toolkit (docs/web-configuration.md):

* The file is read again for every request and every TLS handshake, so a revoked password stops working on the
  next request and a rotated certificate is served to the next client, with no restart. Parsing is cached by the
  file's bytes and the identity (inode, size, mtime) of the certificate, key and CA files it names.
* A file that became invalid while running fails closed: requests get 500 and handshakes fail until it is fixed,
  rather than falling back to the previous (possibly revoked) settings. At start-up an invalid file is an error.
* ``basic_auth_users`` holds bcrypt hashes; a successful check is cached under SHA-256(user, hash, password), so
  changing a user's hash invalidates the cache entry at once.
* ``client_auth_type`` names Go's ``tls.ClientAuthType``. Python's ``ssl`` cannot accept a client certificate
  without verifying it, so ``RequestClientCert`` and ``RequireAnyClientCert`` verify the certificate against
  ``client_ca_file`` and are refused at load time without one (see docs/exporter.md, "Web configuration").

Keys we do not implement are refused rather than silently ignored: a TLS option that does nothing is a security bug.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from common.settings import ConfigError

log = logging.getLogger(__name__)

# Go tls.ClientAuthType name -> ssl verify mode
_CLIENT_AUTH: dict[str, ssl.VerifyMode] = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                 "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version"}
_TOP_KEYS = {"tls_server_config", "basic_auth_users", "http_server_config"}
# exporter-toolkit lets the file set only these response headers (web/tls_config.go, "headers").
_ALLOWED_HEADERS = {"Strict-Transport-Security", "X-Content-Type-Options", "X-Frame-Options", "X-XSS-Protection",
                    "Content-Security-Policy"}
_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")


@dataclass
class WebConfig:
    """One parsed version of the file."""

    ssl_context: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


class BasicAuth:
    """bcrypt checks with a cache of successes (bcrypt is deliberately slow; Prometheus scrapes every few seconds)."""

    def __init__(self) -> None:
        self._verified: set[bytes] = set()
        self._lock = threading.Lock()

    def check(self, users: Mapping[str, bytes], user: str, password: str) -> bool:
        hashed = users.get(user)
        if hashed is None:
            bcrypt.checkpw(password.encode(), _DUMMY_HASH)  # same cost as a known user: no user enumeration
            return False
        # The hash is part of the key: after the operator changes it, the old password is checked afresh.
        key = hashlib.sha256(b"\0".join((user.encode(), hashed, password.encode()))).digest()
        with self._lock:
            if any(hmac.compare_digest(key, k) for k in self._verified):
                return True
        if not bcrypt.checkpw(password.encode(), hashed):
            return False
        with self._lock:
            if len(self._verified) > 1024:  # bounded: a cache, not a record of every password ever used
                self._verified.clear()
            self._verified.add(key)
        return True


_DUMMY_HASH = bcrypt.hashpw(b"unused", bcrypt.gensalt(rounds=10))


class WebConfigSource:
    """The web config file, re-validated whenever it or a file it names changes. ``None`` path: plain HTTP."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.auth = BasicAuth()
        self._lock = threading.Lock()
        self._key: tuple[Any, ...] | None = None
        self._config = WebConfig()
        self._error: str | None = None
        self.tls = False
        if path is not None:
            self.tls = self.current().ssl_context is not None  # raises ConfigError: refuse to start

    def current(self) -> WebConfig:
        """The file's settings now; ``ConfigError`` when it cannot be read or is invalid (callers fail closed)."""
        if self.path is None:
            return self._config
        with self._lock:
            raw = _read_bytes(self.path)
            key = (raw, *_file_ids(self.path, raw))
            if key != self._key:
                self._key = key
                try:
                    self._config, self._error = parse(raw, self.path), None
                    log.info("web config loaded", extra={"file": str(self.path)})
                except ConfigError as exc:
                    self._error = str(exc)
                    log.error("web config invalid; refusing requests until it is fixed",
                              extra={"file": str(self.path), "error": self._error})
            if self._error is not None:
                raise ConfigError(self._error)
            return self._config

    def authorized(self, config: WebConfig, user: str, password: str) -> bool:
        return self.auth.check(config.users, user, password)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def _file_ids(path: Path, raw: bytes) -> tuple[tuple[int, int, int] | None, ...]:
    """Identity of the TLS files the config names: a rotated certificate changes the cache key."""
    try:
        tls = (yaml.safe_load(raw) or {}).get("tls_server_config") or {}
    except (yaml.YAMLError, AttributeError):
        return ()
    ids = []
    for name in ("cert_file", "key_file", "client_ca_file"):
        value = tls.get(name) if isinstance(tls, dict) else None
        try:
            st = os.stat(path.parent / str(value)) if value else None
        except OSError:
            st = None
        ids.append(None if st is None else (st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(ids)


def parse(raw: bytes, path: Path) -> WebConfig:
    """Validate the file's content; relative paths inside it are relative to the file."""
    try:
        data = yaml.safe_load(raw) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"{path}: unsupported key(s) {sorted(unknown)}")
    web = WebConfig()
    if data.get("tls_server_config"):
        web.ssl_context = tls_context(_mapping(data["tls_server_config"], "tls_server_config"), path.parent)
    for user, hashed in _mapping(data.get("basic_auth_users") or {}, "basic_auth_users").items():
        if not isinstance(hashed, str) or not hashed.startswith(_BCRYPT_PREFIXES):
            raise ConfigError(f"{path}: basic_auth_users.{user}: expected a bcrypt hash")
        web.users[str(user)] = hashed.encode()
    http_cfg = _mapping(data.get("http_server_config") or {}, "http_server_config")
    if set(http_cfg) - {"headers"}:
        raise ConfigError(f"{path}: http_server_config: only 'headers' is supported")
    headers = {str(k): str(v) for k, v in _mapping(http_cfg.get("headers") or {}, "headers").items()}
    bad = {k for k in headers if k.title() not in {h.title() for h in _ALLOWED_HEADERS}}
    if bad:
        raise ConfigError(f"{path}: http_server_config.headers: header(s) {sorted(bad)} may not be set "
                          f"(allowed: {', '.join(sorted(_ALLOWED_HEADERS))})")
    web.headers = headers
    return web


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping")
    return value


def tls_context(cfg: dict[str, Any], base: Path) -> ssl.SSLContext:
    """An ``SSLContext`` for ``tls_server_config``, validated as exporter-toolkit's ``ConfigToTLSConfig`` does."""
    unknown = set(cfg) - _TLS_KEYS
    if unknown:
        raise ConfigError(f"tls_server_config: unsupported key(s) {sorted(unknown)}")
    for key in ("cert_file", "key_file"):
        if not cfg.get(key):
            raise ConfigError(f"tls_server_config: missing {key}")
    auth = cfg.get("client_auth_type") or "NoClientCert"
    if auth not in _CLIENT_AUTH:
        raise ConfigError(f"tls_server_config.client_auth_type: invalid value {auth!r} "
                          f"(one of {', '.join(_CLIENT_AUTH)})")
    ca_file = cfg.get("client_ca_file")
    if ca_file and auth == "NoClientCert":
        raise ConfigError("tls_server_config: client_ca_file is set but client_auth_type is NoClientCert")
    if auth != "NoClientCert" and not ca_file:
        raise ConfigError(f"tls_server_config: client_auth_type {auth} needs client_ca_file (client certificates "
                          "are always verified against it)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _version(cfg, "min_version", "TLS12")
    if "max_version" in cfg:
        ctx.maximum_version = _version(cfg, "max_version", "TLS13")
    try:
        ctx.load_cert_chain(base / cfg["cert_file"], base / cfg["key_file"])
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls_server_config: cannot load cert_file/key_file: {exc}") from None
    ctx.verify_mode = _CLIENT_AUTH[auth]
    if ca_file:
        try:
            ctx.load_verify_locations(base / ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"tls_server_config: cannot load client_ca_file: {exc}") from None
    return ctx


def _version(cfg: dict[str, Any], key: str, default: str) -> ssl.TLSVersion:
    value = cfg.get(key, default)
    if value not in _TLS_VERSIONS:
        raise ConfigError(f"tls_server_config.{key}: invalid value {value!r} (one of {', '.join(_TLS_VERSIONS)})")
    return _TLS_VERSIONS[value]
