"""`tollgate up --otlp URL`: one trace per request, Envoy's spans and the services'.

A real Envoy (its OpenTelemetry tracer, as shipped in envoy/*.yaml) and the real
services send their spans to a real OTLP/gRPC receiver; the services' spans are
children of spans Envoy made for the same request.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kits.otlp_kit import Receiver, otlp_receiver
from tests.kits.processes import free_port, wait_for
from tollgate_cli import token
from tollgate_cli.stack import Stack, StackOptions, request

pytestmark = pytest.mark.integration


@pytest.fixture(params=["http", "grpc"])
def traced(request: pytest.FixtureRequest) -> Iterator[tuple[Stack, Receiver]]:
    run_dir = Path(tempfile.mkdtemp(prefix="tg-"))
    with otlp_receiver() as (endpoint, receiver):
        options = StackOptions(run_dir=run_dir, https_port=free_port(), mtls_port=free_port(),
                               issuer_port=free_port(), envoy_log_level="error",
                               layout=request.param, otlp=endpoint)
        stack = Stack(options).start()
        try:
            yield stack, receiver
        finally:
            stack.stop()
            shutil.rmtree(run_dir, ignore_errors=True)


def _by_service(receiver: Receiver, service: str) -> list[Any]:
    with receiver.lock:
        return [span for name, span in receiver.services if name == service]


def test_each_services_span_is_a_child_of_envoys_in_one_trace(
    traced: tuple[Stack, Receiver]
) -> None:
    stack, receiver = traced
    read = token.mint(stack.run_dir, sub="tracer", scope="orders:read")
    answer = request(stack.options.https_port, "GET", "/orders/42", ca=stack.ca,
                     headers={"authorization": f"Bearer {read}"})
    assert answer.status == 200
    services = ["authz-service"] + (["ratelimit-service"] if stack.options.layout == "grpc"
                                    else [])
    for service in services:
        wait_for(lambda s=service: bool(_by_service(receiver, s)), timeout=30,  # type: ignore[misc]
                 what=f"a span of {service}")
    wait_for(lambda: len(_by_service(receiver, "envoy")) >= 2, timeout=30,
             what="Envoy's spans")
    envoy = {span.span_id: span for span in _by_service(receiver, "envoy")}
    for service in services:
        (span,) = _by_service(receiver, service)
        assert span.parent_span_id in envoy, f"{service}'s span has no parent span of Envoy"
        assert span.trace_id == envoy[span.parent_span_id].trace_id
        attributes = {a.key: a.value for a in span.attributes}
        assert attributes["tollgate.code"].string_value == "ok"
        if service == "authz-service" and stack.options.layout == "http":
            assert span.name == "GET /check"
            assert attributes["http.request.method"].string_value == "GET"
            assert attributes["http.response.status_code"].int_value == 200
            assert attributes["url.path"].string_value == "/check/orders/42"
        else:
            assert attributes["rpc.system"].string_value == "grpc"
    # One trace: the ingress span Envoy started for this request is the root of all.
    assert len({span.trace_id for span in envoy.values()}) == 1


def test_without_otlp_the_local_envoy_config_has_no_tracing(tmp_path: Path) -> None:
    import yaml

    from tollgate_cli.stack import ENVOY_DIR, render, traced_to

    for template in ("envoy.yaml", "envoy-grpc.yaml"):
        values = {"RUN_DIR": str(tmp_path), "HTTPS_PORT": 1, "MTLS_PORT": 2, "ADMIN_PORT": 3,
                  "UPSTREAM_PORT": 4}
        shipped = render(ENVOY_DIR / template, values)
        assert "envoy.tracers.opentelemetry" in shipped
        bare = yaml.safe_load(traced_to(shipped, ""))
        assert "otel_collector" not in {c["name"] for c in bare["static_resources"]["clusters"]}
        assert "tracing" not in yaml.safe_dump(bare)
        pointed = yaml.safe_load(traced_to(shipped, "http://collector.example:4318"))
        (collector,) = [c for c in pointed["static_resources"]["clusters"]
                        if c["name"] == "otel_collector"]
        address = collector["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        assert address["address"]["socket_address"] == {"address": "collector.example",
                                                        "port_value": 4318}
        assert collector["type"] == "STRICT_DNS"
