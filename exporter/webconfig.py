"""The exporter-toolkit web configuration file (the one node_exporter reads with ``--web.config.file``).

Supported: ``tls_server_config`` (``cert_file``, ``key_file``, ``client_auth_type``, ``client_ca_file``,
``min_version``, ``max_version``), ``http_server_config.headers`` and ``basic_auth_users`` (bcrypt hashes). Keys
we do not implement are refused rather than silently ignored: a TLS option that does nothing is a security bug.
"""

from __future__ import annotations

import hashlib
import hmac
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt

from exporter.config import ConfigError, load_file

_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                 "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version"}


@dataclass
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    _verified: set[bytes] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check_basic_auth(self, user: str, password: str) -> bool:
        """bcrypt is deliberately slow; a successful (user, password) is remembered by its SHA-256 so that
        Prometheus scraping every few seconds does not cost a bcrypt round each time."""
        hashed = self.users.get(user)
        if hashed is None:
            bcrypt.checkpw(password.encode(), _DUMMY_HASH)  # same cost as a known user: no user enumeration
            return False
        key = hashlib.sha256(user.encode() + b"\0" + password.encode()).digest()
        with self._lock:
            if any(hmac.compare_digest(key, k) for k in self._verified):
                return True
        if bcrypt.checkpw(password.encode(), hashed):
            with self._lock:
                self._verified.add(key)
            return True
        return False


_DUMMY_HASH = bcrypt.hashpw(b"unused", bcrypt.gensalt(rounds=10))


def _tls_context(cfg: dict[str, Any], base: Path) -> ssl.SSLContext:
    unknown = set(cfg) - _TLS_KEYS
    if unknown:
        raise ConfigError(f"tls_server_config: unsupported key(s) {sorted(unknown)}")
    if not cfg.get("cert_file") or not cfg.get("key_file"):
        raise ConfigError("tls_server_config: cert_file and key_file are both required")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _TLS_VERSIONS.get(cfg.get("min_version", "TLS12"), ssl.TLSVersion.TLSv1_2)
    if "max_version" in cfg:
        ctx.maximum_version = _TLS_VERSIONS[cfg["max_version"]]
    try:
        ctx.load_cert_chain(base / cfg["cert_file"], base / cfg["key_file"])
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls_server_config: cannot load cert_file/key_file: {exc}") from None
    auth = cfg.get("client_auth_type", "NoClientCert")
    if auth not in _CLIENT_AUTH:
        raise ConfigError(f"tls_server_config.client_auth_type: unknown value {auth!r}")
    ctx.verify_mode = _CLIENT_AUTH[auth]
    if auth in ("RequireAndVerifyClientCert", "VerifyClientCertIfGiven") and not cfg.get("client_ca_file"):
        raise ConfigError(f"tls_server_config: client_auth_type {auth} needs client_ca_file")
    if cfg.get("client_ca_file"):
        try:
            ctx.load_verify_locations(base / cfg["client_ca_file"])
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"tls_server_config: cannot load client_ca_file: {exc}") from None
    return ctx


def load(path: Path) -> WebConfig:
    """Parse and validate the web config file; relative paths inside it are relative to the file."""
    data = load_file(path)
    unknown = set(data) - {"tls_server_config", "basic_auth_users", "http_server_config"}
    if unknown:
        raise ConfigError(f"{path}: unsupported key(s) {sorted(unknown)}")
    web = WebConfig()
    base = Path(path).parent
    if data.get("tls_server_config"):
        web.ssl_context = _tls_context(data["tls_server_config"], base)
    for user, hashed in (data.get("basic_auth_users") or {}).items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise ConfigError(f"{path}: basic_auth_users.{user}: expected a bcrypt hash")
        web.users[str(user)] = hashed.encode()
    http_cfg = data.get("http_server_config") or {}
    if set(http_cfg) - {"headers"}:
        raise ConfigError(f"{path}: http_server_config: only 'headers' is supported")
    web.headers = {str(k): str(v) for k, v in (http_cfg.get("headers") or {}).items()}
    return web
