"""Warnings about a config that loads but probably does not say what was meant.

Pure: reads the validated AuthzConfig. check-config prints these (and fails on them
with --strict); the service logs them when it loads or reloads the file.
"""

from __future__ import annotations

from authz_service.config import AuthzConfig
from authz_service.policy.shadowing import hiding_routes

Finding = tuple[tuple[str | int, ...], str]  # (document path, reason)


def advise(config: AuthzConfig) -> list[Finding]:
    """Every warning, in file order of the kinds below."""
    found: list[Finding] = []
    if config.no_routes:
        found.append((("no_routes",), f"empty policy: no routes, so every request gets "
                                      f"'unmatched: {config.unmatched}'"))
    for index, takers in hiding_routes(config.routes):
        name = config.routes[index].name
        by = " and ".join(f"'{t}'" for t in takers)
        found.append((("routes", index), f"route '{name}' can never match: every request "
                                         f"it matches is taken first by {by}"))
    found.extend(_unused_sources(config))
    return found


def _unused_sources(config: AuthzConfig) -> list[Finding]:
    if not config.routes or any(r.identities is None for r in config.routes):
        return []  # a route without `identities` tries every source
    used = {name for r in config.routes for name in r.identities or ()}
    return [(("identities", index, "name"), f"identity source '{spec.name}' is used by no route")
            for index, spec in enumerate(config.identities) if spec.name not in used]
