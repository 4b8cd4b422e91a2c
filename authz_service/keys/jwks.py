"""Where an issuer's keys come from: a shared secret, a local JWKS file, a JWKS URL
or OIDC discovery. This is the I/O side of key handling (parsing is keys.py).

Remote key sets are cached per Cache-Control (clamped to configured bounds),
refreshed in the background, and kept when the IdP is down. A key set only ever
replaces another when it has a usable key: a document whose keys are all
unusable (or that has none) is a failed fetch, so it never empties a good set.
Every fetch (discovery and JWKS together) is bounded by one deadline,
`timeout_seconds`, however slowly the IdP trickles its answer. A token with an
unknown `kid` triggers at most one refetch per cooldown, shared by every request
waiting on it, so a storm of random kids costs one HTTP request. Only configured
URLs are fetched: nothing in a token can point the service at a URL.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from authz_service.identity.jwt import HMAC_ALGORITHMS, JwtSource
from authz_service.keys.keyset import KeySet, KeySetError, VerificationKey, key_set, parse_jwks
from authz_service.metrics import JWKS_FETCHES
from tollgate.reload import file_signature

if TYPE_CHECKING:
    import httpx  # at run time only RemoteJwks needs it, and imports it (~4 MB of RSS)

log = logging.getLogger("authz.jwks")
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*(\d+)", re.IGNORECASE)


class KeyFetchError(Exception):
    """Keys could not be fetched or parsed; the last good set keeps serving.

    `result` is the metric label: http_error, timeout, too_large, invalid_document,
    no_usable_keys.
    """

    def __init__(self, message: str, result: str = "http_error") -> None:
        super().__init__(message)
        self.result = result


def check_url(url: str, allow_insecure_http: bool) -> None:
    """https only, except http to a loopback host (local IdPs, tests) or when allowed."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname:
        if allow_insecure_http or _is_loopback(parts.hostname):
            return
        raise ValueError(f"'{url}': http is only allowed to loopback (set allow_insecure_http)")
    raise ValueError(f"'{url}' is not an https URL")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cache_ttl(cache_control: str | None, source: JwtSource) -> float:
    bounds = source.refresh
    ttl = bounds.default_ttl_seconds
    if cache_control:
        lowered = cache_control.lower()
        match = _MAX_AGE.search(lowered)
        if "no-store" in lowered or "no-cache" in lowered:
            ttl = bounds.min_ttl_seconds
        elif match:
            ttl = float(match.group(1))
    return min(max(ttl, bounds.min_ttl_seconds), bounds.max_ttl_seconds)


class StaticKeys:
    """HS* issuers: the shared secret from an environment variable, never the file."""

    def __init__(self, source: JwtSource) -> None:
        var = source.shared_secret_env or ""
        secret = os.environ.get(var, "")
        if len(secret) < 32:
            raise ValueError(f"${var} must hold a shared secret of at least 32 bytes")
        algs = frozenset(a for a in source.algorithms if a in HMAC_ALGORITHMS)
        self.key_set = key_set([VerificationKey(None, algs, secret.encode())])
        self.generation = 1


