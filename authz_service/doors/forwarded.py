"""Forwarded checks: NGINX `auth_request` and Traefik `forwardAuth` on the HTTP door.

Envoy puts the client's method and path on the check request itself; NGINX and
Traefik call a fixed URL (the door's path prefix) and name the client's request in
headers: NGINX in the `X-Original-Method` / `X-Original-URI` its config sets, Traefik
(and Caddy's forward_auth, "generic") in `X-Forwarded-Method` / `-Uri`; both send
the client's address in `X-Forwarded-For` and the host and scheme in
`X-Forwarded-Host` / `-Proto`. A client can send any of those headers too, so they
are read only when the TCP peer is a configured forwarder; from any other peer the
check is refused (403 `untrusted_forwarder`), never answered as if the headers were
true. The Envoy attribute headers (`x-tollgate-attr-*`) are never trusted here: a
proxy that passes the client's headers on would pass a client's own.

The mode is chosen at startup (tollgate's door gets this module's context builder
instead of Envoy's), so the Envoy door pays nothing for it.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from types import MappingProxyType

from authz_service.doors.bodies import denial_body
from authz_service.doors.http_wire import NotACheck, deny_response, split_headers
from authz_service.models import Deny, RequestContext
from tollgate.http_server import HttpRequest

log = logging.getLogger("authz.forwarded")

UNIX_PEER = "unix"  # the word that trusts peers on the door's Unix socket
UNTRUSTED_FORWARDER = "untrusted_forwarder"
DENIAL_BODY_HEADER = "x-tollgate-denial"  # nginx: the denial's body, for `return`
_FORWARDED_FOR = "x-forwarded-for"
_FORWARDED_HOST = "x-forwarded-host"
_FORWARDED_PROTO = "x-forwarded-proto"
_SCHEMES = frozenset({"http", "https"})
_METHOD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ-_")
_PEERS_REMEMBERED = 1024  # distinct TCP peers whose trust is kept (they are the proxies)


@dataclass(frozen=True, slots=True)
class Convention:
    """Where one kind of proxy names the client's request."""

    name: str
    method: str  # header carrying the client's method
    uri: str  # header carrying the client's path and query, as sent
    # NGINX hands the client none of an auth subrequest's body: the denial's body also
    # rides in a header its config `return`s (deploy/nginx/).
    body_in_header: bool = False


CONVENTIONS = {
    c.name: c
    for c in (
        Convention("nginx", "x-original-method", "x-original-uri", body_in_header=True),
        Convention("traefik", "x-forwarded-method", "x-forwarded-uri"),
        Convention("generic", "x-forwarded-method", "x-forwarded-uri"),
    )
}


class ForwardRefused(Exception):
    """A forwarded check the door will not decide: its whole answer is `response`."""

    def __init__(self, response: bytes) -> None:
        super().__init__("forwarded check refused")
        self.response = response


class TrustedForwarders:
    """The TCP peers whose forwarded headers are believed: networks, and `unix`."""

    def __init__(self, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...],
                 unix: bool) -> None:
        self.networks = networks
        self.unix = unix
        self._known: dict[str, bool] = {}

    @classmethod
    def parse(cls, text: str) -> TrustedForwarders:
        """`127.0.0.1/32, 10.0.0.0/8, ::1, unix` (a bare address is one host)."""
        networks = []
        unix = False
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            if item == UNIX_PEER:
                unix = True
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=True))
            except ValueError as exc:
                raise ValueError(f"'{item}' is not a CIDR, an IP address or "
                                 f"'{UNIX_PEER}' ({exc})") from None
        if not networks and not unix:
            raise ValueError("no trusted forwarder given (e.g. 127.0.0.1/32 or unix)")
        return cls(tuple(networks), unix)

    def trusts(self, peer: str) -> bool:
        known = self._known.get(peer)
        if known is not None:
            return known
        if not peer:
            trusted = self.unix
        else:
            try:
                address = ipaddress.ip_address(peer)
            except ValueError:
                trusted = False
            else:
                if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                    address = address.ipv4_mapped
                trusted = any(address in network for network in self.networks)
        if len(self._known) < _PEERS_REMEMBERED:
            self._known[peer] = trusted
            if not trusted:
                log.warning("forwarded check from an untrusted peer refused",
                            extra={"peer": peer or "unix socket"})
        return trusted


class Forwarding:
    """Builds the request context of a forwarded check (the door's `to_context`)."""

    def __init__(self, convention: Convention, trusted: TrustedForwarders) -> None:
        self.convention = convention
        self.trusted = trusted
        self._untrusted = deny_response(
            Deny(403, UNTRUSTED_FORWARDER, "this door takes forwarded checks only from its "
                 "trusted forwarders"), "")

    def context(self, request: HttpRequest, path_prefix: str) -> RequestContext:
        path = request.target.partition("?")[0]
        if path != path_prefix and not path.startswith(path_prefix + "/"):
            raise NotACheck(request.target)
        if not self.trusted.trusts(request.peer):
            raise ForwardRefused(self._untrusted)
        headers, duplicates, _envoy_attributes = split_headers(request.headers)
        request_id = headers.get("x-request-id", "")
        convention = self.convention
        read = (convention.method, convention.uri, _FORWARDED_FOR, _FORWARDED_HOST,
                _FORWARDED_PROTO)
        twice = duplicates.intersection(read)
        if twice:
            raise self._malformed(f"{sorted(twice)[0]} sent more than once", request_id)
        method = headers.pop(convention.method, "").strip().upper()
        uri = headers.pop(convention.uri, "").strip()
        client = headers.pop(_FORWARDED_FOR, "").rpartition(",")[2].strip()
        host = headers.pop(_FORWARDED_HOST, "").strip() or headers.get("host", "")
        scheme = headers.pop(_FORWARDED_PROTO, "").strip().lower() or "https"
        if not method or not _METHOD_CHARS.issuperset(method):
            raise self._malformed(f"no valid {convention.method} from the forwarder",
                                  request_id)
        if not uri.startswith("/"):
            raise self._malformed(f"no {convention.uri} (a path) from the forwarder",
                                  request_id)
        try:
            ipaddress.ip_address(client)
        except ValueError:
            raise self._malformed("no client address (X-Forwarded-For) from the forwarder",
                                  request_id) from None
        if scheme not in _SCHEMES:
            raise self._malformed("X-Forwarded-Proto is neither http nor https", request_id)
        if host:
            headers["host"] = host
        path, _, query = uri.partition("?")
        return RequestContext(
            method=method,
            path=path,
            host=host,
            scheme=scheme,
            query=query,
            headers=MappingProxyType(headers),
            duplicate_headers=duplicates,
            request_id=request_id,
            body=request.body,
            source_address=client,
        )

    def _malformed(self, description: str, request_id: str) -> ForwardRefused:
        deny = Deny(400, "invalid_request", description)
        return ForwardRefused(self.deny(deny, request_id))

    def deny(self, deny: Deny, request_id: str, *, head_only: bool = False) -> bytes:
        """A denial as this proxy passes it to the client (see Convention)."""
        if not self.convention.body_in_header:
            return deny_response(deny, request_id, head_only=head_only)
        extra = ((DENIAL_BODY_HEADER, denial_body(deny, request_id).decode()),)
        return deny_response(deny, request_id, head_only=head_only, extra_headers=extra)
