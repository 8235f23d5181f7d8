"""What the dashboards and rule files ask Prometheus: every panel and variable query, with Grafana's variables
replaced by what the "All" selection sends, and the raw exporter metrics each query ultimately reads."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_FILES = sorted((ROOT / "dashboards").glob("*.json"))
RULE_FILES = sorted((ROOT / "alerts").glob("*.rules.yml"))

# What Grafana sends for "All" (allValue .*) and its built-in intervals.
SUBSTITUTIONS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h",
                 "$host": ".*", "$tee_type": ".*", "$domain": ".*"}
_METRIC = re.compile(r"\b(?:tee[_:][A-Za-z0-9_:]*|up)\b")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
# Label names appear only inside {matchers} and the label lists of by/without/on/ignoring/group_*.
_LABEL_LISTS = re.compile(r"\{[^}]*\}|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    expr: str

    @property
    def id(self) -> str:
        return f"{self.dashboard}/{self.panel}"


def substitute(expr: str) -> str:
    for variable, value in SUBSTITUTIONS.items():
        expr = expr.replace(variable, value)
    return expr


def dashboards() -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in DASHBOARD_FILES}


def panels(dashboard: dict) -> list[dict]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def panel_queries() -> list[PanelQuery]:
    return [PanelQuery(name, panel["title"], substitute(target["expr"]))
            for name, dashboard in dashboards().items() for panel in panels(dashboard)
            for target in panel["targets"]]


def variable_queries() -> list[tuple[str, str, str, str]]:
    """(dashboard, variable, series selector, label) of every label_values() variable."""
    found = []
    for name, dashboard in dashboards().items():
        for var in dashboard["templating"]["list"]:
            if var["type"] != "query":
                continue
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            match = _LABEL_VALUES.match(query)
            assert match, f"{name}: variable {var['name']} is not a label_values() query"
            found.append((name, var["name"], substitute(match["selector"]), match["label"]))
    return found


def recording_rules() -> dict[str, str]:
    return {rule["record"]: rule["expr"] for path in RULE_FILES
            for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"] if "record" in rule}


def names_in(expr: str) -> list[str]:
    """The metric and recorded-series names written in ``expr``, in order (not label names or values)."""
    return _METRIC.findall(_LABEL_LISTS.sub(" ", _QUOTED.sub('""', expr)))


def raw_metrics(expr: str, recorded: dict[str, str] | None = None) -> set[str]:
    """The exporter/shipper metric names ``expr`` reads, looking through recorded series to their inputs."""
    recorded = recording_rules() if recorded is None else recorded
    names = set(names_in(expr))
    raw: set[str] = set()
    for name in names:
        raw |= raw_metrics(recorded[name], recorded) if name in recorded else {name}
    return raw


# `or vector(0)` makes a panel show 0 instead of "No data": a query so ended returns data even when the metric it
# names does not exist, so its own data proves nothing about the metric's name.
_FALLBACK = re.compile(r"\s+or\s+vector\(0\)")
DOCS = [ROOT / "docs" / "exporter.md", ROOT / "docs" / "attestation.md", ROOT / "docs" / "audit.md"]
_DOC_NAME = re.compile(r"`(tee_[A-Za-z0-9_{},]+)")
_ALTERNATIVES = re.compile(r"\{([a-z0-9_,]+)\}(?=[a-z0-9_])")  # tee_domain_block_{read,write}_bytes_total
HISTOGRAM_SERIES = ("_bucket", "_count", "_sum")


def without_fallback(expr: str) -> str:
    return _FALLBACK.sub("", expr)


def has_fallback(expr: str) -> bool:
    return bool(_FALLBACK.search(expr))


def _expand(name: str) -> set[str]:
    match = _ALTERNATIVES.search(name)
    if match is None:
        return {name.split("{", 1)[0]}  # what follows is a label list: tee_audit_records_in_total{source}
    return set().union(*(_expand(name[:match.start()] + part + name[match.end():])
                         for part in match[1].split(",")))


def documented_metrics(docs: list[Path] | None = None) -> set[str]:
    """Every metric name the docs' metric tables and text give, with the series a histogram adds."""
    names: set[str] = set()
    for path in DOCS if docs is None else docs:
        for written in _DOC_NAME.findall(path.read_text()):
            names |= _expand(written)
    return names | {name + suffix for name in names for suffix in HISTOGRAM_SERIES}


def unknown_metrics(expr: str, known: set[str]) -> set[str]:
    """The names ``expr`` reads (through recorded series) that are neither exposed nor documented: misspelt."""
    return raw_metrics(expr) - known - {"up"}
