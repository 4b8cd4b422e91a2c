"""The plain-HTTP door as Envoy (or anything else on the socket) meets it: keep-alive,
pipelining, HEAD, bounded requests, health, and a drain that never cuts an answer."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kits import jwt_kit
from tests.kits.authz_stack import Stack
from tests.kits.door_kit import Ask, HttpDoorClient, ask_http, door_socket, http_request_bytes
from tests.kits.processes import binary, stop_process, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def http(stack: Stack) -> Iterator[HttpDoorClient]:
    client = HttpDoorClient(door_socket(stack.workdir))
    yield client
    client.close()


def token(stack: Stack, **claims: object) -> dict[str, str]:
    return {"authorization": "Bearer " + jwt_kit.mint(stack.key, **claims)}


def test_many_checks_on_one_keep_alive_connection(stack: Stack, http: HttpDoorClient) -> None:
    headers = token(stack, sub="keepalive")
    for _ in range(50):
        assert ask_http(http, Ask(headers=headers)).status == 200
    assert not http.peer_closed()


def test_pipelined_checks_are_answered_in_order(stack: Stack, http: HttpDoorClient) -> None:
    asks = [Ask(headers=token(stack, sub="p1")), Ask(), Ask("POST", "/orders",
            token(stack, sub="p2")), Ask(headers={"authorization": "Bearer "})]
    http.send(b"".join(http_request_bytes(a) for a in asks))
    assert [r.status for r in http.receive(4)] == [200, 401, 403, 400]


def test_a_head_check_is_answered_without_a_body(stack: Stack, http: HttpDoorClient) -> None:
    # The next response on the connection starts right after HEAD's headers.
    http.send(http_request_bytes(Ask("HEAD", "/orders/1")) + http_request_bytes(Ask()))
    raw = http.sock.recv(65536)
    while raw.count(b"HTTP/1.1 ") < 2 or not raw.endswith(b"}"):
        raw += http.sock.recv(65536)
    first, second = raw.split(b"HTTP/1.1 ", 2)[1:]
    assert first.startswith(b"403 ") and b"content-length: " in first  # a denial, with its
    assert first.endswith(b"\r\n\r\n")  # length, but headers only
    assert second.startswith(b"401 ") and b'"error":"missing_credentials"' in second


def test_not_a_check_path_is_404_and_health_answers(stack: Stack, http: HttpDoorClient) -> None:
    assert http.exchange(b"GET /orders/1 HTTP/1.1\r\nhost: x\r\n\r\n").status == 404
    assert http.exchange(b"GET /checkmate HTTP/1.1\r\nhost: x\r\n\r\n").status == 404
    assert http.exchange(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").status == 200
    assert http.exchange(b"GET /ready HTTP/1.1\r\nhost: x\r\n\r\n").status == 200


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET /check/a HTTP/1.1\r\nhost: x\r\n" + b"".join(
        b"x-h%d: v\r\n" % i for i in range(101)) + b"\r\n", 431),
    (b"GET /check/a HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
    (b"GET /check/" + b"a" * 70_000 + b" HTTP/1.1\r\nhost: x\r\n\r\n", 414),
    (b"POST /check/a HTTP/1.1\r\nhost: x\r\ncontent-length: 2000000\r\n\r\n" + b"x" * 1_100_000,
     413),
    (b"GET /check/a HTTP/1.1\r\nhost x\r\n\r\n", 400),
    (b"GET /check/a HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
     400),
], ids=["101 headers", "huge header", "huge target", "huge body", "malformed", "upgrade"])
def test_an_unbounded_or_broken_request_is_refused_and_the_connection_closed(
    stack: Stack, request_bytes: bytes, status: int
) -> None:
    client = HttpDoorClient(door_socket(stack.workdir))
    try:
        # The door may close while a huge request is still being sent.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            client.send(request_bytes)
        responses = client.receive(1)
        assert [r.status for r in responses] == [status]
        assert responses[0].header("connection") == "close"
        wait_for(client.peer_closed, 10, "the door to close the connection")
    finally:
        client.close()


def test_connection_close_is_honoured(stack: Stack, http: HttpDoorClient) -> None:
    request = http_request_bytes(Ask()).replace(b"host: api.test\r\n",
                                                b"host: api.test\r\nconnection: close\r\n")
    assert http.exchange(request).status == 401
    wait_for(http.peer_closed, 10, "the door to close after connection: close")


def test_attribute_headers_sent_twice_are_trusted_for_neither(
    stack: Stack, http: HttpDoorClient
) -> None:
    twice = http_request_bytes(Ask(path="/admin/x", principal=(
        "spiffe://tollgate.test/ns/prod/sa/admin"))).replace(
        b"\r\n\r\n", b"\r\nx-tollgate-attr-peer-principal: spiffe://tollgate.test/ns/x\r\n\r\n", 1)
    response = http.exchange(twice)
    assert response.status == 401  # no peer identity at all, not the admin's


def test_an_unknown_attribute_header_is_not_a_client_header(
    stack: Stack, http: HttpDoorClient
) -> None:
    # x-tollgate-attr-* never reach the policy as request headers (the API key header
    # of a source cannot be smuggled under that prefix either).
    sneaky = http_request_bytes(Ask()).replace(
        b"\r\n\r\n", b"\r\nx-tollgate-attr-x-api-key: whatever\r\n\r\n", 1)
    assert http.exchange(sneaky).status == 401


# --- drain ---------------------------------------------------------------------------


def test_sigterm_under_load_answers_every_check_and_readiness_turns_503(
    tmp_path: Path, stack: Stack
) -> None:
    socket_path = tmp_path / "door.sock"
    log = (tmp_path / "authz.log").open("wb")
    proc = subprocess.Popen(
        [binary("authz-service"), "--config", str(stack.config), "--grpc-address", "off",
         "--http-address", f"unix:{socket_path}", "--drain-announce-seconds", "0.5",
         "--drain-seconds", "5"], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(socket_path.exists, 20, "the HTTP door's socket")
        headers = token(stack, sub="drain")
        answered: list[int] = []
        errors: list[BaseException] = []
        stop = threading.Event()
        draining = threading.Event()  # a load thread was told `connection: close`

        def check_once(client: HttpDoorClient) -> tuple[int | None, bool]:
            """(status, the door closes after it); no status when the connection closed
            before answering (retried)."""
            try:
                client.send(http_request_bytes(Ask(headers=headers)))
                replies = client.receive(1)
            except (ConnectionResetError, BrokenPipeError):
                return None, True
            if not replies:
                return None, True
            return replies[0].status, replies[0].header("connection") == "close"

        def load() -> None:
            # As Envoy with the shipped retry_policy (retry_on: reset, one retry): a check
            # that meets a connection the drain closed goes once more, on a new one.
            client: HttpDoorClient | None = None
            try:
                while not stop.is_set():
                    status = None
                    for _attempt in range(2):
                        if client is None:  # keep-alive: a new one only after a close
                            client = HttpDoorClient(f"unix:{socket_path}")
                        status, closing = check_once(client)
                        if closing:
                            if status is not None:
                                draining.set()
                            client.close()
                            client = None
                        if status is not None:
                            break
                    if status is None:
                        errors.append(AssertionError("a check went unanswered twice"))
                        return
                    answered.append(status)
            except (ConnectionRefusedError, FileNotFoundError):
                return  # the listener is gone: the drain has ended
            except BaseException as exc:  # reported by the assertion below
                errors.append(exc)
            finally:
                if client is not None:
                    client.close()

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        wait_for(lambda: len(answered) > 50, 20, "checks flowing")
        os.kill(proc.pid, signal.SIGTERM)
        probe = HttpDoorClient(f"unix:{socket_path}")
        wait_for(lambda: probe.exchange(b"GET /ready HTTP/1.1\r\nhost: x\r\n\r\n").status == 503,
                 5, "readiness 503 during the announce window")
        probe.close()
        # The load goes on into the drain proper: answers now close their connections.
        wait_for(draining.is_set, 10, "an answer with connection: close")
        during = len(answered)
        wait_for(lambda: len(answered) > during + 20, 10, "checks answered during the drain")
        stop.set()  # Envoy has drained; the door stops once connections are quiet
        assert proc.wait(20) == 0
        for thread in threads:
            thread.join(10)
        assert not errors, errors  # no reset, no half answer
        assert set(answered) == {200}
    finally:
        stop_process(proc)
        log.close()
