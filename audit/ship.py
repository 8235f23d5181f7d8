"""``tee-audit ship``: sources -> chain -> spool -> sinks, in one loop thread.

One thread owns the chain head, the spool and the sink cursors, so there is no locking around the hash chain; the
HTTP servers (metrics, Alertmanager webhook) and the self-verification run in their own threads and only hand
values over. Reading pauses while the spool is above its bound (backpressure); a failing sink is retried with
capped exponential backoff while the others keep going.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from audit import checkpoint as cp
from audit import sealing
from audit.canonical import CanonicalError
from audit.chain import ChainError, Head
from audit.config import ShipSettings
from audit.ingest import Quarantine, check_event
from audit.merkle import Frontier, leaf_hash
from audit.sinks import NotSetUp, SinkConflict
from audit.sources.journal import JournalSource, Line
from audit.spool import Cursor, Entry, Spool, SpoolError, record_entry
from audit.telemetry import Telemetry, setup_tracing

log = logging.getLogger("audit.ship")

READ_BATCH = 2000
BACKOFF_MAX = 10.0


class Sink(Protocol):
    name: str

    def write(self, records: list[tuple[int, bytes]], checkpoints: list[dict[str, Any]]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class FatalSinkError(Exception):
    """A sink refused a record in a way a retry cannot fix (mapping error): stop rather than leave a hole."""


class SinkRunner:
    """Moves one sink's cursor through the spool, in its own thread: a sink's network wait overlaps with reading
    and chaining. It only ever reads up to the spool's fsync'd end, never past what a crash could take back."""

    def __init__(self, sink: Sink, spool: Spool, batch: int, metrics: Telemetry, tracer: Any) -> None:
        self.sink, self.spool, self.batch = sink, spool, batch
        self.metrics, self.tracer = metrics, tracer
        self.cursor = Cursor(spool, sink.name)
        self.retry_at = 0.0
        self.failures = 0
        self.fatal: str | None = None
        # a definite "not set up" answer (audit/setup.py): the shipper exits, the spool keeps every record
        self.abort: str | None = None
        self._prepare = getattr(sink, "prepare", lambda: None)
        self.prepared = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sink-{sink.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    @property
    def threaded(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.step(time.monotonic()):
                self._wake.wait(max(0.02, min(0.5, self.retry_at - time.monotonic())))
                self._wake.clear()

    def caught_up(self) -> bool:
        return self.cursor.pos >= self.spool.end

    def step(self, now: float) -> bool:
        if now < self.retry_at or self.abort:
            return False
        if not self.prepared:
            try:
                self._prepare()  # at start, before any record: a sink that is not set up is known at once
            except Exception as exc:  # noqa: BLE001 - counted and retried like a write, or stops the shipper
                self._failed(exc, now)
                return False
            self.prepared = True
        if self.caught_up():
            return False
        entries = list(self.spool.read(self.cursor.pos, limit=self.batch, end=self.spool.end))
        if not entries:
            return False
        records = [(e.header["seq"], e.doc) for e in entries if e.kind == "r"]
        checkpoints = [e.header for e in entries if e.kind == "c"]
        with self.tracer.start_as_current_span("audit.ship") as span:
            span.set_attribute("audit.sink", self.sink.name)
            span.set_attribute("audit.records", len(records))
            try:
                self.sink.write(records, checkpoints)
            except Exception as exc:  # noqa: BLE001 - every sink failure is counted and retried or stops the line
                self._failed(exc, now)
                return False
        next_seq = records[-1][0] + 1 if records else self.cursor.next_seq
        self.cursor.advance(entries[-1].end, next_seq)
        self.metrics.shipped.labels(self.sink.name).inc(len(records))
        if self.failures:
            log.info("sink recovered", extra={"sink": self.sink.name, "after_failures": self.failures})
        self.failures, self.fatal = 0, None
        return True

    def _failed(self, exc: Exception, now: float) -> None:
        reason = getattr(exc, "reason", "io" if isinstance(exc, OSError) else "error")
        retryable = getattr(exc, "retryable", True)
        self.metrics.sink_errors.labels(self.sink.name, reason).inc()
        self.failures += 1
        delay = min(BACKOFF_MAX, 0.2 * 2 ** min(self.failures, 8)) if retryable else 60.0
        self.retry_at = now + delay
        if isinstance(exc, NotSetUp):
            self.abort = f"{self.sink.name}: {exc}"
            log.error("Elasticsearch is not set up for this shipper; exiting (the spool keeps every record)",
                      extra={"sink": self.sink.name, "missing": str(exc)})
        elif isinstance(exc, SinkConflict):
            self.fatal = str(exc)
            self.metrics.sink_conflicts.labels(self.sink.name).inc(len(exc.slots))
            log.error("TAMPER: the sink already holds other content in the slots of our records; shipping to it "
                      "is stopped (checked again every 60 s), no record is skipped",
                      extra={"sink": self.sink.name, "slots": len(exc.slots), "first": exc.slots[0],
                             "error": str(exc)})
        elif not retryable:
            self.fatal = str(exc)
            hint = getattr(exc, "hint", "")
            log.error(f"{hint}; shipping to this sink is retried every 60 s, the spool keeps every record" if hint
                      else "sink refused a record; shipping to it is stopped until that is fixed (no record is ever "
                      "skipped)", extra={"sink": self.sink.name, "reason": reason, "error": str(exc)})
        elif self.failures == 1 or self.failures % 20 == 0:
            log.warning("sink write failed, retrying", extra={"sink": self.sink.name, "reason": reason,
                                                              "error": str(exc), "retry_in": round(delay, 1)})


class Pipeline:
    def __init__(self, settings: ShipSettings, key: Any, spool: Spool, sources: list[JournalSource],
                 sinks: list[Sink], metrics: Telemetry, tracer: Any, alerts: Any = None) -> None:
        self.s, self.key, self.spool, self.sources = settings, key, spool, sources
        self.metrics, self.tracer, self.alerts = metrics, tracer, alerts
        self.runners = [SinkRunner(sink, spool, settings.es_batch_size, metrics, tracer) for sink in sinks]
        self.quarantine = Quarantine(settings.quarantine)
        self.last_checkpoint = time.monotonic()
        self.spool_failures = 0
        self.spool_retry_at = 0.0
        self.drained = False
        self._gauged = 0.0
        self._labels: dict[str, str] = {}

    # -- reading and chaining -------------------------------------------------------------------------------------
    def read(self, now: float) -> bool:
        """Read a batch from every source, chain it and append it to the spool; True when anything was read."""
        if now < self.spool_retry_at:
            return False
        if self.backlog_bytes() >= self.s.spool_max_bytes:
            self.metrics.backpressure.set(1)
            return False
        self.metrics.backpressure.set(0)
        lines = [line for src in self.sources for line in src.poll(READ_BATCH)]
        pending = self.alerts.take() if self.alerts else []
        self.drained = not lines and not pending
        if self.drained:
            return False
        with self.tracer.start_as_current_span("audit.batch") as span:
            span.set_attribute("audit.lines", len(lines) + len(pending))
            entries, offsets = self._chain(lines, pending)
            try:
                self.spool.append(entries, offsets)
            except SpoolError as exc:
                self._spool_failed(exc, now, pending)
                return False
        self.spool_failures = 0
        if self.alerts:
            self.alerts.done(pending)
        return True

    def backlog_bytes(self) -> int:
        """Spool bytes some sink has not acknowledged: what ``spool.max-bytes`` bounds. Segments are deleted whole
        once every sink is past them, so the slowest sink's segment is the oldest file; counting its acknowledged
        part too would keep reading paused for good under a bound below one segment (16 MiB)."""
        slowest = min((r.cursor.pos for r in self.runners), default=None)
        return self.spool.bytes if slowest is None else max(0, self.spool.bytes - slowest.offset)

    def _chain(self, lines: list[Line], alerts: list[tuple[str, dict[str, Any]]]
               ) -> tuple[list[Entry], dict[str, dict[str, int]]]:
        head = self.spool.state.head
        since = self.spool.state.since_checkpoint
        tree = None if self.spool.state.tree is None else self.spool.state.tree.copy()
        entries: list[Entry] = []
        offsets: dict[str, dict[str, int]] = {}
        items: list[tuple[str, Line | None, dict[str, Any], bool]] = []
        for line in lines:
            offsets[line.source] = {"ino": line.ino, "offset": line.end}
            event, fast = self._parse(line)
            if event is not None:
                items.append((self._label(line.source), line, event, fast))
        items += [("alertmanager", None, event, False) for _, event in alerts if self._alert_ok(event)]
        counts: dict[str, int] = {}
        stamp = time.time()
        for label, origin, event, fast in items:
            try:
                # Stored in its RFC 8785 form: the line minus its "hash" member is then exactly the hashed bytes,
                # which lets verify check a record without parsing it (audit/chain.py canonical_link).
                data, new_head = sealing.seal(event, head, fast)
            except (CanonicalError, ChainError) as exc:
                self._reject(origin, label, getattr(exc, "reason", "reserved_field"), str(exc))
                continue
            except (ValueError, TypeError, RecursionError) as exc:
                # e.g. a lone surrogate escape ("\udc00") parses as JSON but has no UTF-8 form to hash: never a crash
                self._reject(origin, label, "not_canonical", f"{type(exc).__name__}: {exc}")
                continue
            head = new_head
            src = [origin.source, origin.ino, origin.end] if origin else None
            leaf = None
            if tree is not None:
                leaf = leaf_hash(data)
                tree.append(leaf)
            entries.append(record_entry(head.next_seq - 1, head.hash, stamp, src, data, leaf))
            counts[label] = counts.get(label, 0) + 1
            since += 1
            if since >= self.s.checkpoint_every_records:
                entries.append(self._checkpoint(head, tree))
                since = 0
        for label, count in counts.items():
            self.metrics.records_in.labels(label).inc(count)
        return entries, offsets

    def _parse(self, line: Line) -> tuple[dict[str, Any] | None, bool]:
        if line.error:
            self._reject(line, self._label(line.source), line.error, "")
            return None, False
        try:
            parsed = sealing.parse(line.raw)
            check_event(parsed.value)
        except CanonicalError as exc:
            self._reject(line, self._label(line.source), exc.reason, str(exc))
            return None, False
        except (ValueError, TypeError, RecursionError) as exc:  # whatever the input: quarantined, never a crash
            self._reject(line, self._label(line.source), "not_canonical", f"{type(exc).__name__}: {exc}")
            return None, False
        return parsed.value, parsed.fast

    def _alert_ok(self, event: dict[str, Any]) -> bool:
        """An alert Elasticsearch would refuse (e.g. ``startsAt`` in year 9999) is quarantined, not chained."""
        try:
            check_event(event)
        except CanonicalError as exc:
            self.metrics.source_errors.labels("alertmanager", exc.reason).inc()
            self.quarantine.put_alert(event, exc.reason, str(exc))
            return False
        return True

    def _reject(self, line: Line | None, label: str, reason: str, detail: str) -> None:
        self.metrics.source_errors.labels(label, reason).inc()
        if line is not None:
            self.quarantine.put(line, reason, detail)
        else:
            log.warning("alert could not be chained", extra={"reason": reason, "error": detail})

    def _label(self, key: str) -> str:
        label = self._labels.get(key)
        if label is None:
            label = self._labels[key] = Path(key).name
        return label

    def _checkpoint(self, head: Head, tree: Frontier | None) -> Entry:
        """A tree checkpoint (RFC 9162 root of the first ``head.next_seq`` records); a head checkpoint for a chain
        begun before tee-audit v2, whose spool state has no Merkle frontier (docs/audit.md, migration)."""
        with self.tracer.start_as_current_span("audit.sign") as span:
            span.set_attribute("audit.size", head.next_seq)
            if tree is not None:
                note = cp.sign_tree(self.key, head.chain_id, head.next_seq, tree.root(), head.hash)
            else:
                note = cp.sign(self.key, head.chain_id, head.next_seq, head.hash)
        self.last_checkpoint = time.monotonic()
        self.metrics.last_checkpoint.labels(head.chain_id).set(time.time())
        return Entry("c", {"k": "c", "size": head.next_seq, "hash": head.hash, "t": time.time(), "note": note})

    def checkpoint_if_due(self, final: bool = False) -> bool:
        if self.spool.state.since_checkpoint == 0:
            return False
        if not final and time.monotonic() - self.last_checkpoint < self.s.checkpoint_every_seconds:
            return False
        try:
            self.spool.append([self._checkpoint(self.spool.state.head, self.spool.state.tree)])
        except SpoolError as exc:
            self._spool_failed(exc, time.monotonic(), [])
            return False
        return True

    def _spool_failed(self, exc: SpoolError, now: float, pending: list[Any]) -> None:
        """Nothing of the batch is durable: rewind every source to its durable offset and retry later."""
        self.metrics.spool_write_errors.inc()
        self.spool_failures += 1
        self.spool_retry_at = now + min(BACKOFF_MAX, 0.5 * 2 ** min(self.spool_failures, 6))
        if self.spool_failures == 1 or self.spool_failures % 20 == 0:
            log.error("spool write failed; reading is paused, nothing is lost", extra={"error": str(exc)})
        for src in self.sources:
            src.rewind(self.spool.state.offsets.get(src.key))
        if self.alerts:
            self.alerts.giveback(pending)

    # -- shipping -------------------------------------------------------------------------------------------------
    def ship(self, now: float) -> bool:
        """Without runner threads (tests, shutdown): one step of every sink. With them: just wake them."""
        progressed = False
        for runner in self.runners:
            if runner.threaded:
                runner.wake()
            else:
                progressed |= runner.step(now)
        self.spool.collect([r.cursor.pos for r in self.runners])
        self._gauges()
        return progressed

    def _gauges(self) -> None:
        if time.monotonic() - self._gauged < 0.5:
            return
        self._gauged = time.monotonic()
        self.metrics.spool_bytes.set(self.spool.bytes)
        for runner in self.runners:  # the local store's tree: signed and witnessed sizes
            self.metrics.set_tree(self.spool.state.head.chain_id, getattr(runner.sink, "tree_sizes", None))
        slowest = min((r.cursor for r in self.runners), key=lambda c: c.pos, default=None)
        if slowest is None:
            return
        self.metrics.spool_depth.set(max(0, self.spool.state.head.next_seq - slowest.next_seq))
        oldest = next(iter(self.spool.read(slowest.pos, limit=1)), None)
        self.metrics.set_lag(time.time() - oldest.header["t"] if oldest else 0.0)

    def done(self) -> bool:
        """Everything read, chained, sealed and acknowledged by every sink."""
        return (self.drained and self.spool.state.since_checkpoint == 0
                and all(r.caught_up() for r in self.runners))

    def fatal(self) -> str | None:
        return next((r.fatal for r in self.runners if r.fatal), None)

    def aborted(self) -> str | None:
        return next((r.abort for r in self.runners if r.abort), None)

    def step(self) -> bool:
        now = time.monotonic()
        progressed = self.read(now)
        progressed |= self.checkpoint_if_due(final=self.s.once and self.drained)
        progressed |= self.ship(now)
        return progressed


def build_sinks(s: ShipSettings) -> list[Sink]:
    sinks: list[Sink] = []
    if s.store is not None:
        from audit.sinks.localstore import LocalStore

        sinks.append(LocalStore(s.store, s.chain, witnesses=s.witnesses))
    if s.es is not None:
        from audit.sinks import elasticsearch as es

        client = es.connect(s.es, s.es_ca_file, s.es_api_key_file, s.es_username, s.es_password_file)
        sinks.append(es.ElasticsearchSink(client, s.chain, s.es_namespace, witnesses=s.witnesses))
    return sinks


def run(s: ShipSettings) -> int:
    try:
        if s.signing_key is None:  # audit.config.validate refuses this already; no traceback for a caller that did not
            raise cp.CheckpointError("signing-key is required")
        key = cp.load_private(s.signing_key)
        spool = Spool(s.spool, s.chain)
        sinks = build_sinks(s)
    except (cp.CheckpointError, SpoolError, OSError) as exc:
        log.error("cannot start", extra={"error": str(exc)})
        return 2
    sources = [JournalSource(p, spool.state.offsets.get(str(p)), s.source_max_line_bytes) for p in s.sources]
    labels = [src.label for src in sources]
    metrics = Telemetry(s.chain, labels, [sink.name for sink in sinks])
    tracer, stop_tracing = setup_tracing(s.otlp_endpoint)
    services = _Services(s, metrics, key, sinks)
    if s.alertmanager_listen_address:
        metrics.add_source("alertmanager")
    pipeline = Pipeline(s, key, spool, sources, sinks, metrics, tracer, services.alerts)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    services.start()
    for runner in pipeline.runners:
        runner.start()
    log.info("shipping", extra={"chain": s.chain, "sources": ",".join(map(str, s.sources)),
                                "sinks": ",".join(sink.name for sink in sinks), "spool": str(s.spool),
                                "once": s.once})
    try:
        code, crashed = _loop(pipeline, s, stop), False
    except Exception:  # a bug: the helper threads must not keep a process up that no longer ships (nor hear SIGTERM)
        log.exception("the ship loop failed; exiting so that a restart resumes from the spool, which keeps every "
                      "record (as after kill -9)")
        code, crashed = 3, True
    for runner in pipeline.runners:
        runner.stop()
    if not s.once and not crashed:  # after a crash the in-memory state is not trusted: the spool is
        _seal_on_shutdown(pipeline)
    services.stop()
    stop_tracing()
    for src in sources:
        src.close()
    for sink in sinks:
        sink.close()
    spool.close()
    return code


def _loop(pipeline: Pipeline, s: ShipSettings, stop: threading.Event) -> int:
    while not stop.is_set():
        progressed = pipeline.step()
        if pipeline.aborted():  # logged by its runner; a restart after `tee-audit setup` ships the spool
            return 2
        if s.once:
            if pipeline.fatal():
                log.error("--once: a sink refused records (logged above); not everything is shipped, the spool "
                          "keeps the rest")
                return 1
            if pipeline.done():
                for runner in pipeline.runners:
                    try:
                        runner.sink.flush()
                    except Exception as exc:  # noqa: BLE001 - durable already; visibility is a nicety
                        log.warning("sink flush failed", extra={"sink": runner.sink.name, "error": str(exc)})
                log.info("--once: everything is chained, sealed and in every sink",
                         extra={"records": pipeline.spool.state.head.next_seq})
                return 0
        if not progressed:
            stop.wait(min(s.source_poll_seconds, 0.1) if s.once else s.source_poll_seconds)
    return 1 if s.once else 0


def _seal_on_shutdown(pipeline: Pipeline, budget: float = 5.0) -> None:
    """On SIGTERM: sign what is unsealed and give the sinks a few seconds to take it (the spool keeps the rest)."""
    pipeline.checkpoint_if_due(final=True)
    deadline = time.monotonic() + budget
    # a runner that stopped (not set up) or waits a minute on a fault a retry cannot fix would only use the budget
    while time.monotonic() < deadline and not all(r.caught_up() or r.abort or r.fatal for r in pipeline.runners):
        if not pipeline.ship(time.monotonic()):
            time.sleep(0.05)


class _Services:
    """Metrics server, Alertmanager receiver and self-verification: only for the daemon, not for ``--once``."""

    def __init__(self, s: ShipSettings, metrics: Telemetry, key: Any, sinks: list[Sink]) -> None:
        from audit.sources.alertmanager import AlertReceiver

        self.s, self.metrics, self.key, self.sinks = s, metrics, key, sinks
        self.alerts = AlertReceiver(s.alertmanager_listen_address, s.chain, s.web_config_file, metrics.registry) \
            if s.alertmanager_listen_address and not s.once else None
        self.server: Any = None
        self.verifier: Any = None

    def start(self) -> None:
        if self.s.once:
            return
        from audit.selfcheck import SelfCheck
        from common import webconfig
        from common.http import MetricsServer

        web = webconfig.WebConfigSource(self.s.web_config_file)
        self.server = MetricsServer(self.metrics.registry, self.s.web_listen_address, "/metrics", web,
                                    title="tee-audit")
        self.server.start()
        if self.alerts:
            self.alerts.start()
        self.verifier = SelfCheck(self.s, self.key.public_key(), self.metrics)
        self.verifier.start()

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
        if self.alerts:
            self.alerts.stop()
        if self.verifier:
            self.verifier.stop()
