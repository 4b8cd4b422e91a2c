"""Every command says its version; `tollgate --help` speaks to users; debug logging
shows the services' own records, not the libraries' machinery."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence

import pytest

from authz_service.cli import main as authz_main
from ratelimit_service.cli import main as ratelimit_main
from tollgate.logs import LIBRARY_LOGGERS, configure_logging
from tollgate.version import version
from tollgate_cli.cli import COMMANDS
from tollgate_cli.cli import main as tollgate_main

Main = Callable[[Sequence[str] | None], int]


@pytest.mark.parametrize(("name", "main"), [
    ("authz-service", authz_main), ("ratelimit-service", ratelimit_main),
    ("tollgate", tollgate_main),
])
def test_every_command_prints_its_version(
    name: str, main: Main, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{name} {version()} (Python 3.")
    assert version() not in ("", "unknown")


def test_tollgate_help_lists_every_command_with_examples(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        tollgate_main(["--help"])
    out = capsys.readouterr().out
    for name, (_, help_text) in COMMANDS.items():
        assert f"  {name}" in out and help_text in out
    assert "examples:" in out and "tollgate up --check" in out
    assert "COMMANDS" not in out and "module" not in out  # nothing for contributors only


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in LIBRARY_LOGGERS}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)


@pytest.mark.usefixtures("restored_logging")
def test_debug_logging_caps_grpc_asyncio_and_http2_internals_at_info() -> None:
    configure_logging("debug", "json")
    assert logging.getLogger("authz.pipeline").isEnabledFor(logging.DEBUG)
    for name in ("grpc._cython.cygrpc", "grpc.aio", "asyncio", "hpack.hpack", "httpcore.http11"):
        assert not logging.getLogger(name).isEnabledFor(logging.DEBUG), name
        assert logging.getLogger(name).isEnabledFor(logging.INFO), name


@pytest.mark.usefixtures("restored_logging")
def test_a_quieter_level_quiets_the_libraries_too() -> None:
    configure_logging("error", "text")
    assert not logging.getLogger("grpc").isEnabledFor(logging.WARNING)
