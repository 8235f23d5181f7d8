"""Helpers shared by the audit tests: journals full of real exporter events, and running the real shipper."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from audit import checkpoint as cp
from audit.config import ShipSettings, validate
from audit.ship import run
from exporter.journal import Journal

TEE_AUDIT = [sys.executable, "-m", "audit"]


def write_journal(path: Path, count: int, host: str = "h1", start: int = 0, max_bytes: int = 0) -> None:
    """``count`` schema-valid exporter events appended through the exporter's own Journal writer."""
    journal = Journal(path, max_bytes=max_bytes or 1 << 40, host=host)
    for i in range(start, start + count):
        journal.append(journal.event(action="started", category=["host"], type=["start"], dataset="tee.lifecycle",
                                     outcome="success", message=f"domain vm-{i} started",
                                     tee={"type": "sev-snp", "vm": {"name": f"vm-{i}", "uuid": f"uuid-{i}"}}))
    journal.close()


def keys(directory: Path) -> tuple[Path, Path]:
    if not (directory / "audit.key").exists():
        cp.generate(directory)
    return directory / "audit.key", directory / "audit.pub"


def es_setup(url: str, namespace: str = "default", retention: str = "90d", **auth: Any) -> list[str]:
    """``tee-audit setup``, in process: what an administrator runs before the first ``ship`` into ``namespace``
    (``auth``: ``ca_file``, ``username``, ``password_file``, ``api_key_file``). Returns its output lines."""
    from audit.setup import install
    from audit.sinks.elasticsearch import connect

    client = connect(url, **auth)
    try:
        return list(install(client, url, namespace, retention))
    finally:
        client.close()


def ship_once(sources: list[Path], key: Path, spool: Path, store: Path | None = None, es: str | None = None,
              namespace: str = "default", every: int = 10, chain: str = "h1", setup: bool = True,
              **extra: Any) -> int:
    """The shipper's ``--once`` run, in process; with ``es`` and ``setup``, after ``es_setup`` with the same
    credential (the shipper itself never writes templates)."""
    if es is not None and setup:
        es_setup(es, namespace, **{k.removeprefix("es_"): v for k, v in extra.items()
                                   if k in ("es_ca_file", "es_username", "es_password_file", "es_api_key_file")})
    settings = ShipSettings(sources=tuple(sources), store=store, es=es, es_namespace=namespace, signing_key=key,
                            chain=chain, spool_dir=spool, checkpoint_every_records=every, once=True,
                            checkpoint_every_seconds=3600, **extra)
    return run(validate(settings))


def verify_json(*args: str) -> tuple[int, dict[str, Any]]:
    """``tee-audit verify ... --json`` as a subprocess: exit code and parsed report."""
    proc = subprocess.run([*TEE_AUDIT, "verify", *args, "--json"], capture_output=True, text=True, timeout=120,
                          check=False)
    report = json.loads(proc.stdout) if proc.stdout.strip() else {}
    return proc.returncode, report


def kinds(report: dict[str, Any]) -> list[tuple[str, int | None]]:
    return sorted((f["kind"], f["seq"]) for f in report["findings"])


def shipped_seq(spool: Path) -> int:
    """How far the Elasticsearch sink's cursor in ``spool`` has come (0 before its first write)."""
    try:
        return json.loads((spool / "cursor-elasticsearch.json").read_text())["next_seq"]
    except (OSError, ValueError):
        return 0
