"""The layers import downwards only: the core (tollgate) imports no service and no
tooling, the services import no tooling, and authz's pure phases import no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported(package: str) -> dict[str, set[str]]:
    """module path -> the top-level packages it imports (absolute imports only)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize(("package", "forbidden"), [
    ("tollgate", {"authz_service", "ratelimit_service", "tollgate_cli"}),
    ("authz_service", {"tollgate_cli"}),
    ("ratelimit_service", {"tollgate_cli", "authz_service"}),
])
def test_a_layer_imports_nothing_above_it(package: str, forbidden: set[str]) -> None:
    upward = {module: sorted(names & forbidden)
              for module, names in imported(package).items() if names & forbidden}
    assert upward == {}


PURE = ["authz_service/policy", "authz_service/identity", "authz_service/validation",
        "authz_service/limits/actions.py", "authz_service/limits/compiled.py",
        "authz_service/limits/config.py", "authz_service/claims.py", "authz_service/models.py"]
IO = {"grpc", "redis", "hiredis", "httpx", "envoy", "httptools", "socket", "asyncio"}


def test_the_pure_decision_code_imports_no_io() -> None:
    offenders: dict[str, list[str]] = {}
    for module, names in imported("authz_service").items():
        if any(module.startswith(pure) for pure in PURE) and names & IO:
            offenders[module] = sorted(names & IO)
    assert offenders == {}


def test_suites_and_benches_share_kits_not_each_others_modules() -> None:
    """tests/ and bench/ import harness from tests/kits/ only: never a test module, a
    conftest, or a helper living beside one suite; bench/ never edits sys.path."""
    for folder in ("tests", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            text = path.read_text()
            for node in ast.walk(ast.parse(text)):
                modules = ([node.module] if isinstance(node, ast.ImportFrom) and node.module
                           else [a.name for a in node.names] if isinstance(node, ast.Import)
                           else [])
                for module in modules:
                    if module.startswith("tests.") or module == "tests":
                        assert module.startswith("tests.kits") or (
                            isinstance(node, ast.ImportFrom) and module == "tests.kits"), (
                            f"{path.relative_to(ROOT)} imports {module}")
            if folder == "bench":
                assert "sys.path" not in text, f"{path.relative_to(ROOT)} edits sys.path"
