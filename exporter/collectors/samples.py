"""Adding samples to a metric family with label dicts shared between families.

``add_metric`` builds a new label dict and a new sample-name string per sample. At 1,000 KVM domains the libvirt
collector exposes ~40 series per domain, most of them labelled with the domain alone: one shared ``{"domain": d}``
and one name string per family keep the scrape's peak RSS within budget (bench/README.md). The dicts handed in
are never modified afterwards.
"""

from __future__ import annotations

from functools import lru_cache

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample


@lru_cache(maxsize=512)
def _sample_name(family: str, kind: str) -> str:
    return family + "_total" if kind == "counter" else family


def add_sample(family: Metric, labels: dict[str, str], value: float) -> None:
    """Same sample as ``family.add_metric(list(labels.values()), value)``, for a gauge or counter family whose
    label names are ``labels``' keys in order."""
    family.samples.append(Sample(_sample_name(family.name, family.type), labels, value))
