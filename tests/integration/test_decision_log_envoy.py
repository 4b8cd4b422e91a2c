"""The decision log through a real Envoy (the local stack, both layouts): a request's
x-request-id is the one in its denial body, in authz's decision record and in Envoy's
access log; an allow, a deny and a 429 each have their record; and no token, API key
or query secret the tests sent is anywhere in any log."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.kits.processes import wait_for
from tollgate_cli import token
from tollgate_cli.stack import Stack, request

pytestmark = pytest.mark.integration

SECRETS: list[str] = []  # every credential this module sends, for the last test


def json_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    found = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:  # a line Envoy is still writing
                continue
    return found


def decision(stack: Stack, request_id: str) -> dict[str, Any]:
    def find() -> list[dict[str, Any]]:
        return [r for r in json_lines(stack.decision_log) if r.get("request_id") == request_id]

    wait_for(lambda: bool(find()), timeout=10, what=f"the decision record of {request_id}")
    (record,) = find()  # one record per decision, however it was asked
    return record


def access_log(stack: Stack, **match: str) -> list[dict[str, Any]]:
    def find() -> list[dict[str, Any]]:
        return [r for r in json_lines(stack.run_dir / "logs" / "envoy.log")
                if all(str(r.get(k)) == v for k, v in match.items())]

    wait_for(lambda: bool(find()), timeout=10, what=f"Envoy's access log line with {match}")
    return find()


def mint(stack: Stack, **claims: Any) -> str:
    minted = token.mint(stack.run_dir, **claims)
    SECRETS.append(minted)
    return minted


def test_a_denials_request_id_is_in_its_body_its_record_and_envoys_access_log(
    stack: Stack,
) -> None:
    answer = request(stack.options.https_port, "GET", "/orders/42", ca=stack.ca)
    assert answer.status == 401
    request_id = str(answer.json()["request_id"])
    uuid.UUID(request_id)  # Envoy's x-request-id, not a stream number
    record = decision(stack, request_id)
    assert (record["decision"], record["code"], record["status"]) == (
        "deny", "missing_credentials", 401)
    assert (record["route"], record["method"], record["path"]) == ("orders-read", "GET",
                                                                    "/orders/42")
    assert record["client_address"] == "127.0.0.1"
    (line,) = access_log(stack, request_id=request_id)
    assert line["status"] == 401 and line["path"] == "/orders/42"


def test_an_allow_is_recorded_under_the_id_the_upstream_saw(stack: Stack) -> None:
    bearer = mint(stack, sub="alice", scope="orders:read")
    answer = request(stack.options.https_port, "GET", "/orders/42", ca=stack.ca,
                     headers={"authorization": f"Bearer {bearer}"})
    assert answer.status == 200
    upstream_saw = answer.json()["headers"]
    assert isinstance(upstream_saw, dict)
    request_id = str(upstream_saw["x-request-id"])
    record = decision(stack, request_id)
    assert (record["decision"], record["code"], record["identity_kind"], record["subject"]) == (
        "allow", "ok", "jwt", "alice")
    assert str(record["issuer"]).startswith("http://127.0.0.1:")
    (line,) = access_log(stack, request_id=request_id)
    assert line["status"] == 200 and line["subject"] == "alice"


def test_a_request_over_its_limit_has_its_record(stack: Stack) -> None:
    subject = f"burst-{uuid.uuid4().hex[:8]}"
    bearer = mint(stack, sub=subject, scope="orders:read")
    statuses = [request(stack.options.https_port, "GET", "/orders", ca=stack.ca,
                        headers={"authorization": f"Bearer {bearer}"}).status
                for _ in range(6)]
    assert statuses == [200] * 5 + [429]  # the free plan: 5 a minute
    (over,) = access_log(stack, subject=subject, status="429") if stack.options.layout == \
        "grpc" else access_log(stack, status="429", path="/orders")[-1:]
    record = decision(stack, str(over["request_id"]))
    if stack.options.layout == "http":  # authz counted the limit in the Check: its 429
        assert (record["decision"], record["code"], record["status"]) == (
            "deny", "rate_limited", 429)
        assert record["subject"] == subject
        assert {"set": "per-plan", "outcome": "over_limit"} in record["rate_limits"]
    else:  # authz allowed; Envoy's ratelimit filter and ratelimit-service said 429
        assert (record["decision"], record["subject"]) == ("allow", subject)


def test_no_credential_or_query_secret_is_in_any_log(stack: Stack) -> None:
    bearer = mint(stack, sub="carol", scope="orders:read")
    query_secret = f"qs-{uuid.uuid4().hex}"
    SECRETS.append(query_secret)
    answer = request(stack.options.https_port, "GET", f"/orders/7?access_token={query_secret}",
                     ca=stack.ca, headers={"authorization": f"Bearer {bearer}",
                                           "cookie": f"session={query_secret}"})
    assert answer.status == 200
    request_id = str(answer.json()["headers"]["x-request-id"])  # type: ignore[index]
    assert decision(stack, request_id)["path"] == "/orders/7"
    (line,) = access_log(stack, request_id=request_id)
    assert line["path"] == "/orders/7"
    logs = sorted((stack.run_dir / "logs").iterdir())
    assert stack.decision_log in logs and stack.run_dir / "logs" / "envoy.log" in logs
    text = "".join(p.read_text(errors="replace") for p in logs)
    assert len(SECRETS) >= 4
    for secret in SECRETS:
        assert secret not in text
        assert secret.split(".")[-1] not in text  # nor a token's signature alone
