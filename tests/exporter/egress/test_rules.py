"""network_policy CIDR judging: the most specific rule wins, deny on a tie, an allow list means "only these"."""

from __future__ import annotations

import pytest

from exporter.egress.rules import DEFAULT_RULE, EgressRules, is_egress, parse_cidrs


def rules(allow: list[str], deny: list[str]) -> EgressRules:
    return EgressRules(parse_cidrs(allow), parse_cidrs(deny))


SEED = rules(["10.0.0.0/8"], ["0.0.0.0/0"])


@pytest.mark.parametrize(("destination", "verdict", "rule"), [
    ("10.1.2.3", "allowed", "allow_egress 10.0.0.0/8"),
    ("11.0.0.1", "denied", "deny_egress 0.0.0.0/0"),
    ("192.168.122.1", "denied", "deny_egress 0.0.0.0/0"),
    ("2001:db8::1", "denied", DEFAULT_RULE),  # an allow list means "only these": IPv6 is not in it
])
def test_seed_means_only_10_8(destination: str, verdict: str, rule: str) -> None:
    got = SEED.judge(destination)
    assert (got.verdict, got.rule) == (verdict, rule)


def test_the_more_specific_rule_wins_in_either_direction() -> None:
    policy = rules(["10.0.0.0/8", "10.9.9.9/32"], ["0.0.0.0/0", "10.9.0.0/16"])
    assert policy.judge("10.9.1.1").rule == "deny_egress 10.9.0.0/16"  # deny /16 inside allow /8
    assert policy.judge("10.9.9.9").rule == "allow_egress 10.9.9.9/32"  # allow /32 inside deny /16
    assert policy.judge("10.8.0.1").rule == "allow_egress 10.0.0.0/8"


def test_rule_order_in_the_file_does_not_matter() -> None:
    # A first-match judge would let 10.9.1.1 through when the broad allow is listed first.
    for allow in (["10.0.0.0/8", "10.9.9.9/32"], ["10.9.9.9/32", "10.0.0.0/8"]):
        assert rules(allow, ["10.9.0.0/16"]).judge("10.9.1.1").verdict == "denied"


def test_same_network_in_both_lists_is_denied() -> None:
    assert rules(["10.0.0.0/8"], ["10.0.0.0/8"]).judge("10.1.1.1").verdict == "denied"


def test_no_allow_list_allows_what_is_not_denied() -> None:
    policy = rules([], ["198.51.100.0/24"])
    assert policy.judge("198.51.100.7").verdict == "denied"
    assert policy.judge("203.0.113.1") == policy.judge("203.0.113.1")
    assert policy.judge("203.0.113.1").verdict == "allowed" and policy.judge("203.0.113.1").rule == DEFAULT_RULE


def test_ipv4_mapped_ipv6_destination_is_judged_as_ipv4() -> None:
    # Judged as IPv6, ::ffff:192.0.2.1 would match no IPv4 rule; with only a deny list it would be allowed.
    policy = rules([], ["192.0.2.0/24"])
    assert policy.judge("::ffff:192.0.2.1").verdict == "denied"
    assert SEED.judge("::ffff:10.0.0.1").verdict == "allowed"


@pytest.mark.parametrize(("destination", "egress"), [
    ("fe80::1", True), ("ff02::16", False), ("224.0.0.22", False), ("255.255.255.255", False),
    ("224.0.1.1", True), ("169.254.169.254", True), ("ff05::2", True), ("10.0.0.1", True),
])
def test_link_scoped_destinations_are_not_egress(destination: str, egress: bool) -> None:
    assert is_egress(destination) is egress


@pytest.mark.parametrize(("items", "message"), [
    (["10.0.0.0/8", "10.0.0.1/8"], "[1]: not a CIDR network"),
    (["300.0.0.0/8"], "[0]: not a CIDR network"),
    ([8], "[0]: expected a CIDR string"),
])
def test_malformed_cidrs_name_their_index(items: list, message: str) -> None:
    with pytest.raises(ValueError, match=r"^" + message.replace("[", r"\[").replace("]", r"\]")):
        parse_cidrs(items)


# Spellings Python's ipaddress accepts whose meaning is not what they say (each would otherwise load).
@pytest.mark.parametrize(("item", "message"), [
    # Cisco wildcard "any": ipaddress reads 255.255.255.255 as a netmask, i.e. a /32 of 0.0.0.0
    ("0.0.0.0/255.255.255.255", "prefix length must be a decimal number of bits"),
    ("10.0.0.0/0.0.0.255", "prefix length must be a decimal number of bits"),  # read as a hostmask: /24
    ("10.0.0.0/08", "prefix length must be a decimal number of bits"),
    # a zone index is kept in the rule's name but ignored when judging: the rule would hold on every link
    ("2001:db8::%eth0/32", "a zone index (%eth0) cannot be part of a rule"),
])
def test_cidr_spellings_ipaddress_reads_otherwise_are_refused(item: str, message: str) -> None:
    with pytest.raises(ValueError, match=r"^\[0\]: " + message.replace("(", r"\(").replace(")", r"\)")):
        parse_cidrs([item])


def test_ipv4_mapped_rule_is_refused_naming_the_ipv4_spelling() -> None:
    # Destinations in ::ffff:0:0/96 are judged as IPv4, so this rule would match nothing: with only a deny list,
    # 192.0.2.1 and ::ffff:192.0.2.1 would both be allowed under a rule that reads "deny".
    with pytest.raises(ValueError, match=r"^\[0\]: ::ffff:c000:200/120 is IPv4-mapped .* write 192\.0\.2\.0/24$"):
        parse_cidrs(["::ffff:192.0.2.0/120"])


def test_ipv6_rule_containing_the_mapped_range_stays_ipv6() -> None:
    assert parse_cidrs(["::/0"])[0].prefixlen == 0
