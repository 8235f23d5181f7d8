"""Privileged set-up of Elasticsearch for tee-audit, and the shipper's check that it was done.

``tee-audit setup`` is an administrator's step, run once per namespace (and again after an upgrade of tee-audit):
it checks the cluster's version, installs the two index templates (records with their lifecycle, checkpoints
without) and applies the retention to a records stream that already exists. ``ship`` never writes templates: its
credential lives on the host, the party an audit trail must distrust, so it only appends (docs/audit.md,
"Credentials and roles"). Before its first write it checks, read-only, that the set-up is there (``check``):
its own privileges when the cluster has security on, and both templates, carrying the fingerprint of the template
this version of tee-audit writes.

The fingerprint (``_meta.tee_audit_template``) is a SHA-256 over the RFC 8785 form of the template body without
its ``_meta`` and without the retention (an operator's choice, not the shipper's), so any change to mappings or
settings in a new release makes an old set-up "outdated", and an unchanged one stays "up to date".
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from elasticsearch import Elasticsearch

from audit.canonical import canonicalize
from audit.sinks import NotSetUp
from audit.sinks.elasticsearch import (
    EsError,
    checkpoint_stream_name,
    checkpoint_template,
    data_stream_name,
    request,
    template,
)

# Lowest server whose templates may carry a data stream lifecycle, with REST API compatibility for our 8.x
# media types on 9.x servers.
MIN_VERSION = (8, 14)
FINGERPRINT = "tee_audit_template"

# What ``ship`` does, by privilege (docs/elasticsearch/roles.yml, tee_shipper): bulk creates (create_doc, and
# auto_configure for the first write into a stream), the look-ups before a replay and after a 409 (read), the
# refresh before them (maintenance), the template check at start and the self-verification's view of the
# backing indices (cluster monitor).
SHIPPER_INDEX_PRIVILEGES = ("create_doc", "auto_configure", "read", "maintenance")
SHIPPER_CLUSTER_PRIVILEGES = ("monitor",)


@dataclass(frozen=True)
class Wanted:
    """One template as this version of tee-audit writes it."""

    name: str
    body: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        return str(self.body["_meta"][FINGERPRINT])


def _fingerprint(body: dict[str, Any]) -> str:
    core = {k: v for k, v in body.items() if k != "_meta"}
    lifecycle = core.get("template", {}).get("lifecycle", {})
    if "data_retention" in lifecycle:
        core = {**core, "template": {**core["template"], "lifecycle": {
            k: v for k, v in lifecycle.items() if k != "data_retention"}}}
    return hashlib.sha256(canonicalize(core)).hexdigest()[:16]


def wanted(namespace: str, retention: str = "90d") -> list[Wanted]:
    """The records template (with ``retention``) and the checkpoint template, fingerprinted."""
    stream = data_stream_name(namespace)
    out = []
    for name, body in ((stream, template(namespace, retention)),
                       (checkpoint_stream_name(stream), checkpoint_template(namespace))):
        body["_meta"] = {**body["_meta"], FINGERPRINT: _fingerprint(body)}
        out.append(Wanted(name, body))
    return out


def _stored(client: Elasticsearch, name: str) -> dict[str, Any] | None:
    """The stored template ``name``, None when there is none."""
    try:
        found = request(client, "GET", f"/_index_template/{name}")["index_templates"]
    except EsError as exc:
        if exc.reason == "http_404":
            return None
        raise
    return found[0]["index_template"] if found else None


def _version(client: Elasticsearch) -> str:
    """The lowest version among the cluster's nodes (this distribution has no ``GET /``)."""
    nodes = request(client, "GET", "/_nodes?filter_path=nodes.*.version")["nodes"]
    return min((n["version"] for n in nodes.values()), key=_parse_version)


def _parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("-")[0].split(".")[:3] if p.isdigit())


def install(client: Elasticsearch, url: str, namespace: str, retention: str) -> Iterator[str]:
    """Set Elasticsearch up for ``namespace``; yields one line per thing checked or done. Idempotent. An existing
    checkpoint stream gets the template's mappings too (the tiles' and cosignatures' fields, new with tee-audit
    v2), as no lifecycle ever rolls it over to a backing index created from the new template."""
    version = _version(client)
    if _parse_version(version)[:2] < MIN_VERSION:
        raise NotSetUp(f"Elasticsearch {version} at {url} is older than {'.'.join(map(str, MIN_VERSION))}, the "
                       "oldest tee-audit supports")
    yield f"cluster: Elasticsearch {version} at {url}: supported"
    for want in wanted(namespace, retention):
        stored = _stored(client, want.name)
        if stored is not None and _same(stored, want):
            yield f"template {want.name}: up to date ({want.fingerprint})"
            continue
        request(client, "PUT", f"/_index_template/{want.name}", want.body)
        yield f"template {want.name}: {_change(stored, want)}"
    yield _lifecycle(client, data_stream_name(namespace), retention)
    checkpoints = checkpoint_stream_name(data_stream_name(namespace))
    if _exists(client, checkpoints):  # else its first write creates it from the template
        yield _checkpoint_mapping(client, checkpoints, namespace)


