"""deploy/helm/tollgate: linted and rendered by Helm's own engine, values checked.

No registry reachable here ships a Linux `helm` binary: Debian packages none, PyPI's
`helm-package` describes itself as Windows and macOS builds, the other PyPI and npm
packages named for Helm are wrappers that expect one on PATH. `helm-python-sdk` ships
Helm's official Go SDK (v4) as a shared library, so these tests lint and render the
chart with the engine `helm template` and `helm lint` are built on. The renderings
themselves are schema-validated and reference-checked with the kustomize ones in
test_kubernetes.py.
"""

from __future__ import annotations

import copy
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.kits.deploy_kit import CHART, CHART_CASES, KUBERNETES_VERSIONS

pytestmark = pytest.mark.integration


def _render(values: dict[str, Any]) -> dict[str, str]:
    with helm.Chart.load(str(CHART)) as chart:
        rendered: dict[str, str] = chart.render(values, name="tollgate", namespace="tollgate",
                                                is_install=True)
    return rendered


def _merged(case: str, **extra: Any) -> dict[str, Any]:
    values = copy.deepcopy(CHART_CASES[case])
    values.update(extra)
    return values


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("case", CHART_CASES)
def test_helm_lint_strict_reports_no_warning(case: str, version: str) -> None:
    report = helm.lint(str(CHART), CHART_CASES[case], strict=True, namespace="tollgate",
                       kube_version=f"v{version}")
    assert report["total_charts_linted"] == 1
    assert not report["errors"], report
    assert [m for m in report["messages"] if m["severity"] >= 2] == [], report


def test_the_engine_is_helm_v4() -> None:
    assert helm.helm_sdk_version().startswith("v4.")


def test_the_values_schema_refuses_an_unknown_key_and_a_bad_value() -> None:
    with helm.Chart.load(str(CHART)) as chart:
        with pytest.raises(helm.HelmValuesError, match="additional properties 'replcas'"):
            chart.validate_schema({"replcas": 2})
        with pytest.raises(helm.HelmValuesError, match="layout"):
            chart.validate_schema({"layout": "grcp"})
        with pytest.raises(helm.HelmValuesError, match="digest"):
            chart.validate_schema({"image": {"digest": "latest"}})
        chart.validate_schema(CHART_CASES["own-redis-and-tls"])


@pytest.mark.parametrize(("values", "message"), [
    ({"replicas": 2}, "limits.store=memory counts in each pod, so every replica would grant "
                      "the whole limit: set limits.store=redis for replicas > 1 or autoscaling"),
    ({"autoscaling": {"enabled": True}}, "limits.store=memory counts in each pod"),
    ({"limits": {"store": "redis"}, "redis": {"deploy": False}},
     "limits.store=redis: set redis.deploy, redis.existingSecret or redis.url"),
    ({"tls": {"certManager": {"enabled": False}}},
     "tls.secretName: name the kubernetes.io/tls Secret you created"),
    ({"backend": {"deploy": False}},
     "backend.host: name your application's Service (or set backend.deploy)"),
], ids=["replicas-in-memory", "hpa-in-memory", "redis-nowhere", "no-tls", "no-backend"])
def test_settings_that_cannot_work_fail_the_render_with_a_reason(
        values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=message.replace(".", r"\.")
                       .replace("(", r"\(").replace(")", r"\)")):
        _render(values)


def test_the_layout_value_switches_the_envoy_config_and_the_sidecars() -> None:
    http = _render({})
    grpc = _render(_merged("grpc"))
    http_envoy = yaml.safe_load(next(yaml.safe_load_all(http["tollgate/templates/configmaps.yaml"]))
                                ["data"]["envoy.yaml"])
    grpc_envoy = yaml.safe_load(next(yaml.safe_load_all(grpc["tollgate/templates/configmaps.yaml"]))
                                ["data"]["envoy.yaml"])
    names = {c["name"] for c in grpc_envoy["static_resources"]["clusters"]}
    assert "tollgate_ratelimit" in names
    assert "tollgate_ratelimit" not in {c["name"] for c in
                                        http_envoy["static_resources"]["clusters"]}
    assert "command: [ratelimit-service]" in grpc["tollgate/templates/deployment.yaml"]
    assert "command: [ratelimit-service]" not in http["tollgate/templates/deployment.yaml"]


