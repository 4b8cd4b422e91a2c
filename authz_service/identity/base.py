"""The identity-source seam: each mechanism (identity/registry.py) implements this."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from authz_service.models import Identity, RequestContext


@dataclass(frozen=True, slots=True)
class ProofUse:
    """A proof of possession this request spends (a DPoP proof's jti): the pipeline
    records it in a replay store before answering, and refuses it if seen before."""

    replay_key: str
    expires: float  # when it may be forgotten (the proof is too old by then)
    algs: str  # the challenge's algs= if it was replayed


@dataclass(frozen=True, slots=True)
class Proven:
    """An identity proven with a proof that still has to be recorded (ProofUse)."""

    identity: Identity
    proof: ProofUse


class IdentitySource(Protocol):
    name: str
    kind: str  # the mechanism's registry name, also Identity.kind

    def authenticate(self, ctx: RequestContext, now: float) -> Identity | Proven | None:
        """The proven identity, None when this kind of credential is absent.

        Raises a CredentialError subclass when the credential is present but bad.
        """
        ...


def string_list(value: Any) -> list[str]:
    """A claim that may be a space-separated string or a list of strings."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def audience_accepted(aud: Any, accepted: frozenset[str] | list[str]) -> bool:
    """An `aud` claim (a string or a list of them) names at least one accepted audience."""
    auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    return any(isinstance(a, str) and a in accepted for a in auds)
