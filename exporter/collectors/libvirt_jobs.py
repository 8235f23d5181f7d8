"""Job families of the libvirt collector: progress of the migrations, saves, dumps and snapshots running now.

Gauges, not counters: each describes the one job in flight and starts again with the next job. A job that ends
between two scrapes is seen in the journal instead (``domain-job-completed``, lifecycle collector).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.virt.jobs import FIELDS, job_fields, operation_name


@dataclass(frozen=True)
class JobRecord:
    """One domain's ``virDomainGetJobStats`` answer (a job is running)."""

    domain: str
    params: Mapping[str, Any]


def job_families(jobs: Iterable[JobRecord]) -> Iterator[Metric]:
    labels = ["domain", "operation"]
    active = GaugeMetricFamily("tee_domain_job_type",
                               "libvirt virDomainJobType of the domain's running job (1 bounded, 2 unbounded, "
                               "3 completed: data sent, job finishing).", labels=labels)
    families = {suffix: GaugeMetricFamily(f"tee_domain_job_{suffix}", doc, labels=labels)
                for _, suffix, _, doc in FIELDS}
    for job in sorted(jobs, key=lambda j: j.domain):
        key = [job.domain, operation_name(job.params)]
        active.add_metric(key, job.params.get("type", 0))
        for suffix, value in job_fields(job.params).items():
            families[suffix].add_metric(key, value)
    yield active
    yield from families.values()
