"""How authz-service proves itself to an authorization server: client_secret_basic and
client_secret_post (RFC 6749 §2.3.1), private_key_jwt (RFC 7523 §2.2, OIDC Core §9).

Secrets and keys are read once, when the config is compiled (a reload re-reads them);
no message here ever contains one, and the objects holding them have no repr of them.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path
from typing import Protocol
from urllib.parse import quote_plus

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from authz_service.identity.introspection import ClientAuth

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_EC_CURVES = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}


class ClientAuthenticator(Protocol):
    def apply(self, form: dict[str, str], headers: dict[str, str], now: float) -> None:
        """Add the client's credentials to one introspection request."""
        ...


class SecretBasic:
    """HTTP Basic with the form-encoded client id and secret as user and password."""

    __slots__ = ("_header",)

    def __init__(self, client_id: str, secret: str) -> None:
        pair = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
        self._header = "Basic " + base64.b64encode(pair).decode()

    def apply(self, form: dict[str, str], headers: dict[str, str], now: float) -> None:
        headers["authorization"] = self._header

    def __repr__(self) -> str:
        return "SecretBasic(...)"


class SecretPost:
    """client_id and client_secret in the form body."""

    __slots__ = ("_client_id", "_secret")

    def __init__(self, client_id: str, secret: str) -> None:
        self._client_id = client_id
        self._secret = secret

    def apply(self, form: dict[str, str], headers: dict[str, str], now: float) -> None:
        form["client_id"] = self._client_id
        form["client_secret"] = self._secret

    def __repr__(self) -> str:
        return "SecretPost(...)"


class PrivateKeyJwt:
    """A fresh signed assertion per request (its own jti, a short lifetime)."""

    __slots__ = ("_algorithm", "_audience", "_client_id", "_headers", "_key", "_lifetime")

    def __init__(self, config: ClientAuth, key: object, audience: str) -> None:
        self._client_id = config.client_id
        self._algorithm = config.algorithm
        self._audience = audience
        self._lifetime = config.assertion_lifetime_seconds
        self._headers = {"kid": config.key_id} if config.key_id else None
        self._key = key

    def apply(self, form: dict[str, str], headers: dict[str, str], now: float) -> None:
        claims = {
            "iss": self._client_id,
            "sub": self._client_id,
            "aud": self._audience,
            "jti": secrets.token_urlsafe(18),
            "iat": int(now),
            "exp": int(now + self._lifetime),
        }
        form["client_id"] = self._client_id
        form["client_assertion_type"] = ASSERTION_TYPE
        form["client_assertion"] = jwt.encode(
            claims, self._key, algorithm=self._algorithm, headers=self._headers  # type: ignore[arg-type]
        )

    def __repr__(self) -> str:
        return "PrivateKeyJwt(...)"


def authenticator(config: ClientAuth, base_dir: Path, endpoint: str) -> ClientAuthenticator:
    """The configured client authentication; ValueError names what is unusable."""
    if config.method == "private_key_jwt":
        key = _private_key(_path(config.private_key_file or "", base_dir), config.algorithm)
        return PrivateKeyJwt(config, key, config.assertion_audience or endpoint)
    secret = _secret(config, base_dir)
    if config.method == "client_secret_basic":
        return SecretBasic(config.client_id, secret)
    return SecretPost(config.client_id, secret)


def _path(name: str, base_dir: Path) -> Path:
    path = Path(name)
    return path if path.is_absolute() else base_dir / path


def _secret(config: ClientAuth, base_dir: Path) -> str:
    if config.client_secret_env is not None:
        secret = os.environ.get(config.client_secret_env, "")
        if not secret:
            raise ValueError(f"${config.client_secret_env} (the client secret) is unset or empty")
        return secret
    path = _path(config.client_secret_file or "", base_dir)
    try:
        secret = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the client secret file {path}: "
                         f"{type(exc).__name__}") from None
    if not secret:
        raise ValueError(f"the client secret file {path} is empty")
    return secret


def _private_key(path: Path, algorithm: str) -> object:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ValueError(f"cannot read the private key file {path}: {exc.strerror}") from None
    except (ValueError, TypeError):
        raise ValueError(f"{path} is not an unencrypted PEM private key") from None
    if algorithm[:2] in ("RS", "PS"):
        fits = isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048
        wanted = "an RSA key of at least 2048 bits"
    elif algorithm in _EC_CURVES:
        fits = isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(
            key.curve, _EC_CURVES[algorithm])
        wanted = f"an EC key on {_EC_CURVES[algorithm].name}"
    else:
        fits = isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
        wanted = "an Ed25519 or Ed448 key"
    if not fits:
        raise ValueError(f"{path}: {algorithm} needs {wanted}")
    return key
