"""The deployment guides: their links resolve, and the tuning guide keeps its measured
figures in one table (so a new benchmark run is one edit)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.deploy._util import ROOT

GUIDES = ["deploy.md", "migrate-from-envoy-ratelimit.md", "migrate-from-jwt-authn.md",
          "tuning.md", "security.md"]


@pytest.mark.parametrize("page", [ROOT / "README.md", *(ROOT / "docs" / g for g in GUIDES)],
                         ids=lambda p: p.name)
def test_every_relative_link_resolves(page: Path) -> None:
    text = page.read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert local, page
    for link in local:
        assert (page.parent / link).exists(), f"{page.name}: {link}"


def _figures_and_rest() -> tuple[str, str]:
    text = (ROOT / "docs" / "tuning.md").read_text()
    head, _, after = text.partition("## The figures\n")
    table, _, rest = after.partition("\n## ")
    assert table.strip(), "no figures table"
    return table, head + rest


def test_the_tuning_guides_measured_figures_are_only_in_its_table() -> None:
    table, rest = _figures_and_rest()
    measured = re.compile(r"\d[\d,.]*\s*(µs|us|ms|MB|KB|req/s)\b")
    # Outside the table: settings (0.5 s, 320Mi, 1 MiB) are fine, measurements are not.
    assert not [m.group(0) for m in measured.finditer(rest)
                if not re.fullmatch(r"1,000\s+req/s", m.group(0))]
    names = set(re.findall(r"\*\*(F\d+)\*\*", table))
    assert len(names) >= 10
    assert set(re.findall(r"\bF\d+\b", rest)) <= names  # every figure used is defined
    for line in table.strip().splitlines()[2:]:
        sources = ("bench/", "-m bench.", "ARCHITECTURE", "issue")
        assert any(source in line for source in sources), line


def test_the_readme_layout_names_every_folder_and_only_folders_that_exist() -> None:
    """The README's Layout is the newcomer's map: each top-level folder and each of
    the services' packages is on it, and nothing on it is gone."""
    readme = (ROOT / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("```")[1]
    named = set(re.findall(r"^\s*([a-z_]+)/", layout, re.M))
    top = {p.name for p in ROOT.iterdir()
           if p.is_dir() and not p.name.startswith(".") and p.name != "scripts"
           and not p.name.endswith(".egg-info")}
    packages = {p.parent.name for service in ("authz_service", "ratelimit_service")
                for p in (ROOT / service).glob("*/__init__.py")}
    assert top <= named, top - named
    leaves = {"algorithms", "stores", "defaults"}  # named inside their service's line
    assert packages - leaves <= named, packages - leaves - named
    for name in re.findall(r"\b([a-z_]+\.py)\b", layout):
        assert list(ROOT.glob(f"*/{name}")) or list(ROOT.glob(f"*/*/{name}")), name
    for name in named:
        assert list(ROOT.glob(name)) or list(ROOT.glob(f"*/{name}")), name
