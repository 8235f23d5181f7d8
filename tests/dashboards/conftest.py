"""A real tee-exporter on libvirt's test driver (the demo host), scraped by a real Prometheus that loads the
project's rule files: what the dashboard and recording-rule queries are evaluated against."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fixtures.prometheus import PrometheusServer, TeeExporter, wait_until, write_demo_host_files

ROOT = Path(__file__).resolve().parents[2]
DEMO_NODE = ROOT / "exporter" / "demo" / "testnode.xml"


@pytest.fixture(scope="session")
def demo_exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TeeExporter]:
    workdir = tmp_path_factory.mktemp("demo-exporter")
    settings = {"libvirt.uri": f"test://{DEMO_NODE}", **write_demo_host_files(workdir)}
    exporter = TeeExporter(workdir, settings)
    try:
        yield exporter.start()
    finally:
        exporter.stop()


@pytest.fixture(scope="session")
def demo_prometheus(demo_exporter: TeeExporter,
                    prometheus_servers: Callable[..., PrometheusServer]) -> PrometheusServer:
    """Prometheus after at least 5 scrapes and rule evaluations, so rate() and the recorded series have data."""
    prom = prometheus_servers(scrape={"tee-exporter": [demo_exporter.address]},
                              rule_files=sorted((ROOT / "alerts").glob("*.rules.yml")))
    wait_until(prom.targets_up, 30, "the exporter target to be up")
    wait_until(lambda: prom.query('count_over_time(tee:host_domains:count[1m]) >= 5'), 60,
               "5 evaluations of the recording rules")
    return prom