def test_values_reach_the_objects() -> None:
    rendered = _render({"envoy": {"authzTimeout": "0.3s"}, "policy": {
        "issuer": "https://login.example.org/realms/x"}, "tracing": {
        "otlpEndpoint": "http://otel:4317"}, "resources": {"authz": {
            "requests": {"cpu": "1"}, "limits": {"cpu": "2"}}}})
    configmaps = list(yaml.safe_load_all(rendered["tollgate/templates/configmaps.yaml"]))
    envoy, authz = configmaps[0]["data"]["envoy.yaml"], configmaps[1]["data"]["authz.yaml"]
    assert "timeout: 0.3s}" in envoy
    assert yaml.safe_load(authz)["identities"][0]["jwt"]["issuer"] == \
        "https://login.example.org/realms/x"
    deployment = yaml.safe_load(rendered["tollgate/templates/deployment.yaml"])
    (authz_c,) = deployment["spec"]["template"]["spec"]["initContainers"]
    assert {"name": "AUTHZ_OTLP_ENDPOINT", "value": "http://otel:4317"} in authz_c["env"]
    # Helm merges a partial map with the defaults.
    assert authz_c["resources"] == {"requests": {"cpu": "1", "memory": "160Mi"},
                                    "limits": {"cpu": "2", "memory": "320Mi"}}


def _authz_env(values: dict[str, Any]) -> dict[str, str]:
    rendered = _render(values)
    deployment = yaml.safe_load(rendered["tollgate/templates/deployment.yaml"])
    (authz_c,) = deployment["spec"]["template"]["spec"]["initContainers"]
    return {e["name"]: e.get("value", "") for e in authz_c["env"]}


def test_the_decision_log_is_on_by_default_and_its_values_reach_authz() -> None:
    assert _authz_env({})["AUTHZ_DECISION_LOG"] == "stdout"
    assert "AUTHZ_DECISION_LOG_CLAIMS" not in _authz_env({})
    env = _authz_env({"decisionLog": {"allowSampleRate": 0.25,
                                      "claims": ["email", "realm_access.roles"]}})
    assert env["AUTHZ_DECISION_LOG_ALLOW_SAMPLE_RATE"] == "0.25"
    assert env["AUTHZ_DECISION_LOG_CLAIMS"] == "email,realm_access.roles"
    assert not {k for k in _authz_env({"decisionLog": {"enabled": False}})
                if k.startswith("AUTHZ_DECISION_LOG")}


def test_a_policy_override_is_used_verbatim() -> None:
    policy = "realm: mine\nroutes:\n  - name: all\n    anonymous: true\n"
    rendered = _render({"policy": {"override": policy}})
    authz = list(yaml.safe_load_all(rendered["tollgate/templates/configmaps.yaml"]))[1]
    assert authz["data"]["authz.yaml"] == policy


def test_extra_environment_reaches_each_service_after_the_charts_own() -> None:
    secret = {"secretKeyRef": {"name": "redis-auth", "key": "password"}}
    values = {"extraEnv": {"authz": [
        {"name": "AUTHZ_LIMITS_REDIS_PIPELINE_WINDOW", "value": "500us"},
        {"name": "AUTHZ_LIMITS_REDIS_AUTH", "valueFrom": secret}]}}
    rendered = _render(values)
    deployment = yaml.safe_load(rendered["tollgate/templates/deployment.yaml"])
    (authz_c,) = deployment["spec"]["template"]["spec"]["initContainers"]
    assert authz_c["env"][-2:] == [
        {"name": "AUTHZ_LIMITS_REDIS_PIPELINE_WINDOW", "value": "500us"},
        {"name": "AUTHZ_LIMITS_REDIS_AUTH", "valueFrom": secret}]
    grpc = _render({"layout": "grpc", "extraEnv": {"ratelimit": [
        {"name": "RATELIMIT_NEAR_LIMIT_RATIO", "value": "0.9"}]}})
    pod = yaml.safe_load(grpc["tollgate/templates/deployment.yaml"])["spec"]["template"]["spec"]
    ratelimit = next(c for c in pod["initContainers"] if c["name"] == "ratelimit")
    assert ratelimit["env"][-1] == {"name": "RATELIMIT_NEAR_LIMIT_RATIO", "value": "0.9"}
    with pytest.raises(Exception, match="extraEnv"):  # the schema: a name and one value
        _render({"extraEnv": {"authz": [{"name": "AUTHZ_X"}]}})


