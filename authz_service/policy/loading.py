"""Reading, validating and compiling a policy file (and what a reload must watch)."""

from __future__ import annotations

from pathlib import Path

from authz_service.config import AuthzConfig, validation_context
from authz_service.keys.registry import KeyRegistry
from authz_service.lookups import introspection
from authz_service.policy.advice import advise
from authz_service.policy.compiled import CompiledPolicy, compile_config
from tollgate.config import Advice, ConfigNote, load_config_file


def load_policy(
    path: str | Path, keys: KeyRegistry, warnings: list[ConfigNote] | None = None
) -> CompiledPolicy:
    """Read, validate and compile a config file; ConfigError names file and line.

    `warnings`, when given, receives what the file probably did not mean
    (policy/advice.py), each naming file and line.
    """
    path = Path(path)
    factory = keys.factory(path.parent)
    # Introspection sources share the key registry's HTTP client (closed with it).
    introspectors = introspection.factory(lambda: keys.client)

    def build(data: object) -> CompiledPolicy:
        config = AuthzConfig.model_validate(data, context=validation_context(data))
        return compile_config(config, factory, path.parent,
                              introspectors)

    advice: Advice[CompiledPolicy] = Advice(lambda policy: advise(policy.config))
    policy = load_config_file(path, build, advice)
    if warnings is not None:
        warnings.extend(advice.found)
    keys.activate(factory.built)
    return policy


def watched_files(policy: CompiledPolicy) -> tuple[Path, ...]:
    """Files besides the policy whose change must reload it: its rate-limit rules, and
    what identity sources read when built (an introspection client's secret or key)."""
    limits = policy.limits.files if policy.limits is not None else ()
    sources = tuple(f for source in policy.sources.values() for f in getattr(source, "files", ()))
    return limits + sources
