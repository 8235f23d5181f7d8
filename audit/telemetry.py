"""The shipper's own telemetry: ``tee_audit_*`` metrics in a private registry, and OpenTelemetry spans.

Metrics (served on ``--web.listen-address``, default :9941):
  tee_audit_records_in_total{source}              records chained from a source
  tee_audit_records_shipped_total{sink}           records durably acknowledged by a sink
  tee_audit_spool_depth_records                   records in the spool not yet acknowledged by every sink
  tee_audit_spool_bytes                           bytes of spool segments on disk
  tee_audit_sink_errors_total{sink,reason}        failed sink writes (connection, rejected, server, mapping, ...);
                                                  configuration faults: tls_untrusted (not signed by es.ca-file),
                                                  tls_expired, tls_hostname, tls (other handshake failures),
                                                  http_401 (credentials), http_403 (privilege), not_set_up
                                                  (`tee-audit setup` missing: the shipper exits)
  tee_audit_source_errors_total{source,reason}    malformed input quarantined (not_json, not_utf8, too_long, ...)
  tee_audit_last_checkpoint_timestamp_seconds{chain}
  tee_audit_lag_seconds{source}                   age of the oldest spooled record not yet acknowledged by every
                                                  sink (0 when caught up); the spool is shared, so every source
                                                  reports the same value
  tee_audit_sink_conflicts_total{sink}           slots a sink already held with other content than ours (a record
                                                  or checkpoint pre-created or rewritten: tamper); the sink stops
  tee_audit_chain_intact{chain,sink}              1/0 from the periodic self-verification of what a sink holds
  tee_audit_selfcheck_errors_total{sink}          self-verifications that could not run or failed unexpectedly
  tee_audit_selfcheck_last_run_timestamp_seconds{sink}  Unix time of the last self-verification that ran to a verdict
  tee_audit_spool_write_errors_total              extra: spool appends that failed (disk full); reading pauses
  tee_audit_backpressure                          extra: 1 while reading is paused because the spool is full

Spans: ``audit.batch`` (read + chain + spool), ``audit.sign`` (a checkpoint), ``audit.ship`` (one sink write),
exported over OTLP/HTTP only when an endpoint is configured; otherwise the API's no-op tracer costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics


class Telemetry:
    def __init__(self, chain_id: str, sources: list[str], sinks: list[str]) -> None:
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.chain_id = chain_id
        self.records_in = Counter("tee_audit_records_in", "Records chained, by source.", ["source"], registry=r)
        self.shipped = Counter("tee_audit_records_shipped", "Records acknowledged by a sink.", ["sink"],
                               registry=r)
        self.spool_depth = Gauge("tee_audit_spool_depth_records",
                                 "Spooled records not yet acknowledged by every sink.", registry=r)
        self.spool_bytes = Gauge("tee_audit_spool_bytes", "Bytes of spool segments on disk.", registry=r)
        self.sink_errors = Counter("tee_audit_sink_errors", "Failed sink writes, by reason.", ["sink", "reason"],
                                   registry=r)
        self.source_errors = Counter("tee_audit_source_errors", "Malformed input quarantined, by reason.",
                                     ["source", "reason"], registry=r)
        self.last_checkpoint = Gauge("tee_audit_last_checkpoint_timestamp_seconds",
                                     "Unix time of the last signed checkpoint.", ["chain"], registry=r)
        self.lag = Gauge("tee_audit_lag_seconds",
                         "Age of the oldest record not yet acknowledged by every sink (0 when caught up).",
                         ["source"], registry=r)
        self.intact = Gauge("tee_audit_chain_intact", "1 when the last self-verification of a sink found the "
                            "chain intact, 0 when not.", ["chain", "sink"], registry=r)
        self.sink_conflicts = Counter("tee_audit_sink_conflicts", "Slots a sink already held with other content "
                                      "than the record or checkpoint sealed for them (tamper).", ["sink"], registry=r)
        self.selfcheck_errors = Counter("tee_audit_selfcheck_errors", "Self-verifications that could not run.",
                                        ["sink"], registry=r)
        self.selfcheck_last_run = Gauge("tee_audit_selfcheck_last_run_timestamp_seconds",
                                        "Unix time of the last self-verification that reached a verdict.", ["sink"],
                                        registry=r)
        self.spool_write_errors = Counter("tee_audit_spool_write_errors",
                                          "Spool appends that failed (disk full, read-only).", registry=r)
        self.signed_size = Gauge("tee_audit_signed_size", "Records covered by the newest tree checkpoint stored.",
                                 ["chain"], registry=r)
        self.witnessed_size = Gauge("tee_audit_witnessed_size", "Records covered by the newest tree checkpoint "
                                    "each witness cosigned.", ["chain", "witness"], registry=r)
        self.backpressure = Gauge("tee_audit_backpressure", "1 while reading is paused because the spool is full.",
                                  registry=r)
        for source in sources:  # present from the start: rate() needs the zero
            self.records_in.labels(source)
            self.lag.labels(source).set(0)
        for sink in sinks:
            self.shipped.labels(sink)
            self.sink_conflicts.labels(sink)
            self.selfcheck_errors.labels(sink)
        self.sources = sources

    def set_tree(self, chain: str, sizes: tuple[int, dict[str, int]] | None) -> None:
        """The newest tree checkpoint's size and, per witness URL, the size it cosigned last."""
        if sizes is None:
            return
        self.signed_size.labels(chain).set(sizes[0])
        for url, size in sizes[1].items():
            self.witnessed_size.labels(chain, url).set(size)

    def set_lag(self, seconds: float) -> None:
        for source in self.sources:
            self.lag.labels(source).set(max(0.0, seconds))

    def add_source(self, source: str) -> None:
        if source not in self.sources:
            self.sources.append(source)
            self.records_in.labels(source)
            self.lag.labels(source).set(0)


def setup_tracing(endpoint: str | None, service: str = "tee-audit") -> tuple[trace.Tracer, Callable[[], None]]:
    """A tracer exporting over OTLP/HTTP to ``endpoint`` and its flush-and-shutdown; the no-op tracer when none is
    configured."""
    if not endpoint:
        return trace.NoOpTracer(), lambda: None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")))
    return provider.get_tracer("tee-audit"), provider.shutdown
