"""authz-service with rate limits in the Check: its rules, policy and a client for both doors."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.kits import jwt_kit
from tests.kits.door_kit import HttpDoorClient, door_socket
from tests.kits.grpc_kit import AuthzClient, authz_process

RULES = """
domain: api
descriptors:
  - key: remote_address
    rate_limit: {unit: minute, requests_per_unit: 30}
  - key: plan
    value: gold
    descriptors:
      - key: subject
        rate_limit: {unit: minute, requests_per_unit: 100, name: gold}
  - key: plan
    descriptors:
      - key: subject
        rate_limit: {unit: minute, requests_per_unit: 3, name: free}
  - key: shadowed
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: tier
    rate_limit: {unit: minute, requests_per_unit: 1}
"""

POLICY = """
identities:
  - name: idp
    jwt: {{issuer: {issuer}, audiences: [{audience}], jwks_file: {jwks}, algorithms: [RS256]}}
routes:
  - name: orders
    match: {{path: {{prefix: /orders}}}}
    identities: [idp]
  - name: strict
    match: {{path: {{prefix: /strict}}}}
    identities: [idp]
  - name: trial
    match: {{path: {{prefix: /trial}}}}
    identities: [idp]
rate_limits:
  rules: rules.yaml
  domain: api
  headers: {headers}
  sets:
    - name: per-address
      stage: before_authn
      routes: [orders]
      descriptors: [{{actions: [{{remote_address: {{}}}}]}}]
      store_failure_mode: open
    - name: per-plan
      stage: after_authz
      routes: [orders, strict]
      descriptors: [{{actions: [{{plan: {{default_value: free}}}}, {{subject: {{}}}}]}}]
      store_failure_mode: open
    - name: strict-when-down
      stage: after_authz
      routes: [strict]
      descriptors:
        - actions: [{{generic_key: {{descriptor_value: s, descriptor_key: tier}}}}]
      store_failure_mode: closed
    - name: trial
      stage: after_authz
      routes: [trial]
      shadow: true
      descriptors:
        - actions: [{{generic_key: {{descriptor_value: x, descriptor_key: shadowed}}}}]
      store_failure_mode: open
"""


@dataclass
class Limited:
    client: AuthzClient
    http: HttpDoorClient
    key: jwt_kit.SigningKey
    metrics_port: int

    def bearer(self, **claims: object) -> dict[str, str]:
        return {"authorization": "Bearer " + jwt_kit.mint(self.key, **claims)}

    def metric(self, name: str, **labels: str) -> float:
        text = _scrape(self.metrics_port)
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
            if match and ",".join(sorted(match.group(1).split(","))) == wanted:
                return float(match.group(2))
        return 0.0


def _scrape(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return str(answer.read().decode())


@contextmanager
def limited(workdir: Path, *, headers: str = "draft03", redis_url: str = "",
            key: jwt_kit.SigningKey | None = None, lease_hits: int = 0) -> Iterator[Limited]:
    from tests.kits.processes import free_port

    workdir.mkdir(parents=True, exist_ok=True)
    key = key or jwt_kit.rsa_key("lim-1")
    jwks = workdir / "jwks.json"
    jwks.write_text(json.dumps(jwt_kit.jwks(key)))
    (workdir / "rules.yaml").write_text(RULES)
    config = workdir / "authz.yaml"
    config.write_text(POLICY.format(issuer=jwt_kit.ISSUER, audience=jwt_kit.AUDIENCE,
                                    jwks=jwks, headers=headers))
    port = free_port()
    env = {"AUTHZ_METRICS_ADDRESS": f"127.0.0.1:{port}", "AUTHZ_LIMITS_REDIS_URL": redis_url,
           "AUTHZ_LIMITS_REDIS_LEASE_HITS": str(lease_hits)}
    with authz_process(config, workdir, env) as (_, client):
        http = HttpDoorClient(door_socket(workdir))
        try:
            yield Limited(client, http, key, port)
        finally:
            http.close()
