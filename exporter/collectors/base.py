"""What every collector is: a named source of metric families, optionally with background work.

Like ``prometheus_client`` custom collectors, ``collect`` builds fresh families on every call (no stale series).
Event-driven collectors (lifecycle, attestation, kbs) do their work in ``start``ed threads and only report their
counters in ``collect``. ``exporter.registry`` times each ``collect`` and reports success and duration.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from prometheus_client.metrics_core import Metric

if TYPE_CHECKING:
    from exporter.config import Settings
    from exporter.journal import Journal


class CollectorError(Exception):
    """A collector could not collect; the message is the reason logged and the scrape reports success 0."""


@dataclass
class CollectorContext:
    """What a collector factory is given: the settings, the journal, and objects collectors share.

    ``shared`` holds things several collectors use (the libvirt connection, the domain XML cache), created by the
    first factory that needs them (``shared.setdefault``).
    """

    settings: Settings
    journal: Journal
    shared: dict[str, Any] = field(default_factory=dict)


class Collector:
    name: ClassVar[str]

    def start(self) -> None:
        """Start background work (event callbacks, file watchers). Default: none."""

    def stop(self) -> None:
        """Stop background work; must return promptly."""

    def collect(self) -> Iterable[Metric]:
        raise NotImplementedError

    def unavailable(self) -> Iterable[Metric]:
        """What to expose when ``collect`` did not finish within the scrape deadline (or is still stuck from an
        earlier scrape): the collector's own "up" gauge at 0, so that alerts on it fire rather than see nothing."""
        return ()
