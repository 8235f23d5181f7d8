"""Helpers shared by the exporter tests: the demo node, test-driver node generation, exposition utilities."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.collectors.base import Collector
from tests.jsonl import complete_json_lines

ROOT = Path(__file__).resolve().parents[2]
DEMO_NODE = ROOT / "exporter" / "demo" / "testnode.xml"
DEMO_URI = f"test://{DEMO_NODE}"
GOLDEN = Path(__file__).parent / "golden"


def exposition(*collectors: Collector) -> str:
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry).decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(name, sorted labels): value}`` of an exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, tuple(sorted(labels.items()))))


def promtool_check(text: str) -> str:
    """``promtool check metrics`` output (empty when clean)."""
    proc = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                          check=False)
    return (proc.stdout + proc.stderr).strip()


def generated_node(path: Path, count: int, states: tuple[int, ...] = (1, 3, 5)) -> str:
    """A test-driver node file with ``count`` domains cycling through plain, sev, sev-es and sev-snp."""
    kinds = ["", ("<launchSecurity type='sev'><cbitpos>51</cbitpos><reducedPhysBits>1</reducedPhysBits>"
                 "<policy>0x1</policy></launchSecurity>"),
             ("<launchSecurity type='sev'><cbitpos>51</cbitpos><reducedPhysBits>1</reducedPhysBits>"
             "<policy>0x5</policy></launchSecurity>"),
             "<launchSecurity type='sev-snp'><policy>0x30000</policy></launchSecurity>"]
    doms = []
    for i in range(count):
        doms.append(
            "<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>"
            f"<name>gen-{i:05d}</name><uuid>7ee10000-0000-4000-8000-{i:012d}</uuid>"
            "<memory unit='MiB'>512</memory><vcpu>1</vcpu><os><type>hvm</type></os>"
            f"{kinds[i % 4]}<devices><disk type='file' device='disk'><source file='/img/{i}.img'/>"
            "<target dev='vda' bus='virtio'/></disk></devices>"
            f"<test:runstate>{states[i % len(states)]}</test:runstate></domain>")
    path.write_text("<node>" + "".join(doms) + "</node>")
    return f"test://{path}"


def strip_durations(text: str) -> str:
    return "\n".join(line for line in text.splitlines()
                     if not re.match(r"tee_exporter_collector_duration_seconds\{", line))


def make_ctx(tmp_path: Path, uri: str = DEMO_URI, **overrides):
    """A CollectorContext on ``uri`` with its journal under ``tmp_path``."""
    from exporter.collectors.base import CollectorContext
    from exporter.config import Settings
    from exporter.journal import Journal

    values = {"sys_root": tmp_path / "no-sys", "cgroup_root": tmp_path / "no-cgroup",
              "proc_root": tmp_path / "no-proc", **overrides}
    settings = Settings(libvirt_uri=uri, journal_path=tmp_path / "journal.jsonl", host_name="test-host", **values)
    return CollectorContext(settings=settings, journal=Journal(settings.journal_path, host="test-host"))


def journal_lines(ctx) -> list[dict]:
    return complete_json_lines(ctx.settings.journal_path)


def assert_schema_valid(events: list[dict]) -> None:
    import jsonschema

    from exporter.journal import load_schema

    validator = jsonschema.Draft202012Validator(load_schema(), format_checker=jsonschema.FormatChecker())
    for event in events:
        validator.validate(event)


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02):
    """Poll until ``predicate()`` is truthy (events arrive on libvirt's loop thread); returns its value."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)


def golden_update_requested(environ: Mapping[str, str]) -> bool:
    """Whether UPDATE_GOLDEN asks to rewrite golden files. Refused in CI (``CI`` set to anything but false/0):
    there a rewrite would turn every golden test into a comparison of the output with itself."""
    if not environ.get("UPDATE_GOLDEN"):
        return False
    if environ.get("CI", "").lower() not in ("", "0", "false"):
        raise RuntimeError("UPDATE_GOLDEN is set in CI: golden files are rewritten only by a developer, "
                           "and the diff reviewed; unset UPDATE_GOLDEN")
    return True


def check_golden(name: str, text: str) -> None:
    """Compare with tests/exporter/golden/<name>; UPDATE_GOLDEN=1 rewrites the file instead (never in CI)."""
    import os

    path = GOLDEN / name
    if golden_update_requested(os.environ):
        path.write_text(text)
    assert text == path.read_text()
