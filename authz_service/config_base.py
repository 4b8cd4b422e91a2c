"""The base of every authz config model, and the name patterns they share."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from tollgate.config import worded_pattern

# identity sources, routes, keys, limit sets
NAME = worded_pattern(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$",
                      "a name (1-64 letters, digits, '_', '.', ':' or '-', "
                      "starting with a letter or digit)")
HEADER = worded_pattern(r"^[a-z0-9!#$%&'*+.^_`|~-]{1,128}$", "a lower-case header name")


class Model(BaseModel):
    """Frozen, and every key known: a misspelt key is an error, never ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)
