"""Loading envoyproxy/ratelimit YAML files and directories into a RuleSet.

Reference files load unchanged; the optional extensions are described in schema.py
and docs/ratelimit.md. Schema errors come from pydantic; semantic errors (bad unit,
duplicate composite key, ...) from the compiler, both as `file:line: reason`.
A directory with no `*.yaml`/`*.yml` file would silently turn every limit off, so it
is refused unless the caller allows it (`--allow-empty-config`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ratelimit_service.compiler import compile_domain
from ratelimit_service.rules import RuleSet, RuleTree
from ratelimit_service.schema import (
    DescriptorYaml,
    DomainYaml,
    RateLimitByYaml,
    RateLimitYaml,
    ReplacesYaml,
    WindowYaml,
)
from tollgate.config import ConfigError, load_config_file

__all__ = [
    "DescriptorYaml",
    "DomainYaml",
    "RateLimitByYaml",
    "RateLimitYaml",
    "ReplacesYaml",
    "WindowYaml",
    "build_domain",
    "config_files",
    "load_domain_file",
    "load_rules",
]


def build_domain(data: Any) -> RuleTree:
    """Validate one file's document and compile it (raises ValidationError/LocatedError)."""
    if data is None or data == {}:
        data = {}
    return compile_domain(DomainYaml.model_validate(data))


def load_domain_file(path: str | Path) -> RuleTree:
    """Load one YAML file holding one domain."""
    tree = load_config_file(path, build_domain)
    return tree.located(str(path), _domain_line(Path(path)))


def _domain_line(path: Path) -> int | None:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for number, line in enumerate(lines, start=1):
        if _DOMAIN_KEY.match(line):
            return number
    return None


_DOMAIN_KEY = re.compile(r"^domain\s*:")


def config_files(directory: Path) -> list[Path]:
    """The files of a config directory, as the reload watcher sees them."""
    return sorted(
        p
        for p in directory.iterdir()
        if p.suffix in (".yaml", ".yml") and not p.name.startswith(".") and p.is_file()
    )


def load_rules(
    path: str | Path, *, merge_domains: bool = False, allow_empty: bool = False
) -> RuleSet:
    """Load a file or a directory of YAML files (one domain per file) into a RuleSet.

    With `merge_domains` (the reference's MERGE_DOMAIN_CONFIG) files naming the same
    domain add their top-level descriptors to it; a descriptor defined twice is still
    an error. A directory without config files is an error unless `allow_empty`.
    """
    p = Path(path)
    if not p.exists():
        raise ConfigError(str(p), None, "file not found")
    files = config_files(p) if p.is_dir() else [p]
    if not files and not allow_empty:
        raise ConfigError(
            str(p), None,
            "no *.yaml or *.yml file in this directory: every rate limit would be off "
            "(--allow-empty-config to serve with no limits)",
        )
    domains: dict[str, RuleTree] = {}
    for file in files:
        tree = load_domain_file(file)
        first = domains.get(tree.domain)
        if first is None:
            domains[tree.domain] = tree
        elif not merge_domains:
            raise ConfigError(
                str(file),
                tree.domain_line,
                f"domain: duplicate domain '{tree.domain}', already defined in {first.file}",
            )
        else:
            clash = first.clashes_with(tree)
            if clash:
                raise ConfigError(
                    str(file),
                    None,
                    f"duplicate descriptor composite key '{tree.domain}.{clash}' "
                    f"(also in {first.file}) while merging domain '{tree.domain}'",
                )
            domains[tree.domain] = first.merged_with(tree)
    return RuleSet(domains)
