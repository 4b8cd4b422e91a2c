"""The engine's structure, checked: no import circle, and the pure part imports no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "ratelimit_service"
PURE = [
    "ratelimit_service.models", "ratelimit_service.schema", "ratelimit_service.compiler",
    "ratelimit_service.rules", "ratelimit_service.charging", "ratelimit_service.decision",
    "ratelimit_service.status", "ratelimit_service.headers", "ratelimit_service.metadata",
    "ratelimit_service.algorithms",
]
IO = ("grpc", "redis", "hiredis", "envoy", "google.protobuf", "asyncio", "socket")


def imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = found
    return graph


def test_no_module_of_the_engine_imports_itself_back() -> None:
    graph = imports()
    cycles: list[list[str]] = []

    def walk(name: str, path: list[str]) -> None:
        for dep in sorted(graph.get(name, ())):
            if dep in path:
                cycles.append([*path[path.index(dep):], dep])
            elif dep in graph and len(path) < 30:
                walk(dep, [*path, dep])

    for name in graph:
        walk(name, [name])
    assert cycles == []
    assert "ratelimit_service.config" not in graph["ratelimit_service.rules"]


def test_the_pure_part_imports_no_io() -> None:
    graph = imports()
    for name in [n for n in graph if any(n == p or n.startswith(f"{p}.") for p in PURE)]:
        reached, todo = set(), [name]
        while todo:
            current = todo.pop()
            for dep in graph.get(current, ()):
                if dep.startswith("ratelimit_service") and dep not in reached:
                    reached.add(dep)
                    todo.append(dep)
        every = set().union(*(graph.get(n, set()) for n in {name, *reached}))
        io = sorted(d for d in every if d.startswith(IO))
        assert io == [], f"{name} reaches {io}"
