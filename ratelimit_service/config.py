"""The envoyproxy/ratelimit YAML format as pydantic models, and loading a file or directory.

Reference files load unchanged. The one addition is the optional
`rate_limit.algorithm` key (`fixed_window`, the default, `sliding_window` or `gcra`).
Schema errors come from pydantic; semantic errors (bad unit, duplicate composite key,
...) are raised as `LocatedError` so the message names the file, line and key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import pydantic
from pydantic import BeforeValidator, ConfigDict, Field

from ratelimit_service.model import Algorithm
from ratelimit_service.rules import RuleSet, RuleTree, compile_domain
from tollgate.config import ConfigError, load_config_file

MAX_UINT32 = 2**32 - 1


def _scalar_to_str(value: Any) -> Any:
    # Go's yaml.v2 reads `value: 123` or `value: true` into a string field; do the same.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


Text = Annotated[str, BeforeValidator(_scalar_to_str)]


class _Model(pydantic.BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReplacesYaml(_Model):
    name: Text = ""


class RateLimitYaml(_Model):
    requests_per_unit: Annotated[int, Field(ge=0, le=MAX_UINT32)] = 0
    unit: Text = ""
    unlimited: bool = False
    name: Text = ""
    replaces: list[ReplacesYaml] | None = None
    algorithm: Algorithm = Algorithm.FIXED_WINDOW


class DescriptorYaml(_Model):
    key: Text = ""
    value: Text = ""
    rate_limit: RateLimitYaml | None = None
    descriptors: list[DescriptorYaml] | None = None
    shadow_mode: bool = False
    quota_mode: bool = False
    detailed_metric: bool = False
    value_to_metric: bool = False
    share_threshold: bool = False
    metadata: dict[str, Any] | None = None


class DomainYaml(_Model):
    domain: Text = ""
    descriptors: list[DescriptorYaml] | None = None


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


def load_rules(path: str | Path, *, merge_domains: bool = False) -> RuleSet:
    """Load a file or a directory of YAML files (one domain per file) into a RuleSet.

    With `merge_domains` (the reference's MERGE_DOMAIN_CONFIG) files naming the same
    domain add their top-level descriptors to it; a descriptor defined twice is still
    an error.
    """
    p = Path(path)
    if not p.exists():
        raise ConfigError(str(p), None, "file not found")
    files = config_files(p) if p.is_dir() else [p]
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
