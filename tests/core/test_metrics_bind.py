"""`--metrics-address :PORT` binds loopback; every other interface must be named."""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.kits.processes import binary, free_port, stop_process, wait_for
from tollgate.metrics import metrics_bind


@pytest.mark.parametrize(
    ("address", "bind"),
    [
        (":9464", ("127.0.0.1", 9464)),
        (" :9464 ", ("127.0.0.1", 9464)),
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("0.0.0.0:9464", ("0.0.0.0", 9464)),  # noqa: S104 - named, so allowed
        ("[::]:9464", ("::", 9464)),
        ("[::1]:9464", ("::1", 9464)),
        ("localhost:9464", ("localhost", 9464)),
    ],
)
def test_metrics_address_binds_loopback_unless_a_host_is_named(
    address: str, bind: tuple[str, int]
) -> None:
    assert metrics_bind(address) == bind


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("9464", "metrics address '9464' is not HOST:PORT"),
        ("host:", "metrics address 'host:' is not HOST:PORT"),
        (":0", "metrics address ':0' is not HOST:PORT"),
        (":99999", "metrics address ':99999' is not HOST:PORT"),
        ("[nope]:1", "metrics address '[nope]:1' is not HOST:PORT"),
        ("::1:9464", "metrics address '::1:9464': write IPv6 hosts as [ADDR]:PORT"),
    ],
)
def test_unusable_metrics_address_is_a_clear_error(address: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        metrics_bind(address)
    assert str(err.value) == message


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as the kernel writes them) of sockets listening on port."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def scrape(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


@contextmanager
def running(command: list[str], workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    with (workdir / "service.log").open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        stop_process(proc)


@pytest.mark.integration
@pytest.mark.parametrize("service", ["authz-service", "ratelimit-service"])
def test_both_services_bind_metrics_to_loopback_for_a_bare_port(
    service: str, tmp_path: Path
) -> None:
    port = free_port()
    command = [binary(service), "--grpc-address", f"unix:{tmp_path / 's.sock'}",
               "--metrics-address", f":{port}"]
    with running(command, tmp_path) as proc:
        wait_for(lambda: proc.poll() is not None or scrape(port), timeout=20,
                 what=f"{service} /metrics")
        assert proc.poll() is None, (tmp_path / "service.log").read_text()
        assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1, nothing else


@pytest.mark.integration
def test_a_taken_metrics_port_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    port = free_port()
    command = [binary("ratelimit-service"), "--grpc-address", f"unix:{tmp_path / 'a.sock'}",
               "--metrics-address", f"127.0.0.1:{port}"]
    with running(command, tmp_path):
        wait_for(lambda: scrape(port), timeout=20, what="the first service's /metrics")
        second = subprocess.run(
            [binary("authz-service"), "--grpc-address", f"unix:{tmp_path / 'b.sock'}",
             "--metrics-address", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=30, check=False,
        )
    assert second.returncode == 1
    assert "Traceback" not in second.stderr
    assert second.stderr.strip().splitlines()[-1] == (
        f"cannot serve metrics on 127.0.0.1:{port}: Address already in use"
    )
