"""Where sealed records go. Both sinks share one boundary exception for what the threat model calls pre-emption,
and one for a sink whose privileged set-up (``tee-audit setup``, audit/setup.py) is missing."""

from __future__ import annotations


class SinkConflict(Exception):
    """A sink already holds a record or checkpoint slot that is not ours (same ``seq``/size, other content).

    Never "delivered", never skipped: someone with write access to the sink pre-created or rewrote it. The shipper
    stops that sink (no later record may pass over the slot) and reports it as a tamper finding.
    """

    reason = "conflict"
    retryable = False

    def __init__(self, sink: str, slots: list[str], detail: str) -> None:
        super().__init__(f"{sink} already holds {len(slots)} slot(s) with other content than ours "
                         f"(first: {slots[0] if slots else '-'}): {detail}")
        self.sink, self.slots = sink, slots


class NotSetUp(Exception):
    """A definite answer from the sink that what ``ship`` needs is not there (a template, a privilege): a retry
    cannot fix it, an administrator can. The shipper exits; the spool keeps every record."""

    reason = "not_set_up"
    retryable = False
