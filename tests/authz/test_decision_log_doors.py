"""The decision log of a real authz-service process, asked through both doors: one
record per decision whatever the door, the request id and trace id Envoy sent, no
credential anywhere, drops counted when the log cannot keep up (and answers go on),
and the same records exported as OpenTelemetry logs."""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kits import jwt_kit
from tests.kits.authz_stack import API_KEY, Stack
from tests.kits.door_kit import Ask, HttpDoorClient, ask_http, door_socket, http_request_bytes
from tests.kits.grpc_kit import authz_process, check_request
from tests.kits.otlp_kit import Receiver
from tests.kits.processes import free_port, wait_for

pytestmark = pytest.mark.integration

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def by_request_id(path: Path, count: int) -> dict[str, dict[str, Any]]:
    wait_for(lambda: len(records(path)) >= count, timeout=10, what=f"{count} decision records")
    found = records(path)
    ids = [r.get("request_id") for r in found]
    assert len(ids) == len(set(ids)), f"a decision recorded twice: {ids}"
    return {str(r["request_id"]): r for r in found}


@pytest.fixture
def logged(stack: Stack, tmp_path: Path) -> Iterator[tuple[Path, Any, HttpDoorClient]]:
    log = tmp_path / "decisions.jsonl"
    env = {"AUTHZ_DECISION_LOG": str(log), "AUTHZ_DECISION_LOG_CLAIMS": "email"}
    with authz_process(stack.config, tmp_path, env=env) as (_, client):
        wait_for(lambda: Path(door_socket(tmp_path)[5:]).exists(), what="the HTTP door")
        http = HttpDoorClient(door_socket(tmp_path))
        try:
            yield log, client, http
        finally:
            http.close()


def test_each_door_records_each_decision_once_with_envoys_request_and_trace_ids(
    stack: Stack, logged: tuple[Path, Any, HttpDoorClient], tmp_path: Path
) -> None:
    log, client, http = logged
    token = jwt_kit.mint(stack.key, sub="alice", email="alice@x.test")
    bearer = {"authorization": f"Bearer {token}"}
    # gRPC: Envoy's trace context comes in the call's metadata.
    for rid, headers in (("grpc-allow", bearer), ("grpc-deny", {})):
        request = check_request(headers={**headers, "x-request-id": rid})
        client.stub.Check(request, metadata=[("traceparent", TRACEPARENT)], timeout=10)
    # HTTP: among the check request's headers (Envoy's http_service injects it).
    ask_http(http, Ask(headers={**bearer, "traceparent": TRACEPARENT}, request_id="http-allow"))
    denied = ask_http(http, Ask(headers={"traceparent": TRACEPARENT}, request_id="http-deny"))
    ask_http(http, Ask(headers={"x-api-key": API_KEY}, request_id="http-key",
                       source_address="198.51.100.7"))
    assert denied.body is not None and denied.body["request_id"] == "http-deny"

    found = by_request_id(log, 5)
    assert set(found) == {"grpc-allow", "grpc-deny", "http-allow", "http-deny", "http-key"}
    for rid in ("grpc-allow", "http-allow"):
        assert found[rid]["decision"] == "allow" and found[rid]["subject"] == "alice"
        assert found[rid]["issuer"] == jwt_kit.ISSUER
        assert found[rid]["claims"] == {"email": "alice@x.test"}
        assert found[rid]["trace_id"] == TRACE
    for rid in ("grpc-deny", "http-deny"):
        assert (found[rid]["decision"], found[rid]["code"], found[rid]["status"]) == (
            "deny", "missing_credentials", 401)
        assert found[rid]["trace_id"] == TRACE
    key = found["http-key"]
    assert (key["identity_kind"], key["api_key_id"], key["client_address"]) == (
        "api_key", "billing", "198.51.100.7")
    assert all(r["route"] == "orders-read" and r["path"] == "/orders/1" for r in found.values())

    everything = log.read_text() + (tmp_path / "authz.log").read_text()
    for secret in (token, API_KEY, token.split(".")[2]):
        assert secret not in everything


def test_a_log_that_cannot_keep_up_drops_counted_records_and_never_delays_an_answer(
    stack: Stack, tmp_path: Path
) -> None:
    fifo = tmp_path / "stalled"
    os.mkfifo(fifo)
    # A reader that never reads: once the pipe's buffer is full, every write blocks.
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    port = free_port()
    env = {"AUTHZ_DECISION_LOG": str(fifo), "AUTHZ_DECISION_LOG_QUEUE": "8",
           "AUTHZ_METRICS_ADDRESS": f"127.0.0.1:{port}"}
    try:
        with authz_process(stack.config, tmp_path, env=env) as _:
            wait_for(lambda: Path(door_socket(tmp_path)[5:]).exists(), what="the HTTP door")
            http = HttpDoorClient(door_socket(tmp_path))
            try:
                asks = 2000  # ~200 bytes a record: several times the pipe's 64 KiB
                for n in range(asks):
                    http.send(http_request_bytes(Ask(request_id=f"r{n}")))
                answers = http.receive(asks)
            finally:
                http.close()
            assert [a.status for a in answers] == [401] * asks
            scrape = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
            metrics = scrape.read().decode()
            dropped = next(float(line.split()[-1]) for line in metrics.splitlines()
                           if line.startswith("tollgate_authz_decision_log_dropped_total "))
            # At most a pipe's worth (records of 150 bytes or more), a batch being written
            # and the queue got through; every other record was dropped and counted.
            assert dropped >= asks - 64 * 1024 // 150 - 32 - 8
            os.close(reader)  # the writer's blocked write now fails: the stop is quick
            reader = -1
    finally:
        if reader >= 0:
            os.close(reader)


def test_records_are_exported_as_opentelemetry_logs_in_envoys_trace(
    stack: Stack, otlp_receiver: tuple[str, Receiver], tmp_path: Path
) -> None:
    endpoint, receiver = otlp_receiver
    env = {"AUTHZ_DECISION_LOG_OTLP_ENDPOINT": endpoint, "OTEL_BLRP_SCHEDULE_DELAY": "50"}
    with authz_process(stack.config, tmp_path, env=env) as (_, client):
        request = check_request(headers={"x-request-id": "otel-1"})
        client.stub.Check(request, metadata=[("traceparent", TRACEPARENT)], timeout=10)
        wait_for(lambda: bool(receiver.logs), timeout=15, what="a log at the OTLP receiver")
    exported = receiver.logs[0]
    assert exported.body.string_value == "authz decision"
    assert exported.trace_id.hex() == TRACE
    attributes = {a.key: a.value for a in exported.attributes}
    assert attributes["request_id"].string_value == "otel-1"
    assert attributes["code"].string_value == "missing_credentials"
    assert attributes["status"].int_value == 401
    assert attributes["route"].string_value == "orders-read"