def _change(stored: dict[str, Any] | None, want: Wanted) -> str:
    if stored is None:
        return f"installed ({want.fingerprint})"
    if _stored_fingerprint(stored) == want.fingerprint:
        return f"retention set to {want.body['template']['lifecycle'].get('data_retention')} ({want.fingerprint})"
    return f"updated from {_stored_fingerprint(stored) or 'one tee-audit did not write'} to {want.fingerprint}"


def _same(stored: dict[str, Any], want: Wanted) -> bool:
    lifecycle = stored.get("template", {}).get("lifecycle", {})
    retention = want.body["template"]["lifecycle"].get("data_retention")
    return _stored_fingerprint(stored) == want.fingerprint and lifecycle.get("data_retention") == retention


def _stored_fingerprint(stored: dict[str, Any]) -> str | None:
    meta = stored.get("_meta")
    return meta.get(FINGERPRINT) if isinstance(meta, dict) else None


def _lifecycle(client: Elasticsearch, stream: str, retention: str) -> str:
    """A template's lifecycle only reaches streams created after it; an existing stream gets it set here."""
    if not _exists(client, stream):
        return f"data stream {stream}: not created yet (the shipper's first write creates it with retention " \
               f"{retention})"
    try:
        request(client, "PUT", f"/_data_stream/{stream}/_lifecycle", {"data_retention": retention})
    except EsError as exc:
        if exc.reason == "http_400" and "no handler found" in str(exc):
            return f"data stream {stream}: exists, and this distribution has no lifecycle API: its retention " \
                   "stays as it was created"
        raise
    return f"data stream {stream}: retention set to {retention}"


def _checkpoint_mapping(client: Elasticsearch, stream: str, namespace: str) -> str:
    """A template's mappings only reach backing indices created after it: the checkpoint stream (never rolled over
    by a lifecycle) gets new fields (the tiles, the cosignatures) on its existing indices here."""
    request(client, "PUT", f"/{stream}/_mapping", checkpoint_template(namespace)["template"]["mappings"])
    return f"data stream {stream}: mapping up to date"


def _exists(client: Elasticsearch, stream: str) -> bool:
    try:
        return bool(request(client, "GET", f"/_resolve/index/{stream}")["data_streams"])
    except EsError as exc:
        if exc.reason == "http_404":
            return False
        raise


# -- the shipper's side: read-only checks -------------------------------------------------------------------------
def check(client: Elasticsearch, namespace: str) -> None:
    """Raise ``NotSetUp`` naming what is missing, ``EsError`` when Elasticsearch gave no definite answer."""
    stream = data_stream_name(namespace)
    missing = _missing_privileges(client, [stream, checkpoint_stream_name(stream)])
    if missing:
        raise NotSetUp(f"the shipper's Elasticsearch credential lacks {', '.join(missing)}; give it the "
                       "tee_shipper role (docs/elasticsearch/roles.yml)")
    for want in wanted(namespace):
        stored = _stored(client, want.name)
        fix = f"run `tee-audit setup --es.namespace {namespace}` with the set-up credential"
        if stored is None:
            raise NotSetUp(f"index template {want.name} is missing; {fix}")
        if _stored_fingerprint(stored) != want.fingerprint:
            raise NotSetUp(f"index template {want.name} is not the one this tee-audit expects (found "
                           f"{_stored_fingerprint(stored) or 'none'}, want {want.fingerprint}); {fix}")


def _missing_privileges(client: Elasticsearch, streams: list[str]) -> list[str]:
    """The privileges the credential lacks ("cluster monitor", "read on <stream>"); [] when the cluster has security
    off (no ``_has_privileges`` to ask, so nothing is known to be missing)."""
    body = {"cluster": list(SHIPPER_CLUSTER_PRIVILEGES),
            "index": [{"names": streams, "privileges": list(SHIPPER_INDEX_PRIVILEGES)}]}
    try:
        answer = request(client, "POST", "/_security/user/_has_privileges", body)
    except EsError as exc:
        if _security_off(exc):
            return []
        raise
    if answer.get("has_all_requested"):
        return []
    missing = [f"cluster privilege {p}" for p, ok in answer.get("cluster", {}).items() if not ok]
    for stream, privileges in answer.get("index", {}).items():
        missing += [f"{p} on {stream}" for p, ok in privileges.items() if not ok]
    return missing or ["a privilege Elasticsearch did not name"]


def _security_off(exc: EsError) -> bool:
    """Security disabled: the integ-test distribution has no such handler (400), the default one says so (500)."""
    text = str(exc)
    return ("no handler found" in text and exc.reason == "http_400") or "Security must be explicitly enabled" in text \
        or "security is not enabled" in text.lower()
