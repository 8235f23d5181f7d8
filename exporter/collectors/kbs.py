"""Key-broker (Trustee KBS) collector: resource (key) requests from the KBS log, released or denied.

Each request line becomes ``tee_kbs_resource_requests_total{outcome,resource_type,reason}`` and one journal event
(dataset ``tee.kbs``) with the resource path ``kbs:///<repo>/<type>/<tag>``, the requester and the decision. The
resource type is operator-defined, so its label is bounded: the first ``MAX_RESOURCE_TYPES`` distinct well-formed
types keep their name and any further (or odd-looking) type is reported as ``other``; the exact path is only in
the journal. Without KBS log paths configured the collector exposes no series.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import Counter
from prometheus_client.metrics_core import Metric

from exporter.collectors.base import Collector, CollectorContext
from exporter.logs.follow import LogFollower, shared_unparsed, state_file_for
from exporter.logs.trustee import LogLineError, ResourceRequest, parse_kbs_line

DATASET = "tee.kbs"
SOURCE = "kbs"
MAX_RESOURCE_TYPES = 20
_TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")


class KbsCollector(Collector):
    name = "kbs"

    def __init__(self, ctx: CollectorContext) -> None:
        self.journal = ctx.journal
        self.unparsed = shared_unparsed(ctx.shared, self.name)
        self.follower = LogFollower("kbs", ctx.settings.kbs_log_paths, self.handle_line,
                                    state_file_for(ctx.settings.journal_path, "kbs"))
        if ctx.settings.kbs_log_paths:
            self.unparsed.register(SOURCE)
        self._lock = threading.Lock()  # guards the bounded set of resource-type labels
        self.requests = Counter("tee_kbs_resource_requests",
                                "KBS resource (key) requests by decision, resource type and reason.",
                                ["outcome", "resource_type", "reason"], registry=None)
        self._types: set[str] = set()

    def start(self) -> None:
        self.follower.start()

    def stop(self) -> None:
        self.follower.stop()

    def type_label(self, resource_type: str) -> str:
        with self._lock:
            if resource_type in self._types:
                return resource_type
            if _TYPE_RE.match(resource_type) and len(self._types) < MAX_RESOURCE_TYPES:
                self._types.add(resource_type)
                return resource_type
        return "other"

    def handle_line(self, path: Path, line: bytes) -> ResourceRequest | None:
        try:
            request = parse_kbs_line(line)
        except LogLineError:
            self.unparsed.inc(SOURCE)
            return None
        if request is None:
            return None
        label = self.type_label(request.resource_type)
        self.requests.labels(request.decision, label, request.reason).inc()
        released = request.decision == "released"
        self.journal.append(self.journal.event(
            action="kbs-resource-request", category=["iam"], type=["access", "allowed" if released else "denied"],
            dataset=DATASET, outcome="success" if released else "failure",
            reason=None if released else request.reason,
            message=f"{request.requester} {request.method} {request.resource}: {request.decision} "
                    f"(HTTP {request.status})",
            tee={"kbs": {"resource": request.resource, "repository": request.repository,
                         "resource_type": request.resource_type, "tag": request.tag,
                         "requester": request.requester, "decision": request.decision}},
            extra={"source": {"address": request.requester}, "log": {"file": {"path": str(path)}},
                   "http": {"request": {"method": request.method}, "response": {"status_code": request.status}},
                   "user_agent": {"original": request.user_agent}},
            timestamp=request.timestamp,
        ))
        return request

    def collect(self) -> Iterable[Metric]:
        if self.follower.tailers:
            yield from self.requests.collect()
        if self.unparsed.owner == self.name:
            unparsed = self.unparsed.family()
            if unparsed is not None:
                yield unparsed


def build(ctx: CollectorContext) -> Collector:
    return KbsCollector(ctx)
