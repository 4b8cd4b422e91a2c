"""100 config writes under a steady caller, a third of them invalid: 0 failed calls.

Invalid writes cover what a deploy or an attacker produces: an empty file, a
comment-only file, broken YAML, an unknown key, an alias bomb, a self-referencing
alias, a file that would allow everything. Each is refused with the last good
config serving; each valid one is swapped in. The caller checks two paths the
whole time, and each answer must hold under every config: 0 wrong, 0 failed.
(Writes are atomic renames here so each one is exactly one reload; the
truncate-then-write case is tests/authz/test_whole_config.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kits.core_kit import atomic_write, calling
from tests.kits.grpc_kit import AuthzClient, authz_process, check_request
from tests.kits.processes import wait_for

pytestmark = pytest.mark.integration

HOSTILE_YAML = Path(__file__).parents[1] / "core" / "fixtures" / "hostile_yaml"
WRITES = 100


def valid(generation: int) -> str:
    # Every valid config allows /always and denies /never; /gen-N tells them apart.
    return f"""realm: t
routes:
  - name: always
    match: {{path: {{prefix: /always}}}}
    anonymous: true
  - name: gen
    match: {{path: {{exact: /gen-{generation}}}}}
    anonymous: true
"""


INVALID = [
    "",
    "# being rewritten\n",
    "realm: t\nroutes: [\n",
    "realm: t\nbogus: 1\nroutes: []\n",
    (HOSTILE_YAML / "alias_bomb.yaml").read_text(),
    (HOSTILE_YAML / "self_alias_mapping.yaml").read_text(),
    "realm: t\nunmatched: allow\n",
]


def right_answers(client: AuthzClient) -> bool:
    always = client.check(check_request(path="/always")).allowed
    never = client.check(check_request(path="/never")).allowed
    return always and not never


def test_a_reload_storm_with_invalid_files_fails_no_call(tmp_path: Path) -> None:
    config = tmp_path / "authz.yaml"
    config.write_text(valid(0))
    log = tmp_path / "authz.log"

    def rejected() -> int:
        return log.read_text().count('"config reload rejected')

    with authz_process(config, tmp_path) as (_, client):
        with calling(lambda: right_answers(client)) as caller:
            wait_for(lambda: caller.count() > 20, what="a steady caller")
            generation = invalid = 0
            for write in range(1, WRITES + 1):
                if write % 3 == 0:
                    before = rejected()
                    atomic_write(config, INVALID[invalid % len(INVALID)])
                    invalid += 1
                    wait_for(lambda before=before: rejected() > before,
                             timeout=30, what=f"invalid write {write} rejected")
                    assert client.check(check_request(path=f"/gen-{generation}")).allowed
                else:
                    generation += 1
                    atomic_write(config, valid(generation))
                    wait_for(lambda g=generation: client.check(
                        check_request(path=f"/gen-{g}")).allowed, timeout=30,
                        what=f"valid write {write} swapped in")
                    assert not client.check(check_request(path=f"/gen-{generation - 1}")).allowed
        text = log.read_text()
    assert invalid == WRITES // 3
    assert caller.failures == []
    assert caller.wrong() == 0
    assert text.count('"config reload rejected') == invalid
    assert text.count('"config reloaded"') == WRITES - invalid
    assert caller.count() > WRITES
