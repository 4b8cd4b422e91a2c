"""Adding an identity kind is one module under identity/ and its line in the registry.

Shown, not claimed: a copy of authz_service gets a new mechanism (a shared-secret header,
`shared_secret.py` below) and two lines in identity/registry.py (its import and its
KINDS entry), nothing else; the copied service then reads the new kind from a policy
file, proves callers with it through the HTTP door and strips its credential header.
If any other file had to learn the kind (a config if-chain, a compiler branch, a
header list), this fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import authz_service
from tests.kits.door_kit import Ask, HttpDoorClient, ask_http
from tests.kits.processes import stop_process, wait_for

pytestmark = pytest.mark.integration

MODULE = '''
"""A shared secret in a header names the caller (a demonstration mechanism)."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from authz_service.config_base import Model
from authz_service.identity.errors import InvalidCredential
from authz_service.identity.given import GivenIdentity
from authz_service.models import Identity, RequestContext

if TYPE_CHECKING:
    from authz_service.identity.registry import SourceContext

KIND = "shared_secret"


class SharedSecretSource(Model):
    header: str = "x-shared-secret"
    callers: dict[str, str]  # secret -> subject


class SharedSecretIdentitySource:
    kind = KIND

    def __init__(self, name: str, config: SharedSecretSource) -> None:
        self.name = name
        self.header = config.header
        self.callers = dict(config.callers)

    def authenticate(self, ctx: RequestContext, now: float) -> Identity | None:
        sent = ctx.headers.get(self.header)
        if sent is None:
            return None
        for secret, subject in self.callers.items():
            if hmac.compare_digest(sent.encode(), secret.encode()):
                return Identity(KIND, subject, self.name)
        raise InvalidCredential("unknown shared secret")


def build(ctx: SourceContext, config: SharedSecretSource) -> SharedSecretIdentitySource:
    return SharedSecretIdentitySource(ctx.name, config)


def credential_headers(config: SharedSecretSource) -> tuple[str, ...]:
    return (config.header,)


def given_identity(source: SharedSecretIdentitySource, given: GivenIdentity) -> Identity:
    return Identity(KIND, given.subject or "", source.name)
'''

IMPORT = "from authz_service.identity import shared_secret\n"
ENTRY = ("    shared_secret.KIND: Mechanism(shared_secret.SharedSecretSource, "
         "shared_secret.build, shared_secret.credential_headers, "
         "shared_secret.given_identity),\n")

POLICY = """
realm: tollgate
unmatched: deny
identities:
  - name: partners
    shared_secret:
      callers: {s3cret-partner-a: partner-a}
routes:
  - name: partner-api
    match: {path: {prefix: /partners/}}
    identities: [partners]
"""


def _with_new_kind(root: Path) -> Path:
    """A copy of authz_service with the new module and its two registry lines."""
    package = root / "authz_service"
    shutil.copytree(Path(authz_service.__file__).parent, package,
                    ignore=shutil.ignore_patterns("__pycache__"))
    (package / "identity" / "shared_secret.py").write_text(MODULE)
    registry = package / "identity" / "registry.py"
    text = registry.read_text()
    anchor = "from authz_service.identity.base import IdentitySource\n"
    assert anchor in text and "\n}\n" in text, "the registry's shape changed: update this test"
    text = text.replace(anchor, IMPORT + anchor, 1)
    head, _, tail = text.rpartition("\n}\n")
    registry.write_text(f"{head}\n{ENTRY}}}\n{tail}")
    return package


def test_a_new_identity_kind_is_one_module_and_one_registry_line(tmp_path: Path) -> None:
    package = _with_new_kind(tmp_path / "tree")
    numstat = subprocess.run(
        ["git", "diff", "--no-index", "--numstat", str(Path(authz_service.__file__).parent),
         str(package)], capture_output=True, text=True, check=False).stdout
    changed = {Path(line.split("\t")[2].split(" => ")[-1].rstrip("}")).name:
               tuple(line.split("\t")[:2]) for line in numstat.splitlines()}
    assert changed.pop("registry.py") == ("2", "0"), numstat  # one import, one entry
    assert list(changed) == ["shared_secret.py"], numstat  # and the new module: no other file
    policy = tmp_path / "authz.yaml"
    policy.write_text(POLICY)
    address = f"unix:{tmp_path / 'door.sock'}"
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "tree")}
    with (tmp_path / "authz.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "authz_service", "--config", str(policy),
             "--grpc-address", "off", "--http-address", address],
            env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)  # not this tree
    try:
        wait_for(lambda: (tmp_path / "door.sock").exists() or proc.poll() is not None,
                 timeout=20, what="the copied service's HTTP door")
        assert proc.poll() is None, (tmp_path / "authz.log").read_text()
        client = HttpDoorClient(address)
        try:
            allowed = ask_http(client, Ask(path="/partners/x",
                                           headers={"x-shared-secret": "s3cret-partner-a"}))
            refused = ask_http(client, Ask(path="/partners/x",
                                           headers={"x-shared-secret": "guess"}))
            missing = ask_http(client, Ask(path="/partners/x"))
        finally:
            client.close()
    finally:
        stop_process(proc)
    log_text = (tmp_path / "authz.log").read_text()
    assert allowed.status == 200, (allowed, log_text)
    assert allowed.headers["x-tollgate-subject"] == "partner-a"
    assert "x-shared-secret" in allowed.removed  # its credential never reaches the upstream
    assert (refused.status, refused.code) == (401, "invalid_token")
    assert missing.status == 401
