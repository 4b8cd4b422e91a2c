from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.kits import jwt_kit
from tests.kits.authz_stack import Stack, config_text
from tests.kits.grpc_kit import authz_process


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("authz")
    keys = {
        "RS256": jwt_kit.rsa_key("rsa-1"),
        "PS256": jwt_kit.rsa_key("ps-1", "PS256"),
        "ES256": jwt_kit.ec_key("ec-1"),
        "EdDSA": jwt_kit.ed_key("ed-1"),
    }
    jwks_path = workdir / "jwks.json"
    jwks_path.write_text(json.dumps(jwt_kit.jwks(*keys.values())))
    config = workdir / "authz.yaml"
    config.write_text(config_text(jwks_path))
    with authz_process(config, workdir) as (_, client):
        yield Stack(client, keys["RS256"], keys, config, jwks_path, workdir)
