"""Key fetching against a real local HTTP server: discovery, caching, rotation,
outages, slow and hostile IdPs. In-process for the fetcher, end to end for rotation."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest

from authz_service.config import JwtSource
from authz_service.jwks import RemoteJwks, cache_ttl, check_url
from tests.authz import jwt_kit
from tests.authz.grpc_kit import authz_process, check_request
from tests.authz.http_kit import HttpServer, Route, serve_http


def source(**settings: Any) -> JwtSource:
    settings.setdefault("issuer", "https://idp.test")
    if "discovery" not in settings and "jwks_uri" not in settings:
        settings["jwks_uri"] = "https://idp.test/jwks.json"
    return JwtSource.model_validate(settings)


def run(fn: Callable[[httpx.AsyncClient], Coroutine[Any, Any, Any]]) -> Any:
    async def main() -> Any:
        async with httpx.AsyncClient(follow_redirects=False) as client:
            return await fn(client)

    return asyncio.run(main())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_cache_control_is_clamped() -> None:
    bounds = source(refresh={"min_ttl_seconds": 60, "max_ttl_seconds": 600,
                             "default_ttl_seconds": 300})
    assert cache_ttl(None, bounds) == 300
    assert cache_ttl("public, max-age=120", bounds) == 120
    assert cache_ttl("max-age=5", bounds) == 60
    assert cache_ttl("max-age=999999", bounds) == 600
    assert cache_ttl("no-store", bounds) == 60


@pytest.mark.parametrize(
    ("url", "ok"),
    [("https://idp.test/k", True), ("http://127.0.0.1:8/k", True), ("http://localhost/k", True),
     ("http://idp.test/k", False), ("ftp://idp.test/k", False), ("https:///k", False)],
)
def test_only_https_or_loopback_urls(url: str, ok: bool) -> None:
    if ok:
        check_url(url, allow_insecure_http=False)
    else:
        with pytest.raises(ValueError, match="http"):
            check_url(url, allow_insecure_http=False)


def test_oidc_discovery_and_cache_control_expiry() -> None:
    key = jwt_kit.rsa_key("k1")
    clock = Clock()
    with serve_http() as idp:
        idp.set_json("/.well-known/openid-configuration",
                     {"issuer": idp.base_url, "jwks_uri": f"{idp.base_url}/keys"})
        idp.set_json("/keys", jwt_kit.jwks(key), cache_control="max-age=120")

        async def scenario(client: httpx.AsyncClient) -> RemoteJwks:
            jwks = RemoteJwks("idp", source(issuer=idp.base_url, discovery=True), client, clock)
            assert await jwks.refresh()
            return jwks

        jwks = run(scenario)
    assert [k.kid for k in jwks.key_set.keys] == ["k1"]
    assert jwks.expires_at == clock.now + 120
    assert jwks.generation == 1


def test_discovery_naming_another_issuer_is_refused() -> None:
    with serve_http() as idp:
        idp.set_json("/.well-known/openid-configuration",
                     {"issuer": "https://evil.test", "jwks_uri": f"{idp.base_url}/keys"})
        idp.set_json("/keys", jwt_kit.jwks(jwt_kit.rsa_key()))

        async def scenario(client: httpx.AsyncClient) -> tuple[bool, int]:
            jwks = RemoteJwks("idp", source(issuer=idp.base_url, discovery=True), client)
            return await jwks.refresh(), len(jwks.key_set.keys)

        assert run(scenario) == (False, 0)
        assert idp.hits_for("/keys") == 0


def test_discovered_jwks_uri_must_be_https_or_loopback() -> None:
    with serve_http() as idp:
        idp.set_json("/.well-known/openid-configuration",
                     {"issuer": idp.base_url, "jwks_uri": "http://attacker.test/keys"})

        async def scenario(client: httpx.AsyncClient) -> bool:
            return await RemoteJwks(
                "idp", source(issuer=idp.base_url, discovery=True), client
            ).refresh()

        assert run(scenario) is False


def with_server(
    routes: dict[str, Route | dict[str, Any]],
    scenario: Callable[[HttpServer, httpx.AsyncClient], Coroutine[Any, Any, Any]],
) -> Any:
    with serve_http() as idp:
        for path, route in routes.items():
            if isinstance(route, Route):
                idp.set_route(path, route)
            else:
                idp.set_json(path, route)
        return run(lambda client: scenario(idp, client))


def test_outage_keeps_the_last_good_keys() -> None:
    key = jwt_kit.rsa_key("k1")

    async def scenario(idp: HttpServer, client: httpx.AsyncClient) -> None:
        jwks = RemoteJwks("idp", source(jwks_uri=f"{idp.base_url}/keys"), client)
        assert await jwks.refresh()
        idp.set_route("/keys", Route(status=503, body=b"down"))
        assert not await jwks.refresh()
        idp.set_route("/keys", Route(status=200, body=b"<html>not json</html>"))
        assert not await jwks.refresh()
        assert [k.kid for k in jwks.key_set.keys] == ["k1"]

    with_server({"/keys": jwt_kit.jwks(key)}, scenario)


def test_connection_refused_keeps_the_last_good_keys() -> None:
    key = jwt_kit.rsa_key("k1")
    with serve_http() as idp:
        idp.set_json("/keys", jwt_kit.jwks(key))
        url = f"{idp.base_url}/keys"

        async def first(client: httpx.AsyncClient) -> RemoteJwks:
            jwks = RemoteJwks("idp", source(jwks_uri=url), client)
            assert await jwks.refresh()
            return jwks

        jwks = run(first)

    async def after(client: httpx.AsyncClient) -> bool:
        jwks.client = client
        return await jwks.refresh()

    assert run(after) is False
    assert [k.kid for k in jwks.key_set.keys] == ["k1"]


def test_slow_idp_times_out_within_bound() -> None:
    async def scenario(idp: HttpServer, client: httpx.AsyncClient) -> float:
        jwks = RemoteJwks(
            "idp", source(jwks_uri=f"{idp.base_url}/keys", refresh={"timeout_seconds": 0.3}),
            client,
        )
        started = time.monotonic()
        assert not await jwks.refresh()
        return time.monotonic() - started

    body = json.dumps(jwt_kit.jwks(jwt_kit.rsa_key())).encode()
    elapsed = with_server({"/keys": Route(body=body, delay=5)}, scenario)
    assert elapsed < 3  # bounded by the timeout, not by the IdP's 5 s


def test_oversized_and_redirected_responses_are_refused() -> None:
    big = json.dumps({"keys": [], "pad": "x" * 4096}).encode()

    async def scenario(idp: HttpServer, client: httpx.AsyncClient) -> tuple[bool, bool]:
        small_limit = source(jwks_uri=f"{idp.base_url}/big", refresh={"max_bytes": 1024})
        redirect = source(jwks_uri=f"{idp.base_url}/moved")
        return (
            await RemoteJwks("a", small_limit, client).refresh(),
            await RemoteJwks("b", redirect, client).refresh(),
        )

    routes: dict[str, Route | dict[str, Any]] = {
        "/big": Route(body=big),
        "/moved": Route(status=302, headers={"location": "/keys"}),
        "/keys": jwt_kit.jwks(jwt_kit.rsa_key()),
    }
    assert with_server(routes, scenario) == (False, False)


def test_unknown_kid_refetch_is_shared_and_cooled_down() -> None:
    clock = Clock()

    async def scenario(idp: HttpServer, client: httpx.AsyncClient) -> None:
        jwks = RemoteJwks(
            "idp",
            source(jwks_uri=f"{idp.base_url}/keys",
                   refresh={"unknown_kid_cooldown_seconds": 30}),
            client, clock,
        )
        assert await jwks.refresh_for_unknown_kid()  # first: allowed
        clock.now += 1
        results = await asyncio.gather(*(jwks.refresh_for_unknown_kid() for _ in range(50)))
        assert results == [False] * 50  # within the cooldown: no fetch at all
        clock.now += 30
        results = await asyncio.gather(*(jwks.refresh_for_unknown_kid() for _ in range(50)))
        assert all(results)  # one fetch, shared by all fifty
        assert idp.hits_for("/keys") == 2

    with_server({"/keys": jwt_kit.jwks(jwt_kit.rsa_key())}, scenario)


def test_key_rotation_end_to_end(tmp_path: Path) -> None:
    old, new = jwt_kit.rsa_key("old"), jwt_kit.rsa_key("new")
    with serve_http() as idp:
        idp.set_json("/keys", jwt_kit.jwks(old), cache_control="max-age=3600")
        config = tmp_path / "authz.yaml"
        config.write_text(f"""
