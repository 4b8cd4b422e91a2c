"""Two authz-service replicas sharing spent DPoP proofs in a real redis-server
(`--dpop-replay-redis-url`): a proof spent on one is refused by the other."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from tests.kits import dpop_kit, jwt_kit
from tests.kits.door_kit import Ask, HttpDoorClient, ask_http
from tests.kits.processes import binary, stop_process, wait_for
from tests.kits.redis_procs import RedisProcess

pytestmark = pytest.mark.integration
ISSUER_KEY = jwt_kit.rsa_key("rsa-1")
PROOF_KEY = jwt_kit.ec_key("proof")


def _answers(address: str) -> bool:
    try:
        HttpDoorClient(address, timeout=1).close()
    except OSError:
        return False
    return True


@contextmanager
def replica(workdir: Path, config: Path, redis_url: str) -> Iterator[HttpDoorClient]:
    workdir.mkdir()
    socket_path = workdir / "authz-http.sock"
    log_path = workdir / "authz.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [binary("authz-service"), "--config", str(config), "--grpc-address", "off",
             "--http-address", f"unix:{socket_path}", "--dpop-replay-redis-url", redis_url,
             "--dpop-replay-redis-timeout", "2"],
            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        wait_for(lambda: proc.poll() is not None or _answers(f"unix:{socket_path}"),
                 timeout=20, what="authz-service HTTP door")
        if proc.poll() is not None:
            raise AssertionError(f"authz-service exited: {log_path.read_text()}")
        client = HttpDoorClient(f"unix:{socket_path}")
        try:
            yield client
        finally:
            client.close()
    finally:
        stop_process(proc)


def test_a_proof_spent_on_one_replica_is_refused_by_the_other(tmp_path: Path) -> None:
    (tmp_path / "jwks.json").write_text(json.dumps(jwt_kit.jwks(ISSUER_KEY)))
    config = tmp_path / "authz.yaml"
    config.write_text(
        f"identities:\n  - name: idp\n    jwt: {{issuer: '{jwt_kit.ISSUER}', "
        "jwks_file: jwks.json, audiences: any, dpop: allow}\n"
        "routes:\n  - name: orders\n    match: {path: {prefix: /orders}}\n")
    server = RedisProcess(tmp_path)
    server.start()
    with ExitStack() as stack:
        stack.callback(server.stop)
        first = stack.enter_context(replica(tmp_path / "a", config, server.url))
        second = stack.enter_context(replica(tmp_path / "b", config, server.url))
        access = jwt_kit.mint(ISSUER_KEY, cnf={
            "jkt": dpop_kit.thumbprint(dpop_kit.proof_jwk(PROOF_KEY))})
        proof = dpop_kit.proof(PROOF_KEY, "GET", "https://api.test/orders/1", access)
        ask = Ask(headers={"authorization": f"DPoP {access}", "dpop": proof})
        assert ask_http(first, ask).status == 200
        replayed = ask_http(second, ask)
        assert (replayed.status, replayed.code) == (401, "invalid_dpop_proof")
        assert replayed.headers["www-authenticate"].startswith(
            'DPoP realm="tollgate", error="invalid_dpop_proof", '
            'error_description="DPoP proof already used"')
        # the store down: the proof is refused, never let through unchecked
        server.stop()
        fresh = Ask(headers={"authorization": f"DPoP {access}", "dpop": dpop_kit.proof(
            PROOF_KEY, "GET", "https://api.test/orders/1", access)})
        down = ask_http(second, fresh)
        assert (down.status, down.code) == (503, "dpop_replay_unavailable")
