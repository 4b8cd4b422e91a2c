"""The demo OIDC issuer: discovery document and JWKS for an RS256 key in the run dir.

authz-service's embedded default trusts exactly `http://127.0.0.1:9999`; the key is
generated on first use into `RUN_DIR/issuer.key` (0600) and `tollgate token` signs
with it. `RUN_DIR/issuer.json` records the issuer URL and key id for `tollgate token`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import http.server
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

DEFAULT_PORT = 9999
AUDIENCE = "tollgate-demo"


def issuer_url(port: int = DEFAULT_PORT) -> str:
    return f"http://127.0.0.1:{port}"


@dataclass(frozen=True)
class IssuerKey:
    """The signing key and what a verifier needs to know about it."""

    private_key: rsa.RSAPrivateKey
    kid: str

    def jwk(self) -> dict[str, str]:
        numbers = self.private_key.public_key().public_numbers()
        return {
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
            "n": _b64(numbers.n), "e": _b64(numbers.e),
        }

    def pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def _b64(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def key_path(run_dir: Path) -> Path:
    return run_dir / "issuer.key"


def info_path(run_dir: Path) -> Path:
    return run_dir / "issuer.json"


def load_key(run_dir: Path) -> IssuerKey:
    """The issuer key from the run dir; FileNotFoundError if there is none yet."""
    loaded = serialization.load_pem_private_key(key_path(run_dir).read_bytes(), password=None)
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise ValueError(f"{key_path(run_dir)}: expected an RSA key")
    der = loaded.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return IssuerKey(loaded, hashlib.sha256(der).hexdigest()[:16])


def ensure_key(run_dir: Path) -> IssuerKey:
    """Load the issuer key, or generate it (0600) on first use."""
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        return load_key(run_dir)
    except (FileNotFoundError, ValueError):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        fd = os.open(key_path(run_dir), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(IssuerKey(key, "").pem())
        key_path(run_dir).chmod(0o600)
        return load_key(run_dir)


class DemoIssuer:
    """Serves /.well-known/openid-configuration and /jwks.json on a background thread."""

    def __init__(self, run_dir: Path, port: int = DEFAULT_PORT) -> None:
        self.key = ensure_key(run_dir)
        self.url = issuer_url(port)
        documents = {
            "/.well-known/openid-configuration": {
                "issuer": self.url,
                "jwks_uri": f"{self.url}/jwks.json",
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["token"],
                "subject_types_supported": ["public"],
            },
            "/jwks.json": {"keys": [self.key.jwk()]},
        }
        bodies = {path: json.dumps(doc).encode() for path, doc in documents.items()}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = bodies.get(self.path.split("?", 1)[0])
                self.send_response(200 if body else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, format: str, *args: object) -> None:
                del format, args

        # Bind before recording issuer.json, so a port clash fails here, loudly.
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        info_path(run_dir).write_text(json.dumps({"issuer": self.url, "kid": self.key.kid}))

    def start(self) -> DemoIssuer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def serve_forever(self) -> None:
        """Serve on the calling thread (the `tollgate demo-issuer` command)."""
        try:
            self._server.serve_forever()
        finally:
            self._server.server_close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", type=Path, default=Path("run"))
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)


def run(args: argparse.Namespace) -> int:
    issuer = DemoIssuer(args.run_dir, args.port)
    print(f"demo issuer on {issuer.url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        issuer.serve_forever()
    return 0
