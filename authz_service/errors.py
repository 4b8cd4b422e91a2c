"""Why an identity source refused a request; the engine maps each to a Deny."""

from __future__ import annotations


class CredentialError(Exception):
    """Base: the message is safe to show the client (it never contains a credential)."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class MalformedRequest(CredentialError):
    """400 invalid_request: empty bearer, credentials twice, two methods at once."""


class InvalidCredential(CredentialError):
    """401 invalid_token: present but not valid (bad signature, expired, unknown key)."""


class NotAllowed(CredentialError):
    """403 access_denied: a proven peer that this config does not accept."""


class KeysUnavailable(CredentialError):
    """503 keys_unavailable: the token's issuer holds no usable signing key (an IdP
    outage since start, or only unusable keys published): nothing the client can fix."""