@pytest.mark.parametrize(("values", "reason"), [
    # Set by the chart as an env entry: a second one would hide it.
    ({"extraEnv": {"authz": [{"name": "AUTHZ_DRAIN_SECONDS", "value": "3"}]}},
     "AUTHZ_DRAIN_SECONDS is set by the chart"),
    # Set by the chart as a flag: the flag wins, the variable would be ignored.
    ({"extraEnv": {"authz": [{"name": "AUTHZ_HTTP_ADDRESS", "value": "0.0.0.0:9"}]}},
     "AUTHZ_HTTP_ADDRESS is set by the chart"),
    ({"layout": "grpc", "extraEnv": {"ratelimit": [
        {"name": "RATELIMIT_STORE_FAILURE_MODE", "value": "closed"}]}},
     "RATELIMIT_STORE_FAILURE_MODE is set by the chart"),
    ({"extraEnv": {"ratelimit": [{"name": "RATELIMIT_NEAR_LIMIT_RATIO", "value": "0.9"}]}},
     "layout grpc only"),
])
def test_extra_environment_that_the_chart_would_hide_or_ignore_is_refused(
        values: dict[str, Any], reason: str) -> None:
    with pytest.raises(Exception, match=reason):
        _render(values)


# What the chart's containers set, by flag or env entry (templates/deployment.yaml): every
# environment name each is read by must be refused in extraEnv.
AUTHZ_SET = {"config", "check_config", "grpc_address", "http_address", "metrics_address",
             "drain_seconds", "log_format", "decision_log", "decision_log_allow_sample_rate",
             "decision_log_claims", "otlp_endpoint", "limits_redis_url"}
RATELIMIT_SET = {"config", "grpc_address", "metrics_address", "response_headers",
                 "store_failure_mode", "redis_url", "drain_seconds", "log_format",
                 "otlp_endpoint"}
# Read besides the flags' own variables (ratelimit_service/settings.py, tollgate/tracing.py).
ALSO_READ = {"authz": {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                       "OTEL_SERVICE_NAME"},
             "ratelimit": {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                           "OTEL_SERVICE_NAME", "GRPC_UDS", "GRPC_HOST", "GRPC_PORT",
                           "USE_PROMETHEUS", "PROMETHEUS_ADDR", "RUNTIME_APPDIRECTORY"}}


def _env_names(parser: Any, dests: set[str]) -> set[str]:
    import re

    return {name for action in parser._actions if action.dest in dests
            for name in re.findall(r"\$([A-Z_]+)", action.help or "")}


@pytest.mark.parametrize("service", ["authz", "ratelimit"])
def test_every_name_a_chart_setting_is_read_by_is_refused_in_extra_env(service: str) -> None:
    from authz_service.cli import build_parser as authz_parser
    from ratelimit_service.cli import build_parser as ratelimit_parser

    parser, dests = ((authz_parser(), AUTHZ_SET) if service == "authz"
                     else (ratelimit_parser(), RATELIMIT_SET))
    names = _env_names(parser, dests) | ALSO_READ[service]
    assert len(names) > len(dests)  # the help text still names the variables
    layout = {"layout": "grpc"} if service == "ratelimit" else {}
    for name in sorted(names):
        with pytest.raises(Exception, match=f"{name} is set by the chart"):
            _render({**layout, "extraEnv": {service: [{"name": name, "value": "x"}]}})


def test_policy_audiences_are_a_list_or_any_never_empty() -> None:
    assert '"any"' in _render({"policy": {"audiences": "any"}})[
        "tollgate/templates/configmaps.yaml"]
    with pytest.raises(Exception, match="audiences"):
        _render({"policy": {"audiences": []}})
