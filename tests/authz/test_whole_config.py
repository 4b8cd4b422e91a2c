"""A config that gives every request the same answer says so, or it is refused.

An empty, comment-only or truncated (half-written) file has no routes, so every
request would get the `unmatched` answer: `--check-config` said "ok (0 identity
sources, 0 routes)" and a live service denied everything. Refused at load, at
reload (the last good config keeps serving) and by both check-config commands,
unless the file sets `no_routes: true`.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.kits.grpc_kit import authz_process, check_request
from tests.kits.processes import binary, wait_for

FIXTURES = Path(__file__).parent / "fixtures" / "whole_config"
NO_ROUTES = "(add routes, or set 'no_routes: true' if that is intended)"
EMPTY = "1: empty config: nothing but comments or whitespace"

INVALID = {
    "empty.yaml": EMPTY,
    "comments_only.yaml": EMPTY,
    "empty_mapping.yaml": EMPTY,
    "no_routes_denies_everything.yaml": "1: no routes: this config would deny "
    f"every request {NO_ROUTES}",
    "no_routes_allows_everything.yaml": "1: no routes: this config would allow "
    f"every request {NO_ROUTES}",
    "no_routes_but_routes.yaml": "1: 'no_routes: true' but 1 route(s) are "
    "configured",
}

GOOD = """realm: t
routes:
  - name: open
    match: {path: {prefix: /open}}
    anonymous: true
"""


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(command), capture_output=True, text=True, timeout=30, check=False)


def test_every_fixture_has_an_expected_message() -> None:
    assert sorted(p.name for p in FIXTURES.glob("*.yaml")) == sorted(INVALID)


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(INVALID))
def test_check_config_refuses_a_config_that_decides_nothing(name: str) -> None:
    path = FIXTURES / name
    for command in ([binary("authz-service"), "--check-config", str(path)],
                    [binary("tollgate"), "check-config", "authz", str(path)]):
        result = run(*command)
        assert result.returncode == 1
        assert result.stderr.strip() == f"{path}:{INVALID[name]}"
        assert result.stdout == ""


@pytest.mark.integration
@pytest.mark.parametrize("name", ["empty.yaml", "no_routes_allows_everything.yaml"])
def test_the_service_does_not_start_on_it(name: str, tmp_path: Path) -> None:
    path = FIXTURES / name
    result = run(binary("authz-service"), "--config", str(path),
                 "--grpc-address", f"unix:{tmp_path / 's.sock'}")
    assert result.returncode == 1
    last = json.loads(result.stderr.strip().splitlines()[-1])
    assert (last["msg"], last["error"]) == ("invalid config", f"{path}:{INVALID[name]}")


@pytest.mark.integration
@pytest.mark.parametrize("unmatched", ["deny", "allow"])
def test_no_routes_on_purpose_is_accepted(unmatched: str, tmp_path: Path) -> None:
    path = tmp_path / "authz.yaml"
    path.write_text(f"# maintenance: every request gets {unmatched}\n"
                    f"unmatched: {unmatched}\nno_routes: true\n")
    result = run(binary("authz-service"), "--check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{path}: ok (0 identity sources, 0 routes)"
    with authz_process(path, tmp_path) as (_, client):
        assert client.check(check_request(path="/anything")).allowed is (unmatched == "allow")


@pytest.mark.integration
def test_a_reload_seen_mid_write_keeps_the_last_good_config(tmp_path: Path) -> None:
    config = tmp_path / "authz.yaml"
    config.write_text(GOOD)
    log = tmp_path / "authz.log"
    with authz_process(config, tmp_path) as (_, client):
        assert client.check(check_request(path="/open")).allowed
        # What `>` in a shell or a non-atomic writer does: truncate, then write.
        with config.open("w") as handle:
            handle.flush()
            wait_for(lambda: "config reload rejected" in log.read_text(),
                     what="the truncated file seen and rejected")
            assert client.check(check_request(path="/open")).allowed  # last good kept
            handle.write(GOOD.replace("/open", "/other"))
        wait_for(lambda: client.check(check_request(path="/other")).allowed,
                 what="the completed file swapped in")
    rejected = [json.loads(line) for line in log.read_text().splitlines()
                if "config reload rejected" in line]
    assert rejected[0]["error"] == f"{config}:{EMPTY}"
