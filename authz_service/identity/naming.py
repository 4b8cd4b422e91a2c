"""Which credential an identity was proven with, by name (pure).

An API key identity names its key (`key_id`), an mTLS one its peer's SPIFFE ID
(`spiffe_id`); a JWT's claims may carry claims of the same names, which name nothing.
So the name is read by kind, here, for the decision log and the limit actions alike.
"""

from __future__ import annotations

from authz_service.claims import scalar_text
from authz_service.identity import api_key, mtls
from authz_service.models import Identity

ID_CLAIMS = {api_key.KIND: api_key.ID_CLAIM, mtls.KIND: mtls.ID_CLAIM}
# What a decision record calls each kind's credential id.
RECORD_FIELDS = {api_key.KIND: "api_key_id", mtls.KIND: "spiffe_id"}


def credential_id(identity: Identity, kind: str) -> str:
    """The id of the `kind` credential that proved `identity`; "" for any other kind."""
    if identity.kind != kind:
        return ""
    return scalar_text(identity.claims.get(ID_CLAIMS[kind])) or ""


def named_credential(identity: Identity) -> tuple[str, str] | None:
    """(record field, id) of the credential that proved `identity`, if its kind names one."""
    field = RECORD_FIELDS.get(identity.kind)
    named = credential_id(identity, identity.kind) if field is not None else ""
    return (field, named) if field is not None and named else None
