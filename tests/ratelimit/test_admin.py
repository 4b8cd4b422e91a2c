"""The admin API (read and reset a descriptor's counters) and `tollgate limits`.

Real processes: ratelimit-service on memory and on Redis, the tollgate command in
this process; the API refuses a non-loopback peer unless told otherwise.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from ratelimit_service.admin import AdminServer
from tests.kits.processes import free_port
from tests.kits.ratelimit_kit import OK, OVER, descriptor, make_limiter, request, rules_from
from tests.kits.ratelimit_proc import ServiceProcess
from tests.kits.redis_procs import RedisProcess
from tollgate_cli.cli import main as tollgate

pytestmark = pytest.mark.integration

CONFIG = """
domain: adm
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 5}
  - key: api_key
    rate_limits:
      - {unit: second, requests_per_unit: 100, name: burst}
      - {unit: day, requests_per_unit: 3, name: daily}
  - key: free
    rate_limit: {unlimited: true}
"""


def outward_address() -> str:
    """This machine's non-loopback IPv4 address (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))
        address: str = s.getsockname()[0]
    if address.startswith("127.") or address == "0.0.0.0":  # noqa: S104
        pytest.fail("this test needs a non-loopback IPv4 address on the machine")
    return address


def post(host: str, port: int, path: str, body: Any, method: str = "POST") -> tuple[int, Any]:
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request(method, path, json.dumps(body), {"content-type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "adm.yaml"
    path.write_text(CONFIG)
    return path


def service(config: Path, port: int, *args: str) -> ServiceProcess:
    return ServiceProcess(["--config", str(config), "--admin-address", f"127.0.0.1:{port}",
                           *args])


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_show_and_reset_through_the_tollgate_command(
    config: Path, tmp_path: Path, store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    redis = None
    extra: list[str] = []
    if store == "redis":
        redis = RedisProcess(tmp_path)
        redis.start()
        extra = ["--redis-url", redis.url, "--local-cache-size-bytes", "1048576"]
    port = free_port()
    proc = service(config, port, *extra)
    address = ["--admin-address", f"127.0.0.1:{port}", "--domain", "adm"]
    try:
        if redis is not None:
            proc.wait_log(lambda e: e.get("msg") == "counter store ready")
        user = request("adm", descriptor(("user", "ann")))
        assert [proc.call(user).overall_code for _ in range(3)] == [OK] * 3
        assert tollgate(["limits", "show", *address, "user=ann"]) == 0
        assert capsys.readouterr().out.splitlines() == [
            "adm [user=ann]", "  5 per hour (fixed_window): 3 used, 2 left, full again in "
            f"{json_of(port, 'user', 'ann')['windows'][0]['reset_seconds']} s",
        ]
        # Exhausted (and, on Redis, remembered in the local over-limit cache) ...
        assert [proc.call(user).overall_code for _ in range(3)] == [OK, OK, OVER]
        assert tollgate(["limits", "reset", *address, "user=ann"]) == 0
        assert capsys.readouterr().out.strip() == "adm [user=ann]: 1 counter(s) deleted"
        # ... and after the reset counted from zero again.
        assert proc.call(user).overall_code == OK
        assert json_of(port, "user", "ann")["windows"][0]["used"] == 1
        # Stacked windows are shown and reset together.
        key = request("adm", descriptor(("api_key", "k1")))
        assert [proc.call(key).overall_code for _ in range(4)] == [OK, OK, OK, OVER]
        assert tollgate(["limits", "show", *address, "api_key=k1"]) == 0
        out = capsys.readouterr().out
        assert "burst: 100 per second (fixed_window): " in out  # (a real clock: 0-3 used)
        # The rejected 4th hit is counted in the window it went over, not in the other.
        assert "daily: 3 per day (fixed_window): 4 used, 0 left" in out
        assert tollgate(["limits", "reset", *address, "api_key=k1"]) == 0
        assert proc.call(key).overall_code == OK
        assert tollgate(["limits", "show", *address, "free=x"]) == 0
        assert capsys.readouterr().out.splitlines()[-1] == "  unlimited"
    finally:
        proc.stop()
        if redis is not None:
            redis.stop()


def json_of(port: int, key: str, value: str) -> Any:
    status, body = post("127.0.0.1", port, "/v1/usage",
                        {"domain": "adm", "entries": [[key, value]]})
    assert status == 200, body
    return body


def test_a_non_loopback_peer_is_refused_unless_allowed(config: Path) -> None:
    outward = outward_address()
    for allow in (False, True):
        port = free_port()
        args = ["--config", str(config), "--admin-address", f"0.0.0.0:{port}"]
        proc = ServiceProcess([*args, *(["--admin-allow-remote"] if allow else [])])
        try:
            body = {"domain": "adm", "entries": [["user", "x"]]}
            status, answer = post(outward, port, "/v1/reset", body)
            if allow:
                assert status == 200
            else:
                assert status == 403
                assert answer["error"] == (
                    f"admin API refused: peer {outward} is not loopback "
                    "(ratelimit-service --admin-allow-remote to allow it)")
            assert post("127.0.0.1", port, "/v1/reset", body)[0] == 200
        finally:
            proc.stop()


def test_a_bare_port_binds_loopback_only(config: Path) -> None:
    port = free_port()
    proc = ServiceProcess(["--config", str(config), "--admin-address", str(port)])
    try:
        served = proc.wait_log(lambda e: e.get("msg") == "admin API served")
        assert served["address"] == f"127.0.0.1:{port}"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((outward_address(), port), timeout=5).close()
    finally:
        proc.stop()


def test_malformed_admin_requests_get_a_reason() -> None:
    limiter = make_limiter(rules_from(CONFIG))

    async def main() -> None:
        admin = AdminServer("127.0.0.1:0", limiter)
        host, port = (await admin.start()).rsplit(":", 1)
        loop = asyncio.get_running_loop()

        def ask(path: str, body: Any, method: str = "POST") -> tuple[int, Any]:
            return post(host, int(port), path, body, method)

        cases = [
            (("/v1/usage", [1]), 400,
             'body must be {"domain": ..., "entries": [[key, value], ...]}'),
            (("/v1/usage", {"domain": "", "entries": [["a", "b"]]}), 400,
             "domain must be a non-empty string"),
            (("/v1/usage", {"domain": "adm", "entries": [["a"]]}), 400,
             "entries must be a non-empty list of [key, value] strings"),
            (("/v2/usage", {}), 404, "no such endpoint /v2/usage (known: /v1/usage, /v1/reset)"),
            (("/v1/usage", {}, "GET"), 405, "/v1/usage takes POST"),
        ]
        for args, status, error in cases:
            got = await loop.run_in_executor(None, ask, *args)
            assert got == (status, {"error": error})
        unknown = await loop.run_in_executor(
            None, ask, "/v1/usage", {"domain": "nope", "entries": [["user", "x"]]})
        assert unknown == (200, {"domain": "nope", "entries": [["user", "x"]],
                                 "limited": False, "unlimited": False, "windows": []})
        await admin.stop()

    asyncio.run(main())
