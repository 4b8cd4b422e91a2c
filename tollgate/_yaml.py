"""YAML loading that remembers where every value came from.

Config errors must name the file and line of the offending key, so the loader
keeps a map from each value's path (tuple of keys / indexes) to its line. It also
rejects duplicate mapping keys, which PyYAML silently overwrites.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class YamlDocument:
    data: Any
    lines: dict[Path, int]  # 1-based line of each value (and mapping key)


class YamlError(ValueError):
    def __init__(self, line: int | None, reason: str) -> None:
        super().__init__(reason)
        self.line = line
        self.reason = reason


_PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}"
    for name in ("map", "seq", "str", "int", "float", "bool", "null", "merge", "timestamp")
)


class _Loader(yaml.SafeLoader):
    """SafeLoader: no Python object tags, ever."""


def load_yaml(text: str) -> YamlDocument:
    """Parse one YAML document into plain data plus a path -> line map."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise YamlError(line, f"invalid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise YamlError(None, f"invalid YAML: {exc}") from None
    if node is None:
        return YamlDocument({}, {(): 1})
    lines: dict[Path, int] = {}
    constructor = _Loader(text)  # only used for its scalar resolution
    data = _build(node, (), lines, constructor)
    return YamlDocument(data, lines)


def _build(node: yaml.Node, path: Path, lines: dict[Path, int], ctor: _Loader) -> Any:
    lines[path] = node.start_mark.line + 1
    if node.tag not in _PLAIN_TAGS:
        raise YamlError(node.start_mark.line + 1, f"invalid value: unsupported tag {node.tag}")
    if isinstance(node, yaml.MappingNode):
        ctor.flatten_mapping(node)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = ctor.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise YamlError(key_node.start_mark.line + 1, "mapping keys must be scalars")
            skey = str(key) if not isinstance(key, str) else key
            if skey in result:
                raise YamlError(key_node.start_mark.line + 1, f"duplicate key '{skey}'")
            result[skey] = _build(value_node, (*path, skey), lines, ctor)
            # A key's own line is where the error message should point for that key.
            lines[(*path, skey)] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), lines, ctor) for i, item in enumerate(node.value)]
    try:
        return ctor.construct_object(node, deep=True)
    except yaml.constructor.ConstructorError as exc:
        raise YamlError(node.start_mark.line + 1, f"invalid value: {exc.problem}") from None


def line_of(lines: dict[Path, int], path: Path) -> int | None:
    """The line of the deepest known prefix of path."""
    for end in range(len(path), -1, -1):
        found = lines.get(path[:end])
        if found is not None:
            return found
    return None
