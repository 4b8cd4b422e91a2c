"""Address rules: which client networks may call, from Envoy's view of the client.

The address is `RequestContext.source_address`: gRPC `attributes.source.address`, or
on the HTTP door the attribute header Envoy sets from
`%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%`. Envoy decides what that is (its
`use_remote_address` and `xff_num_trusted_hops`), never a header the client sets.
An address that is missing or does not parse fails every rule: fail closed.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from authz_service.policy.config import AddressRule

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


MAX_REMEMBERED = 4096


@dataclass(frozen=True, slots=True)
class CompiledAddressRule:
    allow: tuple[Network, ...]
    deny: tuple[Network, ...]
    # address text -> verdict: `ipaddress` costs ~3 µs a request (callgrind, bench/
    # RESULTS.md), a dict lookup nothing; clients repeat. Bounded: emptied when full.
    _seen: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    def admits(self, address: str) -> bool:
        verdict = self._seen.get(address)
        if verdict is None:
            if len(self._seen) >= MAX_REMEMBERED:
                self._seen.clear()
            verdict = self._seen[address] = self._decide(address)
        return verdict

    def _decide(self, address: str) -> bool:
        ip = parse_address(address)
        if ip is None:
            return False
        if any(ip in net for net in self.deny):
            return False
        return not self.allow or any(ip in net for net in self.allow)


def compile_address_rule(rule: AddressRule) -> CompiledAddressRule:
    return CompiledAddressRule(
        tuple(ipaddress.ip_network(c) for c in rule.allow),
        tuple(ipaddress.ip_network(c) for c in rule.deny),
    )


def parse_address(text: str) -> Address | None:
    """An IP address; an IPv4-mapped IPv6 one (`::ffff:10.0.0.1`) as its IPv4 self, so
    IPv4 networks match it whichever socket family Envoy listens on."""
    if not text:
        return None
    try:
        ip = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
