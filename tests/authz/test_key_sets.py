"""Key sets only replace good ones with good ones; readiness waits for the first.

A JWKS whose keys are all unusable (too small, symmetric, private, wrong use) or
that has none is a failed fetch: logged, counted, and the last good keys keep
verifying. Before this, such a document was installed as an empty key set and
every token was refused until the IdP recovered (662 of 724 Checks got 401).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2

from authz_service.keys.jwks import JwksFileKeys, RemoteJwks
from authz_service.keys.keyset import parse_jwks
from authz_service.keys.registry import KeyRegistry
from tests.kits import jwt_kit
from tests.kits.grpc_kit import AuthzClient, authz_process, check_request
from tests.kits.http_kit import HttpServer, Route, serve_http
from tests.kits.key_sources import remote_config, source, unusable_document
from tests.kits.processes import wait_for
from tollgate.metrics import REGISTRY

RSA = jwt_kit.rsa_key("rsa-good")
SMALL = jwt_kit.rsa_key("rsa-small", bits=1024)
SERVICE = "envoy.service.auth.v3.Authorization"


def fetches(source_name: str, result: str) -> float:
    value = REGISTRY.get_sample_value(
        "tollgate_authz_jwks_fetches_total", {"source": source_name, "result": result})
    return value or 0.0


def run(coro_fn: Any) -> Any:
    async def main() -> Any:
        async with httpx.AsyncClient(follow_redirects=False) as client:
            return await coro_fn(client)

    return asyncio.run(main())


@pytest.fixture
def idp() -> Any:
    with serve_http() as server:
        yield server


@pytest.mark.parametrize("document", ["all_unusable", "no_keys"])
def test_a_jwks_without_usable_keys_never_replaces_a_good_set(
    idp: HttpServer, document: str, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"idp-{document}"
    idp.set_json("/jwks", jwt_kit.jwks(RSA))
    bad = unusable_document() if document == "all_unusable" else {"keys": []}

    async def go(client: httpx.AsyncClient) -> RemoteJwks:
        jwks = RemoteJwks(name, source(jwks_uri=f"{idp.base_url}/jwks"), client)
        assert await jwks.refresh()
        idp.set_json("/jwks", bad)
        with caplog.at_level(logging.ERROR, logger="authz.jwks"):
            assert not await jwks.refresh()
        return jwks

    before = fetches(name, "no_usable_keys")
    jwks = run(go)
    assert jwks.key_set.has_kid("rsa-good")
    assert jwks.generation == 1
    assert fetches(name, "no_usable_keys") == before + 1
    assert fetches(name, "ok") >= 1
    message = "JWKS refresh failed, keeping last keys"
    failed = [r for r in caplog.records if r.getMessage() == message]
    error = failed[-1].__dict__["error"]
    if document == "all_unusable":
        assert error.startswith("JWKS has no usable key (4 skipped: key 0 (kid='rsa-small'): ")
    else:
        assert error == "JWKS has no keys"
    assert failed[-1].__dict__["keys"] == 1


def test_a_first_fetch_without_usable_keys_leaves_the_source_without_keys_and_not_ready(
    idp: HttpServer,
) -> None:
    idp.set_json("/jwks", unusable_document())
    registry = KeyRegistry()

    async def go(client: httpx.AsyncClient) -> tuple[bool, dict[str, str], bool]:
        registry._client = client
        factory = registry.factory(Path("."))
        provider = factory("idp", source(jwks_uri=f"{idp.base_url}/jwks"))
        registry.activate(factory.built)
        assert isinstance(provider, RemoteJwks)
        assert not await provider.refresh()
        blockers = registry.readiness.blockers()
        first = (provider.key_set.keys == (), blockers, registry.has_keys("idp"))
        idp.set_json("/jwks", jwt_kit.jwks(RSA))
        assert await provider.refresh()
        assert registry.readiness.ready
        assert registry.has_keys("idp")
        return first

    empty, blockers, has_keys = run(go)
    assert empty
    assert blockers == {"keys:idp": "no usable signing keys yet"}
    assert not has_keys


def test_a_jwks_file_without_usable_keys_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [SMALL.public_jwk()]}))
    with pytest.raises(ValueError) as err:
        JwksFileKeys(path)
    assert str(err.value) == (
        f"cannot load JWKS file {path}: JWKS has no usable key (1 skipped: key 0 "
        "(kid='rsa-small'): RSA key of 1024 bits is too small)"
    )


def test_a_jwks_file_rewritten_without_usable_keys_keeps_the_last(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwt_kit.jwks(RSA)))
    keys = JwksFileKeys(path)
    path.write_text(json.dumps(unusable_document()) + "\n")
    keys.poll()
    assert keys.key_set.has_kid("rsa-good")
    assert keys.generation == 1


def test_discovery_and_jwks_share_one_deadline(idp: HttpServer) -> None:
    # Each answer alone is within timeout_seconds; together they are not. With a
    # deadline per request a refresh took up to twice timeout_seconds.
    idp.set_route("/.well-known/openid-configuration", Route(body=json.dumps(
        {"issuer": idp.base_url, "jwks_uri": f"{idp.base_url}/keys"}).encode(), delay=0.35))
    idp.set_route("/keys", Route(body=json.dumps(jwt_kit.jwks(RSA)).encode(), delay=0.35))

    async def go(client: httpx.AsyncClient) -> tuple[bool, float]:
        jwks = RemoteJwks("idp", source(issuer=idp.base_url, discovery=True,
                                        refresh={"timeout_seconds": 0.5}), client)
        started = time.monotonic()
        ok = await jwks.refresh()
        return ok, time.monotonic() - started

    ok, elapsed = run(go)
    idp.release.set()
    assert not ok
    assert elapsed < 0.5 * 1.5


def test_parse_reports_why_a_set_is_unusable() -> None:
    keys = parse_jwks(json.dumps(unusable_document()))
    assert not keys.usable
    assert keys.why_unusable().endswith("; ...)")


# --- the real service -----------------------------------------------------------------


def health(client: AuthzClient, name: str) -> str:
    try:
        reply = client.health.Check(health_pb2.HealthCheckRequest(service=name), timeout=2)
    except grpc.RpcError as exc:
        return exc.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.mark.integration
def test_not_ready_until_usable_keys_arrive_and_ready_through_a_bad_jwks_after(
    idp: HttpServer, tmp_path: Path
) -> None:
    idp.set_route("/jwks", Route(status=503, body=b"down"))
    config = tmp_path / "authz.yaml"
    config.write_text(remote_config(idp, retry_seconds=0.05, min_ttl_seconds=0.05,
                                    default_ttl_seconds=0.05))
    token = jwt_kit.mint(RSA)
    with authz_process(config, tmp_path) as (_, client):
        wait_for(lambda: idp.hits_for("/jwks") >= 2, what="two failed fetches")
        assert health(client, "liveness") == "SERVING"
        assert health(client, "") == "NOT_SERVING"
        assert health(client, SERVICE) == "NOT_SERVING"
        idp.set_json("/jwks", unusable_document())
        hits = idp.hits_for("/jwks")
        wait_for(lambda: idp.hits_for("/jwks") >= hits + 2, what="unusable documents fetched")
        assert health(client, "") == "NOT_SERVING"
        denied = client.check(check_request(headers=bearer(token)))
        assert (denied.status, denied.body["error"]) == (503, "keys_unavailable")
        idp.set_json("/jwks", jwt_kit.jwks(RSA))
        wait_for(lambda: health(client, "") == "SERVING", what="ready after usable keys")
        assert health(client, SERVICE) == "SERVING"
        assert client.check(check_request(headers=bearer(token))).allowed
        # The IdP now publishes only unusable keys, again and again: nothing changes.
        idp.set_json("/jwks", unusable_document())
        hits = idp.hits_for("/jwks")
        wait_for(lambda: idp.hits_for("/jwks") >= hits + 3, what="bad documents fetched")
        answers = [client.check(check_request(headers=bearer(jwt_kit.mint(RSA, sub=f"u{i}"))))
                   for i in range(20)]
        assert all(a.allowed for a in answers)
        assert health(client, "") == "SERVING"
        assert "JWKS has no usable key" in (tmp_path / "authz.log").read_text()


def test_a_jwks_without_kids_verifies_tokens_naming_a_kid() -> None:
    # Keys without a kid (shared secrets, JWKS that omit kids) are candidates for any token.
    jwk = jwt_kit.rsa_key("k").public_jwk()
    del jwk["kid"]
    keys = parse_jwks(json.dumps({"keys": [jwk]}))
    assert keys.candidates("whatever", "RS256") == keys.keys


def test_an_unchanged_jwks_refresh_keeps_the_generation() -> None:
    # The verified-token cache is tied to the key-set generation: bumping it on every
    # refresh emptied the cache every TTL even when the IdP's keys had not changed.
    with serve_http() as idp:
        idp.set_json("/keys", jwt_kit.jwks(jwt_kit.rsa_key("k1")))
        jwt_source = source(issuer="https://idp.test", jwks_uri=f"{idp.base_url}/keys")

        async def scenario() -> list[int]:
            async with httpx.AsyncClient() as client:
                jwks = RemoteJwks("idp", jwt_source, client)
                generations = []
                for _ in range(2):
                    assert await jwks.refresh()
                    generations.append(jwks.generation)
                idp.set_json("/keys", jwt_kit.jwks(jwt_kit.rsa_key("k2")))
                assert await jwks.refresh()
                generations.append(jwks.generation)
                return generations

        assert asyncio.run(scenario()) == [1, 1, 2]
