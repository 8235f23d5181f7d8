"""The journal contract between ``tee-exporter`` and ``tee-audit``: the event JSON Schema, the ECS version and
the timestamp form. The one thing ``audit/`` imports from ``exporter/``.
"""

from __future__ import annotations

import datetime as dt
import json
from importlib import resources
from typing import Any

ECS_VERSION = "8.11.0"


def load_schema() -> dict[str, Any]:
    """The journal event JSON Schema (``event.schema.json``), as shipped in the package."""
    return json.loads(resources.files("exporter.schema").joinpath("event.schema.json").read_text())


def utc_timestamp(when: dt.datetime | None = None) -> str:
    """RFC 3339 UTC with microseconds and a ``Z``, the form of every ``@timestamp`` in the journal."""
    when = when or dt.datetime.now(dt.UTC)
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
