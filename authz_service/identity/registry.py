"""The identity mechanisms: name -> its settings model, how to build a source from
them, and which headers carry its credential. A new mechanism is one module under
authz_service/identity/ and one line here; the config format (`identities[].<name>`),
the compiler and the credential stripping all read this table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from authz_service.identity import api_key, introspection, jwt, mtls
from authz_service.identity.base import IdentitySource
from authz_service.identity.given import GivenIdentity
from authz_service.identity.introspection import IntrospectorFactory
from authz_service.identity.jwt import KeyProviderFactory
from authz_service.identity.token_cache import TokenCache
from authz_service.models import Identity


@dataclass(frozen=True, slots=True)
class SourceContext:
    """What building one identity source may use besides its own settings."""

    name: str
    key_provider: KeyProviderFactory
    token_cache: TokenCache
    max_token_bytes: int
    kept_claims: frozenset[str]  # claims a cached identity keeps (rules and headers read them)
    base_dir: Path = field(default_factory=Path.cwd)  # where relative file settings start
    introspector: IntrospectorFactory | None = None  # the I/O side of introspection sources


@dataclass(frozen=True, slots=True)
class Mechanism:
    config: type[BaseModel]
    build: Callable[[SourceContext, Any], IdentitySource]  # ValueError: unusable settings
    credential_headers: Callable[[Any], tuple[str, ...]]  # removed before the upstream
    # `tollgate test`: the Identity the built source proves for a caller a test states
    # (ValueError: the statement does not fit this mechanism; CredentialError: refused).
    given_identity: Callable[[Any, GivenIdentity], Identity]


KINDS: dict[str, Mechanism] = {
    jwt.KIND: Mechanism(jwt.JwtSource, jwt.build, jwt.credential_headers, jwt.given_identity),
    api_key.KIND: Mechanism(api_key.ApiKeySource, api_key.build, api_key.credential_headers,
                            api_key.given_identity),
    mtls.KIND: Mechanism(mtls.MtlsSource, mtls.build, mtls.credential_headers,
                         mtls.given_identity),
    introspection.KIND: Mechanism(introspection.IntrospectionSource, introspection.build,
                                  introspection.credential_headers,
                                  introspection.given_identity),
}
