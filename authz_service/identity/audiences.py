"""Which audiences a token must be meant for: said in the file, never assumed (pure).

An issuer (a JWT's, or the authorization server an introspection source asks) mints
tokens for every API it serves; a source that checked no audience would accept a token
minted for any of them. So `audiences` is required: a list, one of which the token's
`aud` must name, or `any`, which accepts every audience and says so in the file.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from authz_service.config_base import Model

AUDIENCES_NEEDED = (
    "tokens this issuer mints for any other API would be accepted; list the audiences "
    "this API accepts (the token's aud), or set 'audiences: any' on purpose"
)


class AudienceSettings(Model):
    audiences: list[Annotated[str, Field(min_length=1)]] | Literal["any"] | None = None

    @field_validator("audiences", mode="before")
    @classmethod
    def _audience_list(cls, value: Any) -> Any:
        if value is None or value == "any":
            return value
        if not isinstance(value, list) or not all(isinstance(a, str) and a for a in value):
            raise ValueError("'audiences' is a list of audience names, or 'any'")
        if not value:
            raise ValueError(f"'audiences' is empty: {AUDIENCES_NEEDED}")
        return value

    @model_validator(mode="after")
    def _audience_said(self) -> AudienceSettings:
        if self.audiences is None:
            raise ValueError(f"no 'audiences': {AUDIENCES_NEEDED}")
        return self

    def accepted_audiences(self) -> frozenset[str]:
        """The audiences a token must name one of; empty for `audiences: any`."""
        return frozenset(self.audiences) if isinstance(self.audiences, list) else frozenset()
