"""tollgate.tls: which TLS files serve, and a rotation that installs only a whole set."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
from cryptography import x509

from tollgate.tls import ServerTls, TlsError, TlsFiles, load_material
from tollgate_cli import devcerts


def fresh_server_cert(certs: devcerts.DevCerts) -> None:
    """A new server certificate and key from the same CA, in place."""
    certs.server_cert.unlink()
    certs.server_key.unlink()
    devcerts.ensure(certs.directory)


@pytest.fixture
def certs(tmp_path: Path) -> devcerts.DevCerts:
    return devcerts.ensure(tmp_path / "certs")


@pytest.fixture
def live(tmp_path: Path, certs: devcerts.DevCerts) -> TlsFiles:
    """The files a listener serves from, copied from the dev CA's."""
    directory = tmp_path / "live"
    directory.mkdir()
    shutil.copy(certs.server_cert, directory / "tls.crt")
    shutil.copy(certs.server_key, directory / "tls.key")
    return TlsFiles(directory / "tls.crt", directory / "tls.key", certs.ca)


def serial(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


def test_flags_ask_for_a_whole_setting() -> None:
    assert TlsFiles.from_flags("", "", "") is None
    with pytest.raises(TlsError, match="both the certificate and the key"):
        TlsFiles.from_flags("a.crt", "", "")
    with pytest.raises(TlsError, match="needs a server certificate"):
        TlsFiles.from_flags("", "", "ca.crt")
    files = TlsFiles.from_flags("a.crt", "a.key", "ca.crt")
    assert files is not None and files.client_ca == Path("ca.crt")


def test_each_broken_file_is_named(live: TlsFiles, certs: devcerts.DevCerts,
                                   tmp_path: Path) -> None:
    other_key = certs.client_key("admin")
    cases = {
        "cannot read the certificate": TlsFiles(tmp_path / "missing.crt", live.key),
        "not a PEM certificate": TlsFiles(live.key, live.key),
        "not an unencrypted PEM private key": TlsFiles(live.cert, live.cert),
        "does not match the certificate": TlsFiles(live.cert, other_key),
    }
    for message, files in cases.items():
        with pytest.raises(TlsError, match=message):
            load_material(files)
    bad_ca = tmp_path / "ca.pem"
    bad_ca.write_text("not a certificate")
    with pytest.raises(TlsError, match=r"ca\.pem: not a PEM certificate"):
        load_material(TlsFiles(live.cert, live.key, bad_ca))


def test_a_client_ca_makes_client_certificates_required(live: TlsFiles) -> None:
    import ssl

    assert load_material(live).context.verify_mode == ssl.CERT_REQUIRED
    plain = load_material(TlsFiles(live.cert, live.key)).context
    assert plain.verify_mode == ssl.CERT_NONE


def test_a_rotation_is_installed_once_whole(live: TlsFiles, certs: devcerts.DevCerts,
                                            caplog: pytest.LogCaptureFixture) -> None:
    tls = ServerTls(live, interval=0.01)
    first = tls.current
    assert not tls.check()  # nothing changed
    fresh_server_cert(certs)
    # Half a rotation: the new certificate, the old key still in place.
    shutil.copy(certs.server_cert, live.cert.with_suffix(".tmp"))
    os.replace(live.cert.with_suffix(".tmp"), live.cert)
    with caplog.at_level(logging.ERROR, "tollgate.tls"):
        assert not tls.check()
        assert not tls.check()  # the same error is logged once
    assert tls.current is first and tls.last_error is not None
    assert [r.getMessage() for r in caplog.records].count(
        "TLS files rejected, keeping the last good certificate") == 1
    shutil.copy(certs.server_key, live.key.with_suffix(".tmp"))
    os.replace(live.key.with_suffix(".tmp"), live.key)
    assert tls.check()
    assert tls.current.generation == first.generation + 1
    assert serial(tls.current.cert) == serial(certs.server_cert.read_bytes()) != serial(
        first.cert)
    assert tls.last_error is None


def test_the_first_set_must_load(live: TlsFiles, certs: devcerts.DevCerts) -> None:
    with pytest.raises(TlsError):
        ServerTls(TlsFiles(live.cert, certs.client_key("admin")))


def _answer_over_tls(port: int, ca: Path, client: tuple[Path, Path] | None) -> bytes:
    """One GET over TLS with `client` (cert, key); b"" when the server refused it."""
    import socket
    import ssl

    context = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        context.load_cert_chain(*client)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET /x HTTP/1.1\r\nhost: x\r\n\r\n")
            return tls.recv(4096)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return b""


def test_the_http_server_takes_a_new_client_ca_for_new_connections(
    live: TlsFiles, certs: devcerts.DevCerts, tmp_path: Path
) -> None:
    import asyncio

    from tollgate.http_server import HttpServer, simple_response

    other = devcerts.ensure(tmp_path / "other-ca")  # another CA and its client certs
    ca_file = tmp_path / "live" / "client-ca.crt"
    shutil.copy(certs.ca, ca_file)
    files = TlsFiles(live.cert, live.key, ca_file)
    ours = (certs.client_cert("admin"), certs.client_key("admin"))
    theirs = (other.client_cert("admin"), other.client_key("admin"))

    async def main() -> None:
        tls = ServerTls(files)
        server = HttpServer("127.0.0.1:0", lambda r: simple_response(200, b"ok"), tls=tls)
        port = int((await server.start()).rpartition(":")[2])
        try:
            ask = asyncio.to_thread
            assert (await ask(_answer_over_tls, port, certs.ca, ours)).startswith(
                b"HTTP/1.1 200")
            assert await ask(_answer_over_tls, port, certs.ca, theirs) == b""
            assert await ask(_answer_over_tls, port, certs.ca, None) == b""
            shutil.copy(other.ca, ca_file.with_suffix(".new"))
            os.replace(ca_file.with_suffix(".new"), ca_file)
            assert tls.check()
            assert (await ask(_answer_over_tls, port, certs.ca, theirs)).startswith(
                b"HTTP/1.1 200")
            assert await ask(_answer_over_tls, port, certs.ca, ours) == b""
        finally:
            await server.stop(0)

    asyncio.run(main())