identities:
  - name: idp
    jwt:
      issuer: {jwt_kit.ISSUER}
      jwks_uri: {idp.base_url}/keys
      refresh: {{unknown_kid_cooldown_seconds: 0}}
routes:
  - name: all
    match: {{path: {{prefix: /}}}}
""")
        with authz_process(config, tmp_path) as (_, client):
            def status(key: jwt_kit.SigningKey) -> int:
                token = jwt_kit.mint(key)
                return client.check(
                    check_request(headers={"authorization": f"Bearer {token}"})
                ).status

            old_token = jwt_kit.mint(old)
            assert client.check(
                check_request(headers={"authorization": f"Bearer {old_token}"})
            ).allowed
            # The IdP rotates: only the new key is published.
            idp.set_json("/keys", jwt_kit.jwks(new), cache_control="max-age=3600")
            assert status(new) == 200  # unknown kid -> one refetch -> accepted
            # The cached old token is tied to the old key set: re-verified, refused.
            answer = client.check(
                check_request(headers={"authorization": f"Bearer {old_token}"})
            )
            assert (answer.status, answer.body["error_description"]) == (401, "unknown key id")
            # The IdP goes down: the current keys keep serving.
            idp.set_route("/keys", Route(status=500))
            assert status(new) == 200


def test_an_unchanged_refresh_keeps_the_generation() -> None:
    # The verified-token cache is tied to the generation: bumping it on every
    # refresh would empty the cache every TTL for nothing.
    async def scenario(idp: HttpServer, client: httpx.AsyncClient) -> list[int]:
        jwks = RemoteJwks("idp", source(jwks_uri=f"{idp.base_url}/keys"), client)
        generations = []
        for _ in range(2):
            assert await jwks.refresh()
            generations.append(jwks.generation)
        idp.set_json("/keys", jwt_kit.jwks(jwt_kit.rsa_key("k2")))
        assert await jwks.refresh()
        generations.append(jwks.generation)
        return generations

    assert with_server({"/keys": jwt_kit.jwks(jwt_kit.rsa_key("k1"))}, scenario) == [1, 1, 2]
