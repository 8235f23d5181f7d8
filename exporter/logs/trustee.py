"""Parsers for Confidential Containers Trustee log lines (KBS and attestation service), pure: bytes in, values out.

Trustee's Rust binaries log through ``env_logger`` (``[2025-01-10T08:12:33Z INFO  target] message``) or
``tracing-subscriber``'s fmt layer (``2025-01-10T08:12:33.123456Z  INFO target: message key=value``); both are
accepted, with or without ANSI colours. What is recognised (everything else in a well-formed line is ignored):

- KBS resource requests: actix-web's access log (``middleware::Logger::default()``, target
  ``actix_web::middleware::logger``) for ``/kbs/v0/resource/<repo>/<type>/<tag>``:
  ``10.0.0.5 "GET /kbs/v0/resource/default/key/1 HTTP/1.1" 200 530 "-" "agent/0.1" 0.001234``.
  The HTTP status carries the decision, because KBS maps its errors to statuses (kbs/src/error.rs): 200 released;
  401 denied, requester not attested (TokenNotFound, token verifier errors); 403 denied by the resource policy
  (PolicyDeny); 404 resource or plugin not found. The requester is the client address.
- Attestation results from the attestation service: ``Verifier/endorsement check passed`` (success, with the TEE
  from the ``tee=`` field or the older ``Snp Verifier/endorsement check passed.`` prefix), and the failure chain
  ``verify TEE evidence failed`` / ``Verifier evaluate failed`` that KBS logs as an error.

A line that is not in either log format raises ``LogLineError`` (counted as unparsed by the collectors).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

MAX_LINE = 64 * 1024

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ENV_LOGGER = re.compile(r"^\[(?P<ts>\d{4}-\d\d-\d\dT[0-9:.]+(?:Z|[+-]\d\d:?\d\d)?)\s+(?P<level>TRACE|DEBUG|INFO|WARN|"
                         r"ERROR)\s+(?P<target>[\w:.-]+)\s*\]\s?(?P<msg>.*)$")
_TRACING = re.compile(r"^(?P<ts>\d{4}-\d\d-\d\dT[0-9:.]+(?:Z|[+-]\d\d:?\d\d)?)\s+(?P<level>TRACE|DEBUG|INFO|WARN|ERROR)"
                      r"\s+(?P<target>[\w:.-]+?)(?:\{[^}]*\})?:\s(?P<msg>.*)$")
_ACCESS = re.compile(r'^(?P<peer>\S+) "(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[0-9.]+" (?P<status>\d{3}) '
                     r'(?P<size>\S+)(?: "(?P<referer>[^"]*)" "(?P<agent>[^"]*)")?')
_RESOURCE = re.compile(r"^/kbs/v0/resource/(?P<repo>[^/?#]+)/(?P<type>[^/?#]+)/(?P<tag>[^?#]+)")
_TEE_FIELD = re.compile(r"\btee\s*=\s*\??\"?(?P<tee>[A-Za-z]+)")
_TEE_PREFIX = re.compile(r"^(?P<tee>[A-Za-z]+) Verifier/endorsement check passed")

# Trustee's ``kbs_types::Tee`` names -> our bounded tee_type values.
TEE_NAMES = {"snp": "sev-snp", "azsnpvtpm": "sev-snp", "tdx": "tdx", "aztdxvtpm": "tdx", "sev": "sev"}
STATUS_DECISION = {200: ("released", "none"), 401: ("denied", "unattested"), 403: ("denied", "policy"),
                   404: ("denied", "not_found")}
# Failure text -> bounded reason, first match wins.
FAILURE_REASONS = (("expired", "expired"), ("revoked", "revoked"), ("signature", "signature"), ("tcb", "tcb"),
                   ("policy", "policy"), ("nonce", "binding"), ("report data", "binding"),
                   ("report_data", "binding"), ("parse", "parse"), ("deserialize", "parse"))


class LogLineError(ValueError):
    """The line is not in a recognised Trustee log format (or not text)."""


@dataclass(frozen=True)
class LogLine:
    timestamp: dt.datetime | None
    level: str
    target: str
    message: str


@dataclass(frozen=True)
class ResourceRequest:
    """One KBS resource (key) request and its decision."""

    timestamp: dt.datetime | None
    requester: str
    method: str
    repository: str
    resource_type: str
    tag: str
    status: int
    decision: str  # released | denied
    reason: str  # none | unattested | policy | not_found | error
    user_agent: str

    @property
    def resource(self) -> str:
        return f"kbs:///{self.repository}/{self.resource_type}/{self.tag}"


@dataclass(frozen=True)
class AttestationResult:
    """One attestation-service verdict."""

    timestamp: dt.datetime | None
    tee_type: str  # bounded: sev-snp | tdx | sev | other | unknown
    outcome: str  # success | failure
    reason: str  # none | bounded failure reason
    message: str


def parse_line(raw: bytes) -> LogLine:
    if not isinstance(raw, (bytes, bytearray)):
        raise LogLineError("log line must be bytes")
    if len(raw) > MAX_LINE:
        raise LogLineError(f"log line longer than {MAX_LINE} bytes")
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise LogLineError("log line is not UTF-8") from None
    text = _ANSI.sub("", text).rstrip("\r\n")
    match = _ENV_LOGGER.match(text) or _TRACING.match(text)
    if match is None:
        raise LogLineError("not an env_logger or tracing log line")
    return LogLine(_timestamp(match["ts"]), match["level"], match["target"], match["msg"])


def _timestamp(text: str) -> dt.datetime | None:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def parse_kbs_line(raw: bytes) -> ResourceRequest | None:
    """A resource request from a KBS log line, ``None`` for other well-formed lines."""
    line = parse_line(raw)
    if "logger" not in line.target:
        return None
    access = _ACCESS.match(line.message)
    if access is None:
        return None
    resource = _RESOURCE.match(access["path"])
    if resource is None:
        return None
    status = int(access["status"])
    decision, reason = STATUS_DECISION.get(status, ("released" if 200 <= status < 300 else "denied",
                                                    "none" if 200 <= status < 300 else "error"))
    return ResourceRequest(line.timestamp, access["peer"], access["method"], resource["repo"], resource["type"],
                           resource["tag"], status, decision, reason, access["agent"] or "")


def parse_as_line(raw: bytes) -> AttestationResult | None:
    """An attestation verdict from an attestation-service (or KBS built-in AS) line, ``None`` for other lines."""
    line = parse_line(raw)
    msg = line.message
    if "Verifier/endorsement check passed" in msg:
        found = _TEE_FIELD.search(msg) or _TEE_PREFIX.match(msg)
        return AttestationResult(line.timestamp, tee_name(found["tee"] if found else None), "success", "none",
                                 msg[:512])
    if line.level == "ERROR" and ("verify TEE evidence failed" in msg or "Verifier evaluate failed" in msg):
        found = _TEE_FIELD.search(msg)
        return AttestationResult(line.timestamp, tee_name(found["tee"] if found else None), "failure",
                                 failure_reason(msg), msg[:512])
    return None


def tee_name(name: str | None) -> str:
    if not name:
        return "unknown"
    return TEE_NAMES.get(name.lower(), "other")


def failure_reason(message: str) -> str:
    # Only the cause after the generic prefix says why; the prefix itself mentions "evidence".
    lowered = message.lower()
    for needle, reason in FAILURE_REASONS:
        if needle in lowered:
            return reason
    return "verifier"
