"""The HTTP exchange with an RFC 7662 introspection endpoint, for one identity source.

One exchange per distinct token at a time: every Check presenting the same uncached
token waits on the same call (single-flight), each for at most `wait_seconds`, while
the exchange itself is bounded by `timeout_seconds` (connect, request and the whole
answer, however slowly it trickles) and `max_response_bytes`. At most
`max_concurrent` distinct tokens are in flight; past that a new one is not asked
about (its Check is refused 503). Only the configured endpoint is called: nothing in
a request can point the service at another URL. Neither the token nor the client's
credentials are ever logged.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from authz_service.identity.introspection import (
    IntrospectionSource,
    IntrospectorFactory,
    InvalidAnswer,
)
from authz_service.keys.jwks import check_url
from authz_service.lookups.client_auth import authenticator
from authz_service.metrics import INTROSPECTIONS

if TYPE_CHECKING:
    import httpx  # imported when a client is built (~4 MB of RSS)

log = logging.getLogger("authz.introspection")


class IntrospectionFailed(Exception):
    """No usable answer; `result` is the metric label (http_error, timeout, too_large)."""

    def __init__(self, message: str, result: str) -> None:
        super().__init__(message)
        self.result = result


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):  # two "active" members: which one did the server mean?
        raise InvalidAnswer("duplicate member in the answer")
    return document


def _no_constant(name: str) -> Any:
    raise InvalidAnswer(f"{name} is not JSON")


class HttpIntrospector:
    def __init__(
        self,
        name: str,
        config: IntrospectionSource,
        base_dir: Path,
        client: Callable[[], httpx.AsyncClient],
    ) -> None:
        check_url(config.endpoint, config.allow_insecure_http)  # ValueError: not allowed
        self.name = name
        self.config = config
        self.auth = authenticator(config.client, base_dir, config.endpoint)
        # Now, not on the first Check: importing httpx, building its client (TLS context)
        # and the transport's own imports take longer than a Check may wait.
        self._client = client()
        _import_transport()
        self._inflight: dict[bytes, asyncio.Future[None]] = {}

    async def settle(
        self, token: str, digest: bytes, record: Callable[[Mapping[str, Any]], bool]
    ) -> None:
        loop = asyncio.get_running_loop()
        exchange = self._inflight.get(digest)
        if exchange is None:
            if len(self._inflight) >= self.config.max_concurrent:
                INTROSPECTIONS.labels(self.name, "overloaded").inc()
                return
            exchange = loop.create_task(self._exchange(token, record))
            self._inflight[digest] = exchange
            exchange.add_done_callback(lambda done: self._forget(digest, done))
        if exchange.done():
            return
        # A bounded wait without asyncio.timeout (this may run outside any task, see
        # tollgate.eager) and without cancelling the shared exchange when it expires.
        waiter = loop.create_future()

        def wake(_: object = None) -> None:
            if not waiter.done():
                waiter.set_result(None)

        exchange.add_done_callback(wake)
        expiry = loop.call_later(self.config.wait_seconds, wake)
        try:
            await waiter
        finally:
            expiry.cancel()
            exchange.remove_done_callback(wake)
        if not exchange.done():
            INTROSPECTIONS.labels(self.name, "wait_expired").inc()

    def _forget(self, digest: bytes, done: asyncio.Future[None]) -> None:
        if self._inflight.get(digest) is done:
            del self._inflight[digest]

    async def _exchange(self, token: str, record: Callable[[Mapping[str, Any]], bool]) -> None:
        """One call to the endpoint; its answer recorded. Never raises."""
        timeout = self.config.timeout_seconds
        try:
            try:
                async with asyncio.timeout(timeout):
                    answer = await self._post(token)
            except TimeoutError:
                raise IntrospectionFailed(f"no complete answer within {timeout}s",
                                          "timeout") from None
            accepted = record(answer)
        except IntrospectionFailed as exc:
            self._failed(str(exc), exc.result)
            return
        except InvalidAnswer as exc:
            self._failed(f"not an introspection answer: {exc}", "invalid_response")
            return
        except Exception:
            log.exception("introspection failed", extra={"source": self.name})
            INTROSPECTIONS.labels(self.name, "error").inc()
            return
        INTROSPECTIONS.labels(self.name, "active" if accepted else "inactive").inc()

    def _failed(self, error: str, result: str) -> None:
        INTROSPECTIONS.labels(self.name, result).inc()
        log.warning("introspection failed", extra={
            "source": self.name, "endpoint": self.config.endpoint, "error": error,
            "result": result})

    async def _post(self, token: str) -> dict[str, Any]:
        import httpx  # noqa: PLC0415 - loaded with the first remote exchange (~4 MB of RSS)

        config = self.config
        form = {"token": token}
        if config.token_type_hint:
            form["token_type_hint"] = config.token_type_hint
        headers = {"accept": "application/json"}
        self.auth.apply(form, headers, time.time())
        limit = config.max_response_bytes
        try:
            async with self._client.stream(
                "POST", config.endpoint, data=form, headers=headers,
                timeout=config.timeout_seconds,
            ) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > limit:
                        raise IntrospectionFailed(f"answer larger than {limit} bytes",
                                                  "too_large")
                if response.status_code != 200:
                    raise IntrospectionFailed(f"HTTP {response.status_code}", "http_error")
        except httpx.TimeoutException as exc:
            raise IntrospectionFailed(type(exc).__name__, "timeout") from None
        except httpx.HTTPError as exc:
            raise IntrospectionFailed(type(exc).__name__, "http_error") from None
        try:
            document = json.loads(body, object_pairs_hook=_object, parse_constant=_no_constant)
        except (ValueError, RecursionError):
            raise InvalidAnswer("not JSON") from None
        if not isinstance(document, dict):
            raise InvalidAnswer("not a JSON object")
        return document


def _import_transport() -> None:
    """What httpx imports on its first request (httpcore, anyio and its asyncio backend,
    h11): 0.3-0.5 s on a loaded 2-core machine, longer than a Check's wait."""
    for module in ("h11", "httpcore", "anyio", "anyio._backends._asyncio"):
        importlib.import_module(module)


def factory(client: Callable[[], httpx.AsyncClient]) -> IntrospectorFactory:
    """Introspectors sharing one HTTP client (created with the first of them)."""

    def build(name: str, config: IntrospectionSource, base_dir: Path) -> HttpIntrospector:
        return HttpIntrospector(name, config, base_dir, client)

    return build