class JwksFileKeys:
    """A local JWKS file, re-read when it changes (checked by the service's poller)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.generation = 0
        self.key_set = KeySet()
        self._signature = file_signature(path)
        try:
            self._load()
        except (OSError, KeySetError) as exc:
            raise ValueError(f"cannot load JWKS file {path}: {exc}") from None

    def _load(self) -> None:
        keys = parse_jwks(self.path.read_bytes())
        for reason in keys.skipped:
            log.warning("JWKS key skipped", extra={"file": str(self.path), "reason": reason})
        if not keys.usable:
            raise KeySetError(keys.why_unusable())
        self.key_set = keys
        self.generation += 1

    def poll(self) -> None:
        signature = file_signature(self.path)
        if signature == self._signature:
            return
        self._signature = signature
        try:
            self._load()
            log.info("JWKS file reloaded", extra={"file": str(self.path)})
        except (OSError, KeySetError) as exc:
            log.error("JWKS file unusable, keeping last keys", extra={"error": str(exc)})


class RemoteJwks:
    """Keys from a JWKS URL (or one found by OIDC discovery), cached and refreshed."""

    def __init__(
        self,
        name: str,
        source: JwtSource,
        client: httpx.AsyncClient,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.source = source
        self.client = client
        self.clock = clock
        self.key_set = KeySet()
        self.generation = 0
        self.fetches = 0
        self.expires_at = 0.0
        self._jwks_uri = source.jwks_uri
        self._document_digest = b""
        self._last_forced = -float("inf")
        self._inflight: asyncio.Task[bool] | None = None
        self.on_change: Callable[[], None] | None = None  # a new key set was installed
        if source.jwks_uri is not None:
            check_url(source.jwks_uri, source.allow_insecure_http)
        else:
            check_url(source.issuer, source.allow_insecure_http)

    async def _get(self, url: str) -> httpx.Response:
        limits = self.source.refresh
        # httpx's timeout bounds each read, not the whole response: an IdP that
        # trickles a byte per second would hold every waiting Check. The caller's
        # deadline (refresh) covers connect, headers and body of every request.
        return await self._get_within(url, limits.timeout_seconds, limits.max_bytes)

    async def _get_within(self, url: str, read_timeout: float, max_bytes: int) -> httpx.Response:
        import httpx  # noqa: PLC0415 - see the module's imports

        try:
            async with self.client.stream(
                "GET", url, timeout=read_timeout, headers={"accept": "application/json"}
            ) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > max_bytes:
                        raise KeyFetchError(
                            f"{url}: response larger than {max_bytes} bytes", "too_large"
                        )
                if response.status_code != 200:
                    raise KeyFetchError(f"{url}: HTTP {response.status_code}")
                return httpx.Response(
                    response.status_code, headers=response.headers, content=bytes(body)
                )
        except httpx.TimeoutException as exc:
            raise KeyFetchError(f"{url}: {type(exc).__name__}: {exc}", "timeout") from None
        except httpx.HTTPError as exc:
            raise KeyFetchError(f"{url}: {type(exc).__name__}: {exc}") from None

    async def _discover(self) -> str:
        issuer = self.source.issuer.rstrip("/")
        response = await self._get(f"{issuer}/.well-known/openid-configuration")
        try:
            document = response.json()
        except ValueError:
            raise KeyFetchError("discovery document is not JSON", "invalid_document") from None
        if not isinstance(document, dict):
            raise KeyFetchError("discovery document is not an object", "invalid_document")
        # OIDC Discovery §4.3: the document's issuer must be the one we asked for.
        if document.get("issuer") != self.source.issuer:
            raise KeyFetchError("discovery document names another issuer", "invalid_document")
        uri = document.get("jwks_uri")
        if not isinstance(uri, str):
            raise KeyFetchError("discovery document has no jwks_uri", "invalid_document")
        try:
            check_url(uri, self.source.allow_insecure_http)
        except ValueError as exc:
            raise KeyFetchError(str(exc), "invalid_document") from None
        return uri

    async def refresh(self) -> bool:
        """Fetch now; True if a key set was installed. Failures keep the last keys."""
        self.fetches += 1
        deadline = self.source.refresh.timeout_seconds
        try:
            try:
                async with asyncio.timeout(deadline):
                    uri = self._jwks_uri or await self._discover()
                    response = await self._get(uri)
            except TimeoutError:
                where = self._jwks_uri or self.source.issuer
                raise KeyFetchError(
                    f"{where}: no complete answer within {deadline}s", "timeout"
                ) from None
            try:
                keys = parse_jwks(response.content)
            except KeySetError as exc:
                raise KeyFetchError(str(exc), "invalid_document") from None
            if not keys.usable:
                # Installing it would refuse every token until the IdP recovers.
                raise KeyFetchError(keys.why_unusable(), "no_usable_keys")
        except KeyFetchError as exc:
            self._jwks_uri = self.source.jwks_uri  # rediscover next time
            JWKS_FETCHES.labels(self.name, exc.result).inc()
            log.error(
                "JWKS refresh failed, keeping last keys",
                extra={"source": self.name, "error": str(exc), "result": exc.result,
                       "keys": len(self.key_set.keys)},
            )
            return False
        JWKS_FETCHES.labels(self.name, "ok").inc()
        self._jwks_uri = uri
        digest = hashlib.sha256(response.content).digest()
        if digest != self._document_digest:
            # Only a changed key set drops the verified-token cache (it is tied to
            # the generation); an unchanged refresh just extends the expiry.
            for reason in keys.skipped:
                log.warning("JWKS key skipped", extra={"source": self.name, "reason": reason})
            self.key_set = keys
            self.generation += 1
            self._document_digest = digest
            if self.on_change is not None:
                self.on_change()
        ttl = cache_ttl(response.headers.get("cache-control"), self.source)
        self.expires_at = self.clock() + ttl
        log.info("JWKS refreshed", extra={"source": self.name, "keys": len(keys.keys)})
        return True

    def _shared_refresh(self) -> asyncio.Future[bool]:
        """One fetch at a time; every caller waiting meanwhile shares its result."""
        if self._inflight is None:
            self._last_forced = self.clock()
            task = asyncio.create_task(self.refresh())
            task.add_done_callback(lambda _: setattr(self, "_inflight", None))
            self._inflight = task
        return asyncio.shield(self._inflight)

    async def refresh_for_unknown_kid(self) -> bool:
        """At most one refetch per cooldown (any fetch starts the cooldown).

        The caller waits at most unknown_kid_wait_seconds: a slow IdP then costs
        one 401, not an Envoy timeout, while the shared fetch carries on.
        """
        if self._inflight is None:
            cooldown = self.source.refresh.unknown_kid_cooldown_seconds
            if self.clock() - self._last_forced < cooldown:
                return False
        try:
            return await asyncio.wait_for(
                self._shared_refresh(), self.source.refresh.unknown_kid_wait_seconds
            )
        except TimeoutError:
            return False

    async def run(self) -> None:
        """Background refresh: first fetch at once, then on expiry; retry on failure."""
        retry = self.source.refresh.retry_seconds
        while True:
            ok = await self._shared_refresh()
            if ok:
                delay = max(self.expires_at - self.clock(), 1.0)
                retry = self.source.refresh.retry_seconds
            else:
                delay = retry
                # Back off, but never poll a failing IdP less often than a healthy one:
                # capped at max_ttl, a long outage left keys unrefreshed for hours
                # after the IdP came back.
                bounds = self.source.refresh
                retry = min(retry * 2, max(bounds.default_ttl_seconds, bounds.retry_seconds))
            await asyncio.sleep(delay)
