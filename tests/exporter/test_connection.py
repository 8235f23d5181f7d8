"""The shared libvirt connection: capped backoff, fast failure while down, events fanned out to every listener."""

from __future__ import annotations

import libvirt
import pytest

from common.backoff import Backoff
from exporter.virt.connection import LibvirtConnection, LibvirtUnavailable
from tests.exporter.helpers import DEMO_URI, wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_up_to_the_cap_and_resets():
    clock = Clock()
    backoff = Backoff(initial=0.5, cap=4, clock=clock)
    delays = []
    for _ in range(6):
        backoff.failed()
        delays.append(backoff.delay)
    assert delays == [0.5, 1, 2, 4, 4, 4]
    assert not backoff.ready()
    clock.now += 4
    assert backoff.ready()
    backoff.reset()
    backoff.failed()
    assert backoff.delay == 0.5


def test_unreachable_libvirt_is_not_retried_before_the_backoff_expires(tmp_path):
    clock = Clock()
    conn = LibvirtConnection(f"test://{tmp_path}/missing.xml", backoff=Backoff(initial=5, cap=5, clock=clock))
    with pytest.raises(LibvirtUnavailable, match="cannot connect"):
        conn.get()
    with pytest.raises(LibvirtUnavailable, match="next reconnect in 5.0s"):
        conn.get()  # no new connect() attempt: fails at once
    assert not conn.up


def test_every_listener_gets_each_event_and_survives_a_broken_one():
    conn = LibvirtConnection(DEMO_URI)
    seen_a, seen_b = [], []

    def broken(*_args):
        raise RuntimeError("listener bug")

    conn.on_domain_event(libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, lambda _c, d, e, _x, _o: seen_a.append(e))
    conn.on_domain_event(libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, broken)
    conn.on_domain_event(libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, lambda _c, d, e, _x, _o: seen_b.append(e))
    try:
        conn.get().lookupByName("plain-web").suspend()
        assert wait_for(lambda: seen_a and seen_b)
    finally:
        conn.close()
    assert seen_a == seen_b == [libvirt.VIR_DOMAIN_EVENT_SUSPENDED]
