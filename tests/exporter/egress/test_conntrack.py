"""conntrack event parsing (lines captured from conntrack-tools 1.4.7) and the reader's failure reporting."""

from __future__ import annotations

import time

import pytest

from exporter.egress.conntrack import ConntrackEvents, Flow, parse_flow

# `conntrack -E -e NEW -o xml` in a test namespace, a TCP connect and a UDP datagram from 10.213.1.2.
TCP = ('<flow type="new"><meta direction="original"><layer3 protonum="2" protoname="ipv4"><src>10.213.1.2</src>'
       '<dst>10.213.3.2</dst></layer3><layer4 protonum="6" protoname="tcp"><sport>52512</sport><dport>8080</dport>'
       '</layer4></meta><meta direction="reply"><layer3 protonum="2" protoname="ipv4"><src>10.213.3.2</src>'
       '<dst>10.213.1.2</dst></layer3><layer4 protonum="6" protoname="tcp"><sport>8080</sport><dport>52512</dport>'
       '</layer4></meta><meta direction="independent"><state>SYN_SENT</state><timeout>120</timeout>'
       '<id>4035949739</id><unreplied/></meta></flow>')
IGMP = ('<flow type="new"><meta direction="original"><layer3 protonum="2" protoname="ipv4"><src>10.213.1.1</src>'
        '<dst>224.0.0.22</dst></layer3><layer4 protonum="2" protoname="unknown"></layer4></meta>'
        '<meta direction="reply"><layer3 protonum="2" protoname="ipv4"><src>224.0.0.22</src><dst>10.213.1.1</dst>'
        '</layer3><layer4 protonum="2" protoname="unknown"></layer4></meta><meta direction="independent">'
        '<timeout>600</timeout><id>722775842</id><unreplied/></meta></flow>')


def test_parse_tcp_flow_takes_the_original_direction() -> None:
    assert parse_flow(TCP + "\n") == Flow("10.213.1.2", "10.213.3.2", "tcp", 6, 52512, 8080)


def test_parse_portless_flow() -> None:
    assert parse_flow(IGMP) == Flow("10.213.1.1", "224.0.0.22", "unknown", 2, None, None)


def test_document_lines_are_not_flows() -> None:
    for line in ('<?xml version="1.0" encoding="utf-8"?>', "<conntrack>", "</conntrack>", ""):
        assert parse_flow(line) is None


@pytest.mark.parametrize("line", [TCP[:80], TCP.replace('direction="original"', 'direction="other"'),
                                  TCP.replace("<src>10.213.1.2</src>", "")])
def test_unreadable_flow_is_a_value_error(line: str) -> None:
    with pytest.raises(ValueError):
        parse_flow(line)


def _wait(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_missing_tool_is_counted_and_reported_not_raised() -> None:
    reader = ConntrackEvents(lambda flow: None, command=("/nonexistent/conntrack", "-E"))
    reader.start()
    try:
        _wait(lambda: reader.errors["not_installed"] >= 1)
        assert not reader.up and "not found" in reader.last_error
    finally:
        reader.stop()


def test_tool_that_exits_is_counted_with_its_message() -> None:
    # The real tool refusing its arguments stands for any exit (no CAP_NET_ADMIN, no nf_conntrack_netlink).
    reader = ConntrackEvents(lambda flow: None, command=("conntrack", "-E", "-e", "NOSUCHEVENT"))
    reader.start()
    try:
        _wait(lambda: reader.errors["failed"] >= 1)
        assert "exited with status" in reader.last_error and "NOSUCHEVENT" in reader.last_error
        assert not reader.up
    finally:
        reader.stop()


def test_no_cap_net_admin_is_counted_with_the_kernels_reason() -> None:
    # The real tool as an unprivileged user: the kernel refuses the event subscription.
    command = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "conntrack", "-E", "-e", "NEW",
               "-o", "xml")
    reader = ConntrackEvents(lambda flow: None, command=command)
    reader.start()
    try:
        _wait(lambda: reader.errors["failed"] >= 1)
        assert "Operation not permitted" in reader.last_error
        assert not reader.up  # it never subscribed
    finally:
        reader.stop()


def test_a_failing_handler_does_not_end_the_reader(tmp_path) -> None:
    # Real events from the tool, the handler raising on each: the reader must stay up and keep reading.
    seen = []

    def handler(flow: Flow) -> None:
        seen.append(flow)
        raise RuntimeError("bug in the handler")

    script = tmp_path / "fake-events.sh"  # replays the captured output: two flows, then stays subscribed
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' '<?xml version=\"1.0\" encoding=\"utf-8\"?>' '<conntrack>' "
                      f"'{TCP}' '{IGMP}'\nexec sleep 30\n")
    script.chmod(0o755)
    reader = ConntrackEvents(handler, command=(str(script),))
    reader.start()
    try:
        _wait(lambda: len(seen) == 2)
        assert reader.up and reader.errors == {"not_installed": 0, "failed": 0, "overrun": 0, "parse": 0}
        assert reader.events == 2  # the host's own IGMP flow too: the counter says the kernel reports, not whose
    finally:
        reader.stop()


def test_lost_events_are_counted_as_overrun(tmp_path) -> None:
    # A guest can flood allowed flows until the kernel drops events, and slip a denied one into the loss: the
    # loss must be a counted condition (alert TEEGuestEgressEventsLost). conntrack-tools' own wording, on stderr.
    script = tmp_path / "fake-overrun.sh"
    script.write_text("#!/bin/sh\nprintf '%s\\n' 'WARNING: We have hit ENOBUFS! We are losing events.' "
                      "'This message means that the current netlink socket buffer size is too small.' >&2\n"
                      f"printf '%s\\n' '{TCP}'\nexec sleep 30\n")
    script.chmod(0o755)
    reader = ConntrackEvents(lambda flow: None, command=(str(script),))
    reader.start()
    try:
        _wait(lambda: reader.events == 1 and reader.errors["overrun"] == 1)
        assert reader.up and reader.errors["failed"] == 0
    finally:
        reader.stop()
