"""YAML loading that remembers where every value came from, within fixed bounds.

Config errors must name the file and line of the offending key, so the loader
keeps a map from each value's path (tuple of keys / indexes) to its line. It also
rejects duplicate mapping keys, which PyYAML silently overwrites.

A YAML file is input an attacker (or an unlucky deploy) controls, and aliases
make it a compression format: 400 bytes of nested `*a` references expand to
billions of values. So the loader bounds the text's size, the nesting depth,
the number of aliases, the number of values once aliases are expanded, and the
CPU time spent, and refuses a self-referencing alias: each is a `YamlError` with
a line, never a RecursionError or a stalled process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import yaml

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class YamlLimits:
    """What one document may cost. The defaults leave room for any real config."""

    max_bytes: int = 1024 * 1024
    max_depth: int = 100  # nested collections
    max_aliases: int = 1_000  # `*name` references in the text
    max_values: int = 200_000  # nodes once every alias is expanded
    max_cpu_seconds: float = 10.0  # this thread's CPU time for the whole load


DEFAULT_LIMITS = YamlLimits()


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
_CLOCK_EVERY = 512  # nodes between CPU-time checks


class _Budget:
    """Counts work against the limits; raises YamlError at the first one passed."""

    def __init__(self, limits: YamlLimits) -> None:
        self.limits = limits
        self.deadline = time.thread_time() + limits.max_cpu_seconds
        self.ticks = 0

    def tick(self, line: int) -> None:
        self.ticks += 1
        if self.ticks % _CLOCK_EVERY == 0 and time.thread_time() > self.deadline:
            seconds = self.limits.max_cpu_seconds
            raise YamlError(line, f"document takes more than {seconds:g} s of CPU to load")


class _Loader(yaml.SafeLoader):
    """SafeLoader (no Python object tags, ever) that composes within the limits."""

    def __init__(self, stream: str, budget: _Budget | None = None) -> None:
        super().__init__(stream)
        self.budget = budget
        self._depth = 0
        self._aliases = 0
        self._open_anchors: set[str] = set()

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        budget = self.budget
        if budget is None:  # only used for scalar resolution
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        event = self.peek_event()  # type: ignore[no-untyped-call]
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > budget.limits.max_aliases:
                raise YamlError(line, f"more than {budget.limits.max_aliases} aliases")
            if event.anchor in self._open_anchors:
                raise YamlError(line, f"alias '*{event.anchor}' refers to a node containing it")
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        budget.tick(line)
        anchor = getattr(event, "anchor", None)
        collection = isinstance(event, yaml.CollectionStartEvent)
        if collection:
            self._depth += 1
            if self._depth > budget.limits.max_depth:
                raise YamlError(line, f"nested deeper than {budget.limits.max_depth} levels")
        if anchor is not None:
            self._open_anchors.add(anchor)
        try:
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            if collection:
                self._depth -= 1
            if anchor is not None:
                self._open_anchors.discard(anchor)


def load_yaml(text: str, limits: YamlLimits = DEFAULT_LIMITS) -> YamlDocument:
    """Parse one YAML document into plain data plus a path -> line map."""
    if len(text) > limits.max_bytes or len(text.encode("utf-8")) > limits.max_bytes:
        raise YamlError(None, f"document larger than {limits.max_bytes} bytes")
    budget = _Budget(limits)
    loader: _Loader | None = None
    try:
        loader = _Loader(text, budget)  # the reader refuses control characters here
        node = loader.get_single_node()
    except yaml.reader.ReaderError as exc:
        at = text[: exc.position].count("\n") + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise YamlError(at, f"invalid YAML: {exc.reason} (character #x{code:04x})") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or str(exc)
        if exc.context and exc.context.startswith("found duplicate anchor"):
            problem = exc.context.split(";")[0]  # PyYAML's problem reads "second occurrence"
        raise YamlError(line, f"invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise YamlError(None, f"invalid YAML: {exc}") from None
    finally:
        if loader is not None:
            loader.dispose()
    if node is None:
        return YamlDocument({}, {(): 1})
    _check_expansion(node, limits.max_values)
    lines: dict[Path, int] = {}
    constructor = _Loader("")  # only used for its scalar resolution
    try:
        data = _build(node, (), lines, constructor, budget)
    finally:
        # A loader refers to itself (its parser state is a bound method), so only
        # the cyclic GC would free it and whatever it holds; that pass over
        # hundreds of thousands of objects stops every thread.
        constructor.dispose()
        release(node)
    return YamlDocument(data, lines)


def release(root: Any) -> None:
    """Free a large tree a piece at a time instead of in one deallocation.

    Dropping the last reference to a tree of 500k objects frees all of them in
    one C call, holding the GIL for ~100 ms: the event loop's thread waits that
    long. Taken apart in a Python loop, the interpreter can switch threads
    between pieces. Only the caller's references keep anything alive.
    """
    stack: list[Any] = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, yaml.Node):
            if isinstance(item.value, list):
                stack.append(item.value)
                item.value = []
        elif isinstance(item, list):
            stack.extend(item)
            item.clear()
        elif isinstance(item, dict):
            while item:
                stack.extend(item.popitem())
        elif isinstance(item, tuple):
            stack.extend(item)


def _check_expansion(root: yaml.Node, max_values: int) -> None:
    """Refuse a document whose aliases expand it past max_values nodes.

    Counted on the node graph, each shared node once (memoised), so the check costs
    what the text costs, not what the expansion would. Nesting is already bounded.
    """
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        total = 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                total += size(key) + size(value)
                if total > max_values:
                    break
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                total += size(item)
                if total > max_values:
                    break
        if total > max_values:
            raise YamlError(
                node.start_mark.line + 1,
                f"aliases expand the document past {max_values} values",
            )
        sizes[id(node)] = total
        return total

    size(root)


def _build(
    node: yaml.Node, path: Path, lines: dict[Path, int], ctor: _Loader, budget: _Budget
) -> Any:
    lines[path] = node.start_mark.line + 1
    budget.tick(node.start_mark.line + 1)
    if node.tag not in _PLAIN_TAGS:
        raise YamlError(node.start_mark.line + 1, f"invalid value: unsupported tag {node.tag}")
    if isinstance(node, yaml.MappingNode):
        try:
            ctor.flatten_mapping(node)
        except yaml.constructor.ConstructorError as exc:
            mark = exc.problem_mark or node.start_mark
            raise YamlError(mark.line + 1, f"invalid value: {exc.problem}") from None
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise YamlError(key_node.start_mark.line + 1, "mapping keys must be scalars")
            key = _scalar(ctor, key_node)
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise YamlError(key_node.start_mark.line + 1, "mapping keys must be scalars")
            skey = str(key) if not isinstance(key, str) else key
            if skey in result:
                raise YamlError(key_node.start_mark.line + 1, f"duplicate key '{skey}'")
            result[skey] = _build(value_node, (*path, skey), lines, ctor, budget)
            # A key's own line is where the error message should point for that key.
            lines[(*path, skey)] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(item, (*path, i), lines, ctor, budget) for i, item in enumerate(node.value)
        ]
    try:
        return _scalar(ctor, node)
    except yaml.constructor.ConstructorError as exc:
        raise YamlError(node.start_mark.line + 1, f"invalid value: {exc.problem}") from None


def _scalar(ctor: _Loader, node: yaml.Node) -> Any:
    value = ctor.construct_object(node, deep=True)  # type: ignore[no-untyped-call]
    # construct_object memoises node -> value: forget it, or every node of the
    # document stays alive until the loader goes.
    ctor.constructed_objects.clear()
    return value


def line_of(lines: dict[Path, int], path: Path) -> int | None:
    """The line of the deepest known prefix of path."""
    for end in range(len(path), -1, -1):
        found = lines.get(path[:end])
        if found is not None:
            return found
    return None
