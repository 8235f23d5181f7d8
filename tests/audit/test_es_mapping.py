"""Events Elasticsearch would refuse are quarantined before chaining (issue 10 item 6). Every case is first sent to
a real Elasticsearch (9.2.4 and 8.19) under our template, so the rules are checked against what it actually refuses
and accepts."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from audit import esmapping
from audit.sinks.elasticsearch import data_stream_name, request, template
from exporter.schema import load_schema
from tests.audit.kit import keys, ship_once, verify_json, write_journal

T = "2026-11-01T00:00:00Z"


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": "x"}
    for i in range(levels - 1):
        value = {f"k{i}": value}
    return value


REFUSED: dict[str, dict[str, Any]] = {
    "space_for_T": {"@timestamp": "2026-11-01 00:00:09Z"},
    "basic_format": {"@timestamp": "20261101T000009Z"},
    "week_date": {"@timestamp": "2026-W44-1T00:00:00Z"},
    "ordinal_date": {"@timestamp": "2026-305T00:00:00Z"},
    "lower_case": {"@timestamp": "2026-11-01t00:00:00z"},
    "no_seconds": {"@timestamp": "2026-11-01T00:00Z"},
    "year_9999": {"@timestamp": "9999-01-01T00:00:00Z"},
    "before_1970": {"@timestamp": "1960-01-01T00:00:00Z"},
    # Python's \d and int() take any Unicode decimal digit; Elasticsearch's formats take ASCII digits only
    "arabic_indic_year": {"@timestamp": "\u0662\u0660\u0662\u0666-11-01T00:00:00Z"},
    "fullwidth_day": {"@timestamp": "2026-11-\uff10\uff11T00:00:00Z"},
    "arabic_indic_fraction": {"@timestamp": "2026-11-01T00:00:00.\u0665Z"},
    "event_is_a_string": {"@timestamp": T, "event": "x"},
    "object_in_host_name": {"@timestamp": T, "host": {"name": {"a": 1}}},
    "objects_in_a_keyword_list": {"@timestamp": T, "host": {"name": [{"a": 1}]}},
    "dotted_object_in_keyword": {"@timestamp": T, "event.kind": {"a": 1}},
    "object_in_message": {"@timestamp": T, "message": {"a": 1}},
    "string_for_tee_vm": {"@timestamp": T, "tee": {"vm": "x"}},
    "immense_keyword": {"@timestamp": T, "event": {"reason": "x" * 40_000}},
    "labels_not_an_object": {"@timestamp": T, "labels": "x"},
    "labels_too_deep": {"@timestamp": T, "labels": _deep(21)},
    # a flattened field indexes "<key path>\0<value>" for every value, numbers and booleans too: a long key alone
    # makes the term too long (the value's type does not matter)
    "labels_long_key_with_a_number": {"@timestamp": T, "labels": {"k" * 33_000: 1}},
    "labels_long_path_with_a_boolean": {"@timestamp": T, "labels": {"k" * 20_000: {"j" * 13_000: True}}},
    # "\0" separates a flattened term's key path from its value, so Elasticsearch refuses it in a key
    "labels_nul_in_a_key": {"@timestamp": T, "labels": {"a\u0000b": 1}},
    "labels_nul_in_a_nested_key": {"@timestamp": T, "labels": {"a": {"\u0000": "v"}}},
    "empty_field_name": {"@timestamp": T, "": 1},
    "blank_field_name": {"@timestamp": T, " ": 1},
    "double_dot_name": {"@timestamp": T, "a..b": 1},
    "leading_dot_name": {"@timestamp": T, ".a": 1},
    # a top-level name Elasticsearch keeps for a metadata field, whatever the value (null too), or a path into one
    "metadata_field_id": {"@timestamp": T, "_id": "x"},
    "metadata_field_source_null": {"@timestamp": T, "_source": None},
    "metadata_field_path": {"@timestamp": T, "_routing.x": 1},
    "metadata_field_doc_count": {"@timestamp": T, "_doc_count": -5},
    "metadata_field_ignored_source": {"@timestamp": T, "_ignored_source": {"a": 1}},
    "object_in_tee_job_operation": {"@timestamp": T, "tee": {"job": {"operation": {"a": 1}}}},
    "object_in_a_long": {"@timestamp": T, "destination": {"port": {"a": 1}}},
    "object_in_an_ip": {"@timestamp": T, "source": {"ip": [{"a": 1}]}},
}
ACCEPTED: dict[str, dict[str, Any]] = {
    "plain": {"@timestamp": T},
    "nanos_and_offset": {"@timestamp": "2026-11-01T00:00:00.123456789+01:00"},
    "comma_fraction": {"@timestamp": "2026-11-01T00:00:00,5Z"},
    "short_offset": {"@timestamp": "2026-11-01T00:00:00+01"},
    "offset_without_colon": {"@timestamp": "2026-11-01T00:00:00-0330"},
    "number_in_keyword": {"@timestamp": T, "host": {"name": 5}},
    "nested_keyword_lists": {"@timestamp": T, "host": {"name": [["a"], "b"]}},
    "list_of_objects": {"@timestamp": T, "host": [{"name": "a"}]},
    "null_object": {"@timestamp": T, "host": None},
    "unmapped_anything": {"@timestamp": T, "zz": {"": {"a..b": [1, {"x": None}]}}},
    "labels_any_shape": {"@timestamp": T, "labels": {"a": {"b": 1}, "c": [True, "x"], "": "y"}},
    "labels_20_deep": {"@timestamp": T, "labels": _deep(20)},
    "labels_long_key_with_null": {"@timestamp": T, "labels": {"k" * 33_000: None}},  # null: nothing indexed
    "labels_nul_in_a_value": {"@timestamp": T, "labels": {"a": "v\u0000w"}},
    # a lone surrogate ("\ud800", valid JSON) is indexed as U+FFFD; the sealing quarantines it (no UTF-8 form),
    # but the mapping check must not fail on it first (an alert's labels reach it unsealed)
    "lone_surrogate_in_labels_key": {"@timestamp": T, "labels": {"\ud800": "v"}},
    "lone_surrogate_in_a_long_keyword": {"@timestamp": T, "event": {"reason": "\ud800" + "x" * 9_000}},
    # ignore_malformed (the template): a long, ip or date field holding what it cannot parse leaves it unindexed
    "text_in_a_long": {"@timestamp": T, "destination": {"port": "https"}},
    "long_past_64_bits": {"@timestamp": T, "event": {"duration": 1 << 63}, "source": {"port": -(1 << 63) - 1}},
    "fraction_in_a_long": {"@timestamp": T, "tee": {"evidence": {"version": 1.5}}},
    "boolean_in_a_long": {"@timestamp": T, "tee": {"egress": {"suppressed": [True, None]}}},
    "not_an_ip": {"@timestamp": T, "source": {"ip": "10.0.0.256"}, "destination": {"ip": ["fe80::1%eth0", 7]}},
    "not_a_date": {"@timestamp": T, "event": {"created": "yesterday"}},
    "boolean_in_keyword": {"@timestamp": T, "tee": {"vm": {"debug_allowed": True}}},
    "underscore_name_in_an_object": {"@timestamp": T, "tee": {"vm": {"_id": "v"}}, "zz": {"_source": 1}},
    "free_form_tcb": {"@timestamp": T, "tee": {"tcb": {"snp": 22, "": {"a..b": [1]}}}},
}


@pytest.fixture(params=["elasticsearch", "elasticsearch8"])
def es_node(request: pytest.FixtureRequest) -> str:
    """Each supported Elasticsearch in turn: 9.2.4 and 8.19."""
    return str(request.getfixturevalue(request.param))


def _bulk(es: Elasticsearch, stream: str, docs: dict[str, dict[str, Any]]) -> dict[str, int]:
    body = "".join(json.dumps({"create": {"_id": k}}) + "\n" + json.dumps(v) + "\n" for k, v in docs.items())
    items = request(es, "POST", f"/{stream}/_bulk", body.encode(), ndjson=True)["items"]
    return {item["create"]["_id"]: item["create"]["status"] for item in items}


@pytest.mark.elasticsearch
def test_the_rules_match_what_elasticsearch_refuses_and_accepts(es_node: str, es_namespace: str) -> None:
    es = Elasticsearch(es_node)
    request(es, "PUT", f"/_index_template/{data_stream_name(es_namespace)}", template(es_namespace, "7d"))
    statuses = _bulk(es, data_stream_name(es_namespace), {**REFUSED, **ACCEPTED})
    assert {k: statuses[k] for k in REFUSED} == dict.fromkeys(REFUSED, 400)
    assert {k: statuses[k] for k in ACCEPTED} == dict.fromkeys(ACCEPTED, 201)
    for name, event in REFUSED.items():
        with pytest.raises(esmapping.Refused):
            esmapping.check_event(event)
            pytest.fail(name)
    for event in ACCEPTED.values():
        esmapping.check_event(event)


def _schema_leaves(schema: dict[str, Any], path: str = "") -> dict[str, dict[str, Any]]:
    """Every field the exporter's event schema names (dotted path -> its schema), free-form objects included."""
    if "properties" not in schema:
        return {path: schema}
    return {name: leaf for key, sub in schema["properties"].items()
            for name, leaf in _schema_leaves(sub, f"{path}.{key}" if path else key).items()}


