"""The first five minutes: README.md's "Try it" block and what `tollgate up` prints are
the same commands, `up --check` makes every one of them, and `./scripts/up` shows its
progress while it installs."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.kits.deploy_kit import ROOT
from tollgate_cli.stack import (
    DEMO_TOKEN,
    DemoCall,
    demo_commands,
    demo_text,
    demo_token_command,
    more_tokens_command,
)

pytestmark = pytest.mark.integration  # bash runs the block and the setup script

README = (ROOT / "README.md").read_text()


def _try_it_block() -> str:
    section = README.split("## Try it\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match is not None, "no ```sh block in README's Try it"
    return match.group(1)


def _examples(block: str) -> tuple[str, dict[str, str]]:
    """(the first line, {comment: the shell lines under it})."""
    first, *rest = block.strip().split("\n\n")
    examples = {}
    for chunk in rest:
        comment, _, shell = chunk.partition("\n")
        assert comment.startswith("# "), chunk
        examples[comment[2:]] = shell
    return first, examples


def _printed(block: str) -> dict[str, str]:
    """The examples `up` prints, less its closing "# more tokens: ..." line (which the
    README says in prose, test_the_readmes_first_line_... checks it)."""
    examples = _examples(block)[1]
    assert sum(k.startswith("more tokens: ") for k in examples) == 1
    return {k: v for k, v in examples.items() if not k.startswith("more tokens: ")}


def _calls() -> list[DemoCall]:
    return [DemoCall(c.label, c.expect, c.shell, lambda: []) for c in
            demo_commands("run", 8443, 8444)]


def test_the_readme_and_up_show_the_same_commands() -> None:
    _, readme = _examples(_try_it_block())
    up = _printed(demo_text("export TOKEN=eyJ0eXAi", _calls(), "run"))
    assert readme == up
    curl = {line for shell in readme.values() for line in shell.splitlines() if "curl" in line}
    assert curl == {line for shell in up.values() for line in shell.splitlines()
                    if "curl" in line}
    assert len(curl) == 8


def test_the_readmes_first_line_mints_the_token_up_mints_in_the_run_dir() -> None:
    first, _ = _examples(_try_it_block())
    assert first == f"export TOKEN=$({demo_token_command('run')})"
    assert "--run-dir run" in first
    assert f"--sub {DEMO_TOKEN['sub']}" in first and DEMO_TOKEN["scope"] in first
    # Every `tollgate token` line of the block names the run dir.
    for line in _try_it_block().splitlines():
        if "tollgate token" in line:
            assert "--run-dir run" in line, line
    assert more_tokens_command("run") in README


def test_up_check_makes_every_request_the_readme_shows() -> None:
    """demo_calls pairs each command with its sender (zip(..., strict=True)); these are
    the ones --check runs, the schema violation included."""
    labels = [c.label for c in demo_commands("run", 8443, 8444)]
    assert labels == list(_examples(_try_it_block())[1])
    assert any("problem+json" in label for label in labels)
    assert [c.expect for c in demo_commands("run", 8443, 8444)] == [
        200, 401, 403, 400, 429, 200, 403, 400]


def test_the_block_is_valid_shell() -> None:
    result = subprocess.run(["bash", "-n"], input=_try_it_block(), capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr


def test_the_install_prints_one_line_per_package() -> None:
    pip_output = "\n".join([
        "Obtaining file:///work/tollgate",
        "Collecting grpcio>=1.70 (from tollgate==0.1.0)",
        "  Downloading grpcio-1.76.0-cp311-manylinux.whl (6.6 MB)",
        "Requirement already satisfied: pip in ./.venv/lib/python3.11/site-packages",
        "Collecting PyYAML>=6.0",
        "Installing collected packages: PyYAML, grpcio, tollgate",
        "ERROR: pip's dependency resolver does not currently take into account",
        "Successfully installed PyYAML-6.0.2 grpcio-1.76.0 tollgate-0.1.0",
    ])
    result = subprocess.run(
        ["bash", "-c", "set -euo pipefail; . scripts/_setup.sh; pip_progress"],
        input=pip_output, capture_output=True, text=True, cwd=ROOT, timeout=30, check=True)
    assert result.stdout.splitlines() == [
        "   [  1] file:///work/tollgate",
        "   [  2] grpcio>=1.70 (from tollgate==0.1.0)",
        "   [  3] PyYAML>=6.0",
        "   installing 3 packages...",
        "ERROR: pip's dependency resolver does not currently take into account",
        "   installed",
    ]
    setup = (ROOT / "scripts" / "_setup.sh").read_text()
    assert "| tee \"$log\" | pip_progress" in setup
    assert "pip install -q --upgrade pip" in setup  # only the pip self-update stays quiet
