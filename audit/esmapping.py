"""What Elasticsearch would refuse, decided before a record is chained.

A record Elasticsearch refuses can never be delivered: the sink would stall on it for good. So an event that our
index template (``audit.sinks.elasticsearch.template``) cannot index is quarantined instead of chained. The rules
below were established against a real Elasticsearch 9.2.4 with that template (``tests/audit/test_es_mapping.py``
sends every case to it); where Elasticsearch's own rule is intricate we refuse a little more, never less:

- ``@timestamp`` (``date_nanos``, format ``strict_date_optional_time_nanos``): ``YYYY-MM-DDTHH:MM:SS``, an optional
  fraction of 1-9 digits after ``.`` or ``,``, and a zone ``Z``, ``±HH``, ``±HHMM`` or ``±HH:MM``, all digits ASCII;
  between 1970-01-01T00:00:00Z and 2262-04-11T23:47:16.854775807Z. Python's ``fromisoformat`` accepts much more (a
  space for ``T``, basic and week formats, lower case) that Elasticsearch refuses.
- Field names at the top level and inside mapped objects: not empty, and no dot-separated part empty or blank
  (``""``, ``" "``, ``".a"``, ``"a..b"``; ``"a."`` too, to be safe). Dotted names are paths (``"host.name"``).
  At the top level no name starts with ``_``: Elasticsearch refuses a metadata field's name there (``_id``,
  ``_source``, ``_routing``, ``_ignored_source``..., even holding null); which names those are depends on the
  version and plugins, so all are refused.
- A mapped object (``event``, ``host``, ``tee.vm``...) takes an object, a list of objects, or null; a keyword or
  text field takes scalars or lists of them, not objects; a keyword is at most 32766 bytes of UTF-8 (Lucene's
  term limit). A long, ip or date field takes any scalar: a value it cannot parse is left unindexed
  (``index.mapping.ignore_malformed``), not refused.
- ``labels`` is ``flattened``: an object (or a list of objects), keys without NUL and nested at most 20 deep, each
  value but null (a number or a boolean as its text) at most 32766 bytes together with its key path. Unmapped
  fields are kept in ``_source`` and not parsed for a mapping.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

TERM_BYTES = 32766
FLATTENED_DEPTH = 20
# re.ASCII: \d (and int()) would take any Unicode decimal digit ("\u0662\u0660\u0662\u0666" for 2026), which
# Elasticsearch's date formats do not
_STAMP = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?"
                    r"(?:(Z)|([+-])(\d{2})(?::?(\d{2}))?)", re.ASCII)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_NANOS_END = dt.datetime(2262, 4, 11, 23, 47, 16, tzinfo=dt.UTC)  # date_nanos ends .854775807 later

_KEYWORD = {"type": "keyword"}
_LONG = {"type": "long"}
_IP = {"type": "ip"}


def _keywords(*names: str) -> dict[str, Any]:
    return {"properties": dict.fromkeys(names, _KEYWORD)}


# The index template's mapping (audit.sinks.elasticsearch.template): defined here, beside the rules it implies.
# Every field the exporter's event schema (exporter/schema/event.schema.json) names is mapped, so an auditor can
# search it, with ECS's types: addresses as ip, event.created as date, integers as long, other strings and booleans
# as keywords. A keyword takes any scalar; the template's ignore_malformed leaves a value an ip, date or long field
# cannot parse unindexed: so mapping a field refuses nothing but an object in it. Free-form objects (tee.tcb,
# tee.job.stats, tee.alert.annotations) stay unmapped.
PROPERTIES: dict[str, Any] = {
    "@timestamp": {"type": "date_nanos"},
    "message": {"type": "text"},
    "chain": {"properties": {"id": _KEYWORD, "seq": _LONG, "prev_hash": _KEYWORD, "hash": _KEYWORD}},
    "checkpoint": {"properties": {"size": _LONG, "root": _KEYWORD,
                                  "note": {"type": "keyword", "index": False, "doc_values": False}}},
    "ecs": _keywords("version"),
    "event": {"properties": {**dict.fromkeys(("id", "kind", "category", "type", "action", "outcome", "reason",
                                              "dataset", "module"), _KEYWORD),
                             "created": {"type": "date"}, "duration": _LONG}},
    "host": _keywords("name"),
    "file": {"properties": {"path": _KEYWORD, "hash": _keywords("sha256")}},
    "source": {"properties": {"ip": _IP, "address": _KEYWORD, "port": _LONG}},
    "destination": {"properties": {"ip": _IP, "port": _LONG}},
    "network": _keywords("transport", "iana_number"),
    "rule": _keywords("name", "ruleset"),
    "user": _keywords("id", "name"),
    # flattened: any labels, never a mapping conflict between two events (a dynamic object would map labels.a
    # from the first event and refuse a later event whose labels.a has another shape)
    "labels": {"type": "flattened"},
    "tee": {"properties": {
        "type": _KEYWORD,
        "vm": _keywords("name", "uuid", "state", "previous_state", "detail", "sandbox_id", "debug_allowed"),
        "evidence": {"properties": {"sha256": _KEYWORD, "format": _KEYWORD, "version": _LONG}},
        "measurement": _KEYWORD,
        "attestation": _keywords("source", "signer", "product", "warnings"),
        "policy": _keywords("result", "violations"),
        "kbs": _keywords("resource", "repository", "resource_type", "tag", "requester", "decision"),
        "egress": {"properties": {"suppressed": _LONG}},
        "job": _keywords("operation"),
        "alert": _keywords("status", "fingerprint", "receiver"),
    }},
}


class Refused(ValueError):
    """Elasticsearch would refuse the event; the message names the field and why."""

    reason = "refused_by_mapping"


class BadTimestamp(Refused):
    reason = "bad_timestamp"


def check_timestamp(stamp: Any) -> None:
    if not isinstance(stamp, str):
        raise BadTimestamp("@timestamp is missing or not a string")
    match = _STAMP.fullmatch(stamp)
    if match is None:
        raise BadTimestamp(f"@timestamp {stamp[:40]!r} is not in Elasticsearch's strict ISO 8601 form with a zone")
    year, month, day, hour, minute, second, fraction, zulu, sign, zh, zm = match.groups()
    if not (zulu or zh < "18" and (zm is None or zm < "60")):
        raise BadTimestamp(f"@timestamp {stamp[:40]!r} has a zone offset Elasticsearch does not take")
    if "1970" < year < "2262":
        try:  # well inside the range whatever the zone: only the calendar is left to check
            dt.datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
        except ValueError:
            raise BadTimestamp(f"@timestamp {stamp[:40]!r} is not a valid date and time") from None
        return
    try:
        offset = dt.timedelta(0) if zulu else (1 if sign == "+" else -1) * dt.timedelta(
            hours=int(zh), minutes=int(zm or 0))
        when = dt.datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                           tzinfo=dt.timezone(offset))
    except ValueError:
        raise BadTimestamp(f"@timestamp {stamp[:40]!r} is not a valid date and time") from None
    micros = int((fraction or "0").ljust(9, "0")[:6])
    if not _EPOCH <= when + dt.timedelta(microseconds=micros) <= _NANOS_END:
        raise BadTimestamp(f"@timestamp {stamp[:40]!r} is outside 1970..2262 (date_nanos)")


def check_event(event: dict[str, Any]) -> None:
    """Raise ``Refused`` when Elasticsearch would refuse ``event`` under ``PROPERTIES``.

    On the shipper's hot path: the common shapes (a mapped object holding a dict, a keyword holding a short string
    or a list of them) are decided inline and known-good field names are remembered; anything else takes the
    general checks."""
    check_timestamp(event.get("@timestamp"))
    _check_object(event, _COMPILED, "")


Spec = tuple[str, "dict[str, Spec] | None", dict[str, Any]]  # (type, compiled sub-properties, the mapping)


def _compile(properties: dict[str, Any]) -> dict[str, Spec]:
    return {key: (mapping.get("type", "object"),
                  _compile(mapping["properties"]) if "properties" in mapping else None, mapping)
            for key, mapping in properties.items()}


_COMPILED = _compile(PROPERTIES)
_GOOD_NAMES: set[str] = set()
_SCALAR = frozenset((str, int, float, bool, type(None)))
_SHORT = TERM_BYTES // 4  # characters: at most 4 UTF-8 bytes each, so never over the term limit


def _check_object(obj: dict[str, Any], compiled: dict[str, Spec], prefix: str) -> None:
    for key, value in obj.items():
        spec = compiled.get(key)
        if spec is None:
            if not prefix and key[:1] == "_":  # not cached in _GOOD_NAMES: "_id" is good inside an object
                raise Refused(f"top-level field {key[:40]!r} starts with '_', as Elasticsearch's metadata fields do")
            if key not in _GOOD_NAMES:
                _check_name(prefix, key)
            if "." in key:  # a path: "host.name" is host -> name
                _check_path(key.split("."), value, compiled, prefix)
            continue
        kind, sub, mapping = spec
        kind_of_value = type(value)
        if sub is not None and kind_of_value is dict:
            _check_object(value, sub, f"{prefix}{key}.")
        elif kind == "keyword" and (kind_of_value is str and len(value) <= _SHORT or kind_of_value is list
                                    and all(type(v) is str and len(v) <= _SHORT for v in value)):
            continue
        elif kind == "date_nanos" and not prefix:
            continue  # @timestamp: checked by check_event
        else:
            _check_mapped(prefix + key, mapping, value)


def _check_name(prefix: str, key: str) -> None:
    if any(not part.strip() for part in key.split(".")):
        raise Refused(f"field name {prefix + key!r} has an empty or blank part")
    if len(_GOOD_NAMES) < 10_000:  # bounded: names come from input
        _GOOD_NAMES.add(key)


def _check_path(parts: list[str], value: Any, compiled: dict[str, Spec], prefix: str) -> None:
    spec = compiled.get(parts[0])
    if spec is None:
        return  # not mapped: kept in _source only (dynamic: false)
    kind, sub, mapping = spec
    name = prefix + parts[0]
    if len(parts) > 1:
        if sub is None:
            raise Refused(f"{name} is a {kind} field, not an object")
        _check_path(parts[1:], value, sub, name + ".")
        return
    _check_mapped(name, mapping, value)


def _check_mapped(name: str, mapping: dict[str, Any], value: Any) -> None:
    kind = mapping.get("type", "object")
    if kind == "object":
        for item in value if isinstance(value, list) else [value]:
            if item is None:
                continue
            if not isinstance(item, dict):
                raise Refused(f"{name} is an object in the mapping, not {type(item).__name__}")
            _check_object(item, _compile(mapping["properties"]), name + ".")
    elif kind == "flattened":
        for item in value if isinstance(value, list) else [value]:
            if item is not None and not isinstance(item, dict):
                raise Refused(f"{name} must be an object (flattened), not {type(item).__name__}")
            if item is not None:
                _check_flattened(item, name, 1)
    else:
        _check_leaf(value, name, kind, mapping)


def _check_leaf(value: Any, name: str, kind: str, mapping: dict[str, Any]) -> None:
    for item in _flat(value):
        if type(item) not in _SCALAR:
            raise Refused(f"{name} is a {kind} field, not {type(item).__name__}")
        if kind == "date_nanos" and item is not None:
            check_timestamp(item)
        if kind == "keyword" and mapping.get("index", True) and isinstance(item, str) \
                and _utf8_len(item) > TERM_BYTES:
            raise Refused(f"{name} is longer than {TERM_BYTES} bytes (a keyword term)")


def _utf8_len(text: str) -> int:
    """Bytes of ``text`` in UTF-8 as Lucene counts them: a lone surrogate (``"\\ud800"`` is valid JSON, e.g. in an
    alert's labels) becomes U+FFFD, 3 bytes, as many as ``surrogatepass`` gives it. The sealing quarantines such a
    value (it has no UTF-8 form); raising here instead would take the ship loop down."""
    return len(text.encode("utf-8", "surrogatepass"))


def _flat(value: Any) -> list[Any]:
    if not isinstance(value, list):
        return [value]
    return [leaf for item in value for leaf in _flat(item)]


def _check_flattened(obj: dict[str, Any], path: str, depth: int) -> None:
    if depth > FLATTENED_DEPTH:
        raise Refused(f"{path} nests deeper than {FLATTENED_DEPTH} (flattened depth limit)")
    for key, value in obj.items():
        inner = f"{path}.{key}"
        if "\0" in key:  # the separator of a term's key path and value; refused even when the value is null
            raise Refused(f"{inner!r} holds NUL, which a flattened field's keys may not")
        for item in _flat(value):
            if isinstance(item, dict):
                _check_flattened(item, inner, depth + 1)
            elif item is not None and _utf8_len(inner) + _utf8_len(
                    item if isinstance(item, str) else json.dumps(item)) > TERM_BYTES - 64:
                # every value but null is a term "<key path>\0<value>", a number or a boolean as its text: a long
                # key alone is too long
                raise Refused(f"{inner} is longer than a flattened term may be")