ECS_TYPES = {"source.ip": "ip", "destination.ip": "ip", "event.created": "date"}
EXAMPLES = {"ip": "10.1.2.3", "date": "2026-11-29T04:00:00Z"}


def _example(name: str, leaf: dict[str, Any]) -> Any:
    if name in ECS_TYPES:
        return EXAMPLES[ECS_TYPES[name]]
    if "enum" in leaf or "const" in leaf:
        return leaf.get("enum", [leaf.get("const")])[-1]
    return {"integer": 7, "boolean": True, "array": ["v"], "object": {"k": 1}}.get(leaf.get("type"), "v")


LEAVES = {name: leaf for name, leaf in _schema_leaves(load_schema()).items() if name != "@timestamp"}
SEARCHABLE = {name: _example(name, leaf) for name, leaf in LEAVES.items() if leaf.get("type") != "object"}


def _mapping(name: str) -> dict[str, Any] | None:
    properties: Any = {"properties": esmapping.PROPERTIES}
    for part in name.split("."):
        properties = properties.get("properties", {}).get(part)
        if properties is None:
            return None
    return properties


def test_every_field_of_the_exporters_events_is_mapped() -> None:
    want = {name: ECS_TYPES.get(name) or ("long" if leaf.get("type") == "integer" else
                                          "text" if name == "message" else "keyword")
            for name, leaf in LEAVES.items() if name in SEARCHABLE}
    assert {name: (_mapping(name) or {}).get("type") for name in want} == want
    free_form = [name for name in LEAVES if name not in SEARCHABLE]
    assert free_form and all(_mapping(name) is None for name in free_form)  # tee.tcb, tee.job.stats: any shape


