"""``runtime_policy.network_policy``: CIDR allow and deny lists, and the verdict on one destination address.

Precedence (docs/attestation.md, "network_policy"): the most specific rule that contains the destination wins,
i.e. the one with the longest prefix, whichever list it is in. On a tie (the same network in both lists) deny
wins. A destination no rule contains is allowed when ``allow_egress`` is empty and denied otherwise: an allow
list means "only these". So the seed's ``allow 10.0.0.0/8`` + ``deny 0.0.0.0/0`` means "only 10.0.0.0/8".

IPv4-mapped IPv6 addresses (``::ffff:10.1.2.3``, as dual-stack sockets report them) are judged as the IPv4
address they carry, so an IPv4 rule cannot be bypassed by spelling the destination in IPv6.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
VerdictName = Literal["allowed", "denied"]

DEFAULT_RULE = "default"  # the rule name reported when no CIDR contains the destination


@dataclass(frozen=True)
class Verdict:
    verdict: VerdictName
    rule: str  # "allow_egress 10.0.0.0/8", "deny_egress 0.0.0.0/0" or "default"

    @property
    def violation(self) -> bool:
        return self.verdict == "denied"


@dataclass(frozen=True)
class EgressRules:
    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()
    # (IP version, prefix length) -> {network address as int: rule name}, longest prefixes first: a flow costs one
    # dict lookup per distinct prefix length in the policy, not one comparison per rule.
    _index: tuple[tuple[int, int, dict[int, str]], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[tuple[int, int], dict[int, str]] = {}
        # deny is entered last, so the same network in both lists is a deny rule (deny wins a tie)
        for name, networks in (("allow_egress", self.allow), ("deny_egress", self.deny)):
            for net in networks:
                index.setdefault((net.version, net.prefixlen), {})[int(net.network_address)] = f"{name} {net}"
        ordered = sorted(index.items(), key=lambda item: -item[0][1])
        object.__setattr__(self, "_index", tuple((v, length, nets) for (v, length), nets in ordered))

    def judge(self, destination: str | Address) -> Verdict:
        """The verdict on a flow to ``destination`` (an address string or object)."""
        address = normalize(destination)
        value, bits = int(address), address.max_prefixlen
        for version, length, networks in self._index:
            if version == address.version:
                rule = networks.get(value >> (bits - length) << (bits - length))
                if rule is not None:
                    return Verdict("denied" if rule.startswith("deny_") else "allowed", rule)
        return Verdict("denied" if self.allow else "allowed", DEFAULT_RULE)


def normalize(address: str | Address) -> Address:
    """An address object; IPv4-mapped IPv6 becomes the IPv4 address. Raises ``ValueError`` if malformed."""
    parsed = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return parsed.ipv4_mapped
    return parsed


# Destinations that never leave the guest's link and that every stack sends housekeeping to, so a flow to them is
# not egress and is not judged: IPv6 interface- and link-local multicast (RFC 4291 section 2.7, scop 1 and 2:
# DHCPv6, mDNS), IPv4's Local Network Control Block 224.0.0.0/24 (RFC 5771 section 4: never forwarded) and the
# limited broadcast address (RFC 919: DHCP). Link-local *unicast* is judged: fe80::/10 reaches the host itself
# (its DNS, any service on the bridge), and neighbour discovery and MLD are never tracked by conntrack
# (untracked ICMPv6 types), so no housekeeping is lost. 169.254.0.0/16 is judged too: metadata services live there.
_LINK_SCOPED = tuple(ipaddress.ip_network(n) for n in ("ff01::/16", "ff02::/16", "224.0.0.0/24",
                                                        "255.255.255.255/32"))


def is_egress(destination: str | Address) -> bool:
    """False for destinations that cannot leave the link (``_LINK_SCOPED``)."""
    address = normalize(destination)
    return not any(address.version == net.version and address in net for net in _LINK_SCOPED)


def parse_cidrs(items: Iterable[object]) -> tuple[Network, ...]:
    """Parse a list of CIDR strings strictly.

    Host bits set (``10.0.0.1/8``) are refused rather than silently masked: the operator may have meant a /32,
    and a rule that means something else than it says is worse than a start-up error. For the same reason the
    spellings ``ipaddress`` reads otherwise than an operator may are refused (``_spelling_problem``), and so is
    an IPv4-mapped IPv6 network, which would match nothing since such destinations are judged as IPv4.
    Raises ``ValueError`` whose message starts with the index of the bad item (``[1]: ...``) so the caller can
    name the field.
    """
    out = []
    for index, item in enumerate(items):
        if not isinstance(item, str):
            # ValueError, not TypeError: the caller turns one exception type into "field[index]: reason"
            raise ValueError(f"[{index}]: expected a CIDR string like \"10.0.0.0/8\" (got {item!r})")  # noqa: TRY004
        problem = _spelling_problem(item.strip())
        if problem:
            raise ValueError(f"[{index}]: {problem} (got {item!r})")
        try:
            net = ipaddress.ip_network(item.strip(), strict=True)
        except ValueError as exc:
            raise ValueError(f"[{index}]: not a CIDR network: {exc}") from None
        if isinstance(net, ipaddress.IPv6Network) and net.subnet_of(_IPV4_MAPPED):
            ipv4 = ipaddress.ip_network(f"{net.network_address.ipv4_mapped}/{net.prefixlen - 96}")
            raise ValueError(f"[{index}]: {net} is IPv4-mapped (such destinations are judged as IPv4): write {ipv4}")
        out.append(net)
    return tuple(out)


_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")  # RFC 4291 section 2.5.5.2
_PREFIX_RE = re.compile(r"0|[1-9][0-9]{0,2}")


def _spelling_problem(text: str) -> str | None:
    """Why ``text`` is not written as address[/bits], or None. ipaddress also takes a netmask or a hostmask after
    the slash and guesses which (``0.0.0.0/255.255.255.255``, a Cisco wildcard "any", becomes a /32), and an IPv6
    zone index (``%eth0``) that it then ignores when matching."""
    address, slash, prefix = text.partition("/")
    if "%" in address:
        return f"a zone index (%{address.partition('%')[2]}) cannot be part of a rule"
    if slash and not _PREFIX_RE.fullmatch(prefix):
        return f"prefix length must be a decimal number of bits like /8, not /{prefix}"
    return None
