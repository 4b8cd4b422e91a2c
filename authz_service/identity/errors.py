"""Why an identity source refused a request; the engine maps each to a Deny."""

from __future__ import annotations

from collections.abc import Awaitable, Callable


class CredentialError(Exception):
    """Base: the message is safe to show the client (it never contains a credential).

    `rank`: when no identity source succeeds, the client hears of the failure with the
    lowest rank (the one place that order is written).
    """

    rank = 2

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class MalformedRequest(CredentialError):
    """400 invalid_request: empty bearer, credentials twice, two methods at once."""

    rank = 0  # a malformed request first: it is wrong whatever the sources say


class InvalidCredential(CredentialError):
    """401 invalid_token: present but not valid (bad signature, expired, unknown key)."""


class NotAllowed(CredentialError):
    """403 access_denied: a proven peer that this config does not accept."""

    rank = 1  # then a refused peer


class KeysUnavailable(CredentialError):
    """503 keys_unavailable: the token's issuer holds no usable signing key (an IdP
    outage since start, or only unusable keys published): nothing the client can fix."""


class DpopRefusal(InvalidCredential):
    """401 with an RFC 9449 `WWW-Authenticate: DPoP` challenge: `error` is
    invalid_dpop_proof (the proof), invalid_token (the token's DPoP binding) or
    use_dpop_nonce (send the nonce in `nonce`); `algs`: the proof algorithms accepted."""

    def __init__(self, description: str, algs: str, error: str = "invalid_dpop_proof",
                 nonce: str = "") -> None:
        super().__init__(description)
        self.error = error
        self.algs = algs
        self.nonce = nonce


class ForeignCredential(InvalidCredential):
    """A credential meant for another source (a token of another issuer): reported only
    if no source accepts the request."""

    rank = 3  # last


class DependencyUnavailable(CredentialError):
    """503: a service the credential's check depends on (an introspection endpoint) gave
    no usable answer in time: nothing the client can fix. `code` is the stable denial
    code (and metric label)."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(description)
        self.code = code


class LookupNeeded(Exception):
    """The credential can only be judged after I/O (an introspection call).

    The pipeline awaits `lookup()` (which bounds its own wait and leaves its result
    where the source will find it) and decides once more; `error` is the answer when
    the lookup settled nothing. Raised by a source on a cache miss: the pure engine
    never waits.
    """

    def __init__(
        self, source: str, lookup: Callable[[], Awaitable[None]], error: CredentialError
    ) -> None:
        super().__init__(source)
        self.source = source
        self.lookup = lookup
        self.error = error