def _nested(flat: dict[str, Any]) -> dict[str, Any]:
    event: dict[str, Any] = {"@timestamp": T}
    for name, value in flat.items():
        *parents, last = name.split(".")
        node = event
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return event


@pytest.mark.elasticsearch
def test_an_auditor_can_search_every_field_of_the_exporters_events(elasticsearch: str, es_namespace: str) -> None:
    es = Elasticsearch(elasticsearch)
    stream = data_stream_name(es_namespace)
    request(es, "PUT", f"/_index_template/{stream}", template(es_namespace, "7d"))
    event = _nested({**SEARCHABLE, **{name: _example(name, LEAVES[name]) for name in LEAVES if name not in SEARCHABLE}})
    esmapping.check_event(event)
    assert _bulk(es, stream, {"every-field": event}) == {"every-field": 201}
    request(es, "POST", f"/{stream}/_refresh")
    found = {name: request(es, "POST", f"/{stream}/_search", {"query": {
        "match" if name == "message" else "term": {name: value[0] if isinstance(value, list) else value}}})[
        "hits"]["total"]["value"] for name, value in SEARCHABLE.items()}
    assert found == dict.fromkeys(SEARCHABLE, 1)
    cidr = {"query": {"term": {"destination.ip": "10.0.0.0/8"}}}  # ECS's ip type: "every flow into 10/8"
    assert request(es, "POST", f"/{stream}/_search", cidr)["hits"]["total"]["value"] == 1


@pytest.mark.elasticsearch
def test_refused_events_are_quarantined_and_the_rest_ships_with_no_hole(
        tmp_path: Path, elasticsearch: str, es_namespace: str) -> None:
    key, public = keys(tmp_path / "keys")
    journal, spool = tmp_path / "journal.jsonl", tmp_path / "spool"
    write_journal(journal, 2)
    offsets = {}
    for i, (name, event) in enumerate(REFUSED.items()):
        offsets[name] = journal.stat().st_size
        with open(journal, "ab") as fh:
            fh.write(json.dumps(event).encode() + b"\n")
        write_journal(journal, 1, start=10 + i)
    # two events whose labels a dynamic mapping would map differently: both index under flattened labels
    with open(journal, "ab") as fh:
        fh.writelines(json.dumps({"@timestamp": T, "labels": labels}).encode() + b"\n" for labels in ({"a": "x"}, {"a": {"b": 1}}))
    good = 2 + len(REFUSED) + 2

    assert ship_once([journal], key, spool, es=elasticsearch, namespace=es_namespace) == 0
    quarantined = [json.loads(line) for line in (spool / "quarantine/quarantine.jsonl").read_text().splitlines()]
    assert {q["offset"] for q in quarantined} == set(offsets.values())
    by_offset = {q["offset"]: q for q in quarantined}
    for name, offset in offsets.items():
        assert json.loads(base64.b64decode(by_offset[offset]["line_base64"])) == REFUSED[name]
    code, report = verify_json("--es", elasticsearch, "--data-stream", data_stream_name(es_namespace),
                               "--public-key", str(public))
    assert (code, report["records"], report["findings"]) == (0, good, [])
