"""The host's connection-tracking events: one ``Flow`` per new connection, read from Debian's ``conntrack`` tool.

``conntrack -E -e NEW -o xml`` (line-buffered through ``stdbuf``) subscribes to the kernel's ctnetlink NEW-event multicast group (events, not
polling) and prints each event as one ``<flow type="new">`` element per line (conntrack-tools' XML output, as
produced by libnetfilter_conntrack's ``nfct_snprintf`` with ``NFCT_O_XML``). The original-direction tuple is the
one the initiator sent, before any NAT, so for a guest behind a NAT bridge it carries the guest's own address.

Running the tool as a child rather than speaking netlink ourselves keeps one well-tested decoder (the one
operators already use by hand) and makes "conntrack unavailable" an ordinary, reported condition: the tool is
missing, or exits with the kernel's reason (no CAP_NET_ADMIN, nf_conntrack_netlink not loadable). The reader then
reports itself down, counts the reason and retries with backoff; it never raises into the exporter. Lost events
(the kernel's netlink buffer overran, ENOBUFS) are counted too.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO

log = logging.getLogger(__name__)

# stdbuf -oL: the tool writes to a pipe, which stdio buffers by the block; line buffering hands over each event as
# it happens instead of in 4 KiB batches.
COMMAND = ("stdbuf", "-oL", "conntrack", "-E", "-e", "NEW", "-o", "xml")
STARTUP_SECONDS = 0.5  # a tool that cannot subscribe (no permission, no module) exits well within this
NOT_FOUND_STATUS = 127  # what stdbuf, nsenter and shells exit with when the program to run does not exist
HINT = "the egress collector needs Debian's conntrack package"

# Bounded values of tee_guest_egress_conntrack_errors_total{reason}.
ERROR_REASONS = ("not_installed", "failed", "overrun", "parse")


@dataclass(frozen=True)
class Flow:
    """The original-direction tuple of a new connection."""

    source: str
    destination: str
    transport: str  # "tcp", "udp", "icmp", ... (conntrack's protocol name)
    protocol_number: int
    source_port: int | None = None  # None for protocols without ports (ICMP)
    destination_port: int | None = None


def parse_flow(line: str) -> Flow | None:
    """One line of ``conntrack -o xml`` output -> ``Flow``; None for the document's own lines (prolog, root
    element). Raises ``ValueError`` for a ``<flow>`` line that cannot be read."""
    line = line.strip()
    if not line.startswith("<flow"):
        return None
    try:
        flow = ET.fromstring(line)
    except ET.ParseError as exc:
        raise ValueError(f"unreadable flow element: {exc}") from None
    original = next((m for m in flow.findall("meta") if m.get("direction") == "original"), None)
    if original is None:
        raise ValueError("flow without an original-direction tuple")
    layer3, layer4 = original.find("layer3"), original.find("layer4")
    source = layer3.findtext("src") if layer3 is not None else None
    destination = layer3.findtext("dst") if layer3 is not None else None
    if not source or not destination or layer4 is None:
        raise ValueError("flow without source, destination or protocol")
    return Flow(source=source, destination=destination, transport=layer4.get("protoname", "unknown"),
                protocol_number=int(layer4.get("protonum", "0")),
                source_port=_port(layer4.findtext("sport")), destination_port=_port(layer4.findtext("dport")))


def _port(text: str | None) -> int | None:
    return None if text is None else int(text)


class Backoff:
    """Seconds to wait before the next restart: doubling from ``initial`` up to ``cap``, reset by a healthy run."""

    def __init__(self, initial: float = 1.0, cap: float = 60.0) -> None:
        self.initial, self.cap, self.current = initial, cap, initial

    def next(self) -> float:
        delay, self.current = self.current, min(self.cap, self.current * 2)
        return delay

    def reset(self) -> None:
        self.current = self.initial


class ConntrackEvents:
    """Runs the event reader in a thread and hands every new ``Flow`` to ``on_flow``.

    ``up`` is True while a reader process is running; ``errors`` counts by reason (``ERROR_REASONS``) and
    ``last_error`` says the latest one in words, for the log and the docs' troubleshooting.
    """

    def __init__(self, on_flow: Callable[[Flow], None], command: Sequence[str] = COMMAND,
                 backoff: Backoff | None = None) -> None:
        self.on_flow = on_flow
        self.command = tuple(command)
        self.backoff = backoff or Backoff()
        self.errors = dict.fromkeys(ERROR_REASONS, 0)
        # Every NEW event read, the host's own flows included: "up" with this not growing means the kernel sends
        # nothing (no rule uses conntrack, or net.netfilter.nf_conntrack_events=0): blind while looking healthy.
        self.events = 0
        self.last_error = ""
        self.up = False
        self._stderr_first = ""  # the run's first error line: the reason; later lines are the tool's advice
        self._stop = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="egress-conntrack", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                self._proc.terminate()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            healthy = self._run_once()
            if healthy:
                self.backoff.reset()
            self._stop.wait(self.backoff.next())

    def _run_once(self) -> bool:
        """One reader process, to its end. True if it delivered events (a later failure is then not a retry loop)."""
        try:
            proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    bufsize=1)
        except FileNotFoundError:
            self._error("not_installed", f"{self.command[0]}: not found ({HINT})")
            return False
        except OSError as exc:
            self._error("failed", f"{self.command[0]}: cannot start: {exc.strerror or exc}")
            return False
        with self._lock:
            self._proc = proc
        self._stderr_first = ""
        stderr = threading.Thread(target=self._read_stderr, args=(proc.stderr,), name="egress-conntrack-err",
                                  daemon=True)
        stderr.start()
        try:  # events arriving meanwhile wait in the pipe
            proc.wait(timeout=STARTUP_SECONDS)
        except subprocess.TimeoutExpired:
            self.up = True  # still running: it has subscribed (conntrack-tools prints nothing until an event)
        delivered = self._read_stdout(proc.stdout)  # type: ignore[arg-type]
        self.up = False
        code = proc.wait()
        stderr.join(timeout=2)
        if self._stop.is_set():
            pass
        elif code == NOT_FOUND_STATUS:
            self._error("not_installed", f"{self._stderr_first or 'conntrack: not found'} ({HINT})")
        else:
            self._error("failed", f"conntrack exited with status {code}: {self._stderr_first or 'no message'}")
        return delivered

    def _read_stdout(self, stream: IO[str]) -> bool:
        delivered = False
        for line in stream:
            try:
                flow = parse_flow(line)
            except ValueError as exc:
                self._error("parse", f"conntrack output: {exc}: {line.strip()[:200]!r}")
                continue
            if flow is not None:
                delivered = True
                self.events += 1
                self._deliver(flow)
        return delivered

    def _deliver(self, flow: Flow) -> None:
        try:
            self.on_flow(flow)
        except Exception as exc:  # noqa: BLE001 - one bad flow must not end the reader (and leave "up" a lie)
            log.warning("egress: flow not handled", extra={"flow": repr(flow), "error": f"{type(exc).__name__}: {exc}"})

    def _read_stderr(self, stream: IO[str]) -> None:
        for line in stream:
            text = line.strip()
            if not text:
                continue
            if "ENOBUFS" in text:  # the tool's own wording when the kernel dropped events for it
                self._error("overrun", "conntrack events were lost (netlink buffer overrun, ENOBUFS)")
            elif not self._stderr_first and not text.startswith(("This message means", "Try `")):
                self._stderr_first = text

    def _error(self, reason: str, message: str) -> None:
        self.errors[reason] += 1
        self.last_error = message
        # Logged once per reason per streak, so a missing tool does not write a line every minute forever.
        if self.errors[reason] == 1 or self.errors[reason] % 100 == 0:
            log.warning("egress: conntrack unavailable" if reason in ("not_installed", "failed")
                        else "egress: conntrack events", extra={"reason": reason, "error": message,
                                                                "count": self.errors[reason]})
