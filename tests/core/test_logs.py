"""Both log formats carry the structured fields; no credential and no log flood."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest

from tests.kits.processes import binary, free_port, stop_process, wait_for
from tollgate.logs import REDACTED, JsonFormatter, MalformedMessageFilter, TextFormatter


def record(msg: str = "config reload rejected", **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("tollgate.reload", logging.ERROR, __file__, 1, msg, (), None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def text_tail(rec: logging.LogRecord) -> str:
    """The formatted text line without its timestamp."""
    return TextFormatter().format(rec).split(" ", 1)[1]


def test_text_format_keeps_every_structured_field() -> None:
    rec = record(error="a.yaml:3: bogus: unknown key 'bogus'", file="a.yaml", line=3,
                 enabled=True, missing=None)
    assert text_tail(rec) == (
        "ERROR tollgate.reload config reload rejected "
        "error=\"a.yaml:3: bogus: unknown key 'bogus'\" file=a.yaml line=3 enabled=true "
        "missing=null"
    )


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("plain", "plain"),
        ("two words", '"two words"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("line\nforged=1", '"line\\nforged=1"'),
        ("back\\slash", '"back\\\\slash"'),
        ("", '""'),
        ("a=b", '"a=b"'),
        ("é", '"\\u00e9"'),
    ],
)
def test_text_values_are_quoted_so_no_value_can_forge_a_field_or_a_line(
    value: str, written: str
) -> None:
    assert text_tail(record(msg="m", v=value)) == f"ERROR tollgate.reload m v={written}"


def test_a_message_cannot_break_the_line() -> None:
    line = TextFormatter().format(record(msg="first\nERROR forged line"))
    assert "\n" not in line
    assert line.endswith("first\\nERROR forged line")


@pytest.mark.parametrize(
    "name", ["password", "redis_password", "secret", "token", "authorization", "api_key",
             "apikey", "cookie", "credentials", "id_token"],
)
def test_credential_fields_are_never_written(name: str) -> None:
    secret = "s3cr3t-value-9f2c"
    rec = record(**{name: secret})
    for formatter in (TextFormatter(), JsonFormatter()):
        line = formatter.format(rec)
        assert secret not in line
        assert REDACTED in line


def test_a_url_password_is_masked_in_any_value_and_format() -> None:
    rec = record(msg="store redis://app:hunter2@redis:6379 down", store="rediss://:hunter2@r:6380/0")
    for formatter in (TextFormatter(), JsonFormatter()):
        line = formatter.format(rec)
        assert "hunter2" not in line
        assert f"redis://app:{REDACTED}@redis:6379" in line
        assert f"rediss://:{REDACTED}@r:6380/0" in line


def test_json_format_is_unchanged_for_ordinary_fields() -> None:
    entry = json.loads(JsonFormatter().format(record(error="x", line=3)))
    assert {k: entry[k] for k in ("level", "logger", "msg", "error", "line")} == {
        "level": "error", "logger": "tollgate.reload", "msg": "config reload rejected",
        "error": "x", "line": 3,
    }


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def grpc_decode_record() -> logging.LogRecord:
    try:
        raise ValueError("Error parsing message with type 'x.Y': Wire format was corrupt")
    except ValueError:
        exc_info = sys.exc_info()
    return logging.LogRecord(
        "grpc._cython.cygrpc", logging.ERROR, __file__, 1,
        "Unexpected [%s] raised by servicer method [%s]",
        ("DecodeError", "/envoy.service.auth.v3.Authorization/Check"), exc_info,
    )


def test_undecodable_messages_log_one_short_line_per_interval_and_count_all() -> None:
    counted: list[str] = []
    clock = Clock()
    flood = MalformedMessageFilter(interval=10.0, on_malformed=counted.append, clock=clock)
    kept = [r for r in (grpc_decode_record() for _ in range(1000)) if flood.filter(r)]
    assert len(counted) == 1000
    assert len(kept) == 1
    line = TextFormatter().format(kept[0])
    assert "Traceback" not in line
    assert len(line) < 300
    assert "malformed request message refused" in line
    assert "method=/envoy.service.auth.v3.Authorization/Check" in line
    clock.now += 10
    later = grpc_decode_record()
    assert flood.filter(later)
    assert later.__dict__["not_logged_since_last"] == 999


def test_other_grpc_and_service_records_pass_untouched() -> None:
    flood = MalformedMessageFilter(clock=Clock())
    other = record(msg="Unexpected [DecodeError] raised by servicer method [/x]")
    assert flood.filter(other)
    assert other.getMessage() == "Unexpected [DecodeError] raised by servicer method [/x]"


def metric_value(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith(name):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.integration
def test_a_client_sending_garbage_cannot_flood_the_log(tmp_path: Path) -> None:
    socket_path = tmp_path / "authz.sock"
    port = free_port()
    log_path = tmp_path / "authz.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [binary("authz-service"), "--grpc-address", f"unix:{socket_path}",
             "--log-format", "text", "--metrics-address", f"127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )
    channel = grpc.insecure_channel(f"unix:{socket_path}")
    try:
        wait_for(lambda: "serving" in log_path.read_text(), timeout=20, what="serving")
        check = channel.unary_unary(
            "/envoy.service.auth.v3.Authorization/Check",
            request_serializer=lambda b: b, response_deserializer=lambda b: b,
        )
        for _ in range(200):
            with pytest.raises(grpc.RpcError):
                check(b"\xff\xff\xff\xff", timeout=5)
        name = 'tollgate_grpc_malformed_messages_total{method="/envoy.service.auth.v3.'
        wait_for(lambda: metric_value(port, name) == 200, what="200 malformed counted")
    finally:
        channel.close()
        stop_process(proc)
    text = log_path.read_text()
    assert "Traceback" not in text
    assert text.count("malformed request message refused") == 1


@pytest.mark.integration
def test_text_format_says_why_a_config_is_invalid(tmp_path: Path) -> None:
    config = tmp_path / "authz.yaml"
    config.write_text("realm: t\nbogus: 1\n")
    result = subprocess.run(
        [binary("authz-service"), "--config", str(config), "--log-format", "text",
         "--grpc-address", f"unix:{tmp_path / 's.sock'}"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.split(" ", 1)[1] == (
        f"ERROR authz invalid config error=\"{config}:2: bogus: unknown key 'bogus'\""
    )


def test_stream_of_formatted_lines_is_one_record_per_line() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter())
    logger = logging.getLogger("tests.logs.lines")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.error("one\ntwo", extra={"v": "a\nb"})
    finally:
        logger.removeHandler(handler)
    assert len(stream.getvalue().splitlines()) == 1
