"""The shipped alert rules and Grafana dashboard, held to what the services export.

`promtool check rules` validates the rules. Each alert is proven to fire with
`promtool test rules` on series taken from real scrapes of a real service driven into
that state (an IdP killed, a config broken, Redis killed or slowed, a flood of
denials, a slow IdP on unknown key ids): two scrapes, before and after, continued at
the same pace. A healthy pair of scrapes fires none of them. Every metric a dashboard
panel queries is found in real scrapes of both services and of Envoy.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from tests.kits import jwt_kit
from tests.kits.grpc_kit import authz_process, check_request
from tests.kits.http_kit import Route, serve_http
from tests.kits.idp_kit import KEY, Idp, policy
from tests.kits.metrics_kit import Samples, cumulative_names, scrape, value
from tests.kits.processes import free_port, wait_for
from tests.kits.ratelimit_kit import descriptor, request
from tests.kits.ratelimit_proc import ServiceProcess
from tests.kits.redis_procs import RedisProcess, cli
from tollgate_cli import token
from tollgate_cli.stack import Stack, StackOptions, demo_calls
from tollgate_cli.stack import request as envoy_request

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "observability" / "prometheus" / "tollgate-alerts.yaml"
DASHBOARD = ROOT / "deploy" / "observability" / "grafana" / "tollgate-dashboard.json"
PROMTOOL = shutil.which("promtool") or "promtool"
RATELIMIT_CONFIG = """domain: shop
descriptors:
  - key: remote_address
    rate_limit: {unit: hour, requests_per_unit: 100}
"""


def rule_names() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"]]


def referenced_metrics(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label matchers, ranges, grouping
    clauses, strings and template variables taken out first)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"(?<![\w.])\d+(?:\.\d+)?(?:e[+-]?\d+)?\b", " ", text)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        after = text[match.end():].lstrip()
        word = match.group(0)
        if after.startswith("(") or word in _PROMQL_WORDS:
            continue
        names.add(word)
    return names


_PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
                 "group_left", "group_right", "e", "inf", "nan"}


def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run([PROMTOOL, "check", "rules", str(RULES)],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rule_names())} rules found" in result.stdout


def test_the_metric_name_reader_sees_what_a_query_reads() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, job) (rate(a_bucket{x="y{z}"}[5m]))) / '
            'sum(rate(b_total{job=~"$job"}[$__rate_interval])) unless on (job) c == 0')
    assert referenced_metrics(expr) == {"a_bucket", "b_total", "c"}
    assert referenced_metrics("sum(process_resident_memory_bytes) / 1e9 > 0.5") == {
        "process_resident_memory_bytes"}


# --- series from real scrapes -----------------------------------------------------------


@dataclass
class Scraped:
    """Two scrapes of one service (before and after it was driven into a state)."""

    job: str
    instance: str
    before: Samples
    after: Samples
    growing: set[str] = field(default_factory=set)


@dataclass
class Scraper:
    job: str
    port: int
    before: Samples = field(default_factory=dict)

    def mark(self) -> None:
        self.before = scrape(self.port)

    def done(self) -> Scraped:
        after, growing = cumulative_names(self.port)
        return Scraped(self.job, f"127.0.0.1:{self.port}", self.before, after, growing)


REPEATS = 12  # one-minute samples after the "after" scrape
EVAL_TIME = "8m"  # past every rule's `for:` and inside the 10 m windows


def input_series(scrapes: list[Scraped]) -> list[dict[str, str]]:
    """promtool series: the before value at 0m, the after value at 1m, and then the same
    pace: counters keep growing by (after - before) a minute, gauges stay."""
    wanted = set().union(*(referenced_metrics(r["expr"]) for r in _rules()))
    series = []
    for scraped in scrapes:
        for (name, labels), after in sorted(scraped.after.items(), key=lambda kv: kv[0][0]):
            if name not in wanted:
                continue
            growing = name in scraped.growing
            before = scraped.before.get((name, labels), 0.0 if growing else after)
            step = after - before if growing else 0.0
            all_labels = {**dict(labels), "job": scraped.job, "instance": scraped.instance}
            selector = ",".join(f'{k}="{v}"' for k, v in sorted(all_labels.items()))
            series.append({"series": f"{name}{{{selector}}}",
                           "values": f"{before:g} {after:g}{step:+g}x{REPEATS}"})
    return series


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def promtool_test(tmp_path: Path, scrapes: list[Scraped],
                  expected: dict[str, list[dict[str, str]]]) -> None:
    """Run `promtool test rules`: each named alert fires with exactly these labels."""
    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": input_series(scrapes),
            "alert_rule_test": [
                {"eval_time": EVAL_TIME, "alertname": name,
                 "exp_alerts": [{"exp_labels": labels,
                                 "exp_annotations": annotations(name, labels)}
                                for labels in alerts]}
                for name, alerts in expected.items()
            ],
        }],
    }
    path = tmp_path / "alerts-test.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    result = subprocess.run([PROMTOOL, "test", "rules", str(path)],
                            check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def annotations(alert: str, labels: dict[str, str]) -> dict[str, str]:
    """The rule's annotations as Prometheus renders them for an alert with these labels
    (the templates only read `$labels`)."""
    rule = next(r for r in _rules() if r["alert"] == alert)
    return {key: re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda m: labels[m.group(1)], text)
            for key, text in rule["annotations"].items()}


def authz_labels(scraped: Scraped, **labels: str) -> dict[str, str]:
    return {"job": scraped.job, "instance": scraped.instance, **labels}


@contextmanager
def authz_with_metrics(config_text: str, workdir: Path) -> Iterator[tuple[Any, Scraper]]:
    config = workdir / "authz.yaml"
    config.write_text(config_text)
    port = free_port()
    with authz_process(config, workdir, env={"AUTHZ_METRICS_ADDRESS": f"127.0.0.1:{port}"}) as (
        _, client
    ):
        yield client, Scraper("authz-service", port)


@contextmanager
def ratelimit_with_metrics(args: list[str]) -> Iterator[tuple[ServiceProcess, Scraper]]:
    port = free_port()
    proc = ServiceProcess(args, env={"RATELIMIT_METRICS_ADDRESS": f"127.0.0.1:{port}"})
    try:
        yield proc, Scraper("ratelimit-service", port)
    finally:
        proc.stop()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


# --- the scenarios ----------------------------------------------------------------------


def test_a_healthy_pair_of_scrapes_fires_no_alert(
    tmp_path: Path, redis_server: RedisProcess
) -> None:
    config = tmp_path / "rl.yaml"
    config.write_text(RATELIMIT_CONFIG)
    with Idp() as idp, authz_with_metrics(policy(idp.url), tmp_path) as (client, authz), \
                ratelimit_with_metrics(["--config", str(config), "--redis-url",
                                    redis_server.url]) as (proc, ratelimit):
        wait_for(client.serving, what="authz ready")
        authz.mark()
        ratelimit.mark()
        token = jwt_kit.mint(KEY)
        for _ in range(30):
            assert client.check(check_request(headers=bearer(token))).allowed
            proc.call(request("shop", descriptor(("remote_address", "10.1.1.1"))))
        scrapes = [authz.done(), ratelimit.done()]
    promtool_test(tmp_path, scrapes, {name: [] for name in rule_names()})


def test_an_idp_killed_since_start_fires_the_key_alerts(tmp_path: Path) -> None:
    idp = Idp()  # never started: connection refused
    with authz_with_metrics(policy(idp.url), tmp_path) as (client, authz):
        wait_for(lambda: (value(scrape(authz.port), "tollgate_authz_jwks_fetches_total",
                                {"source": "corp", "result": "http_error"}) or 0) >= 1,
                 what="a failed fetch")
        authz.mark()
        answer = client.check(check_request(headers=bearer(jwt_kit.mint(KEY))))
        assert answer.body["error"] == "keys_unavailable"
        failed = value(authz.before, "tollgate_authz_jwks_fetches_total",
                       {"source": "corp", "result": "http_error"}) or 0
        wait_for(lambda: (value(scrape(authz.port), "tollgate_authz_jwks_fetches_total",
                                {"source": "corp", "result": "http_error"}) or 0) > failed,
                 what="more failed fetches")
        scraped = authz.done()
    promtool_test(tmp_path, [scraped], {
        "TollgateJwtSourceWithoutKeys": [authz_labels(scraped, source="corp",
                                                      severity="critical")],
        "TollgateIdpUnreachable": [authz_labels(scraped, source="corp", severity="warning")],
        "TollgateKeysUnavailableDenials": [authz_labels(scraped, route="orders",
                                                        severity="critical")],
    })


def test_a_broken_config_fires_config_rejected_for_each_service(tmp_path: Path) -> None:
    rules = tmp_path / "rl.yaml"
    rules.write_text(RATELIMIT_CONFIG)
    with Idp() as idp, authz_with_metrics(policy(idp.url), tmp_path) as (_, authz), \
                ratelimit_with_metrics(["--config", str(rules), "--reload-interval",
                                    "0.05"]) as (_, ratelimit):
        authz.mark()
        ratelimit.mark()
        (tmp_path / "authz.yaml").write_text(policy(idp.url) + "  - [broken\n")
        rules.write_text(RATELIMIT_CONFIG + "  - key: [broken\n")
        for scraper, prefix in ((authz, "tollgate_authz"), (ratelimit, "tollgate_ratelimit")):
            wait_for(lambda s=scraper, p=prefix: value(  # type: ignore[misc]
                scrape(s.port), f"{p}_config_last_reload_successful") == 0,
                what=f"{prefix}: the broken file refused")
        scrapes = [authz.done(), ratelimit.done()]
    promtool_test(tmp_path, scrapes, {"TollgateConfigRejected": [
        authz_labels(s, severity="warning") for s in scrapes]})


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_a_killed_redis_fires_store_down_and_the_failure_mode_alert(
    tmp_path: Path, redis_server: RedisProcess, mode: str
) -> None:
    config = tmp_path / "rl.yaml"
    config.write_text(RATELIMIT_CONFIG)
    args = ["--config", str(config), "--redis-url", redis_server.url, "--redis-timeout", "0.3",
            "--store-failure-mode", mode]
    with ratelimit_with_metrics(args) as (proc, ratelimit):
        hit = request("shop", descriptor(("remote_address", "10.2.2.2")))
        proc.call(hit)
        ratelimit.mark()
        redis_server.stop()
        for _ in range(5):
            try:
                proc.call(hit)
            except grpc.RpcError:  # failing closed answers UNAVAILABLE
                assert mode == "closed"
        scraped = ratelimit.done()
    labels = authz_labels(scraped, severity="critical")
    failure = "TollgateFailOpenDecisions" if mode == "open" else "TollgateFailClosedDecisions"
    severity = "warning" if mode == "open" else "critical"
    promtool_test(tmp_path, [scraped], {
        "TollgateStoreDown": [labels],
        failure: [authz_labels(scraped, severity=severity)],
    })


def test_a_flood_of_denials_fires_the_deny_rate_spike(tmp_path: Path) -> None:
    with Idp() as idp, authz_with_metrics(policy(idp.url), tmp_path) as (client, authz):
        wait_for(client.serving, what="authz ready")
        client.check(check_request(headers=bearer(jwt_kit.mint(KEY))))
        authz.mark()
        for _ in range(200):
            client.check(check_request())  # no credentials
        scraped = authz.done()
    promtool_test(tmp_path, [scraped], {
        "TollgateDenyRateSpike": [authz_labels(scraped, severity="warning")]})


def test_a_slow_idp_on_unknown_key_ids_fires_check_latency(tmp_path: Path) -> None:
    stranger = jwt_kit.rsa_key("ops-stranger")
    with serve_http() as idp:
        idp.set_json("/jwks", jwt_kit.jwks(KEY))
        # A fetch outlasts the Check's wait for it: each Check waits its whole 0.3 s.
        text = policy(f"{idp.base_url}/jwks").replace(
            '"timeout_seconds": 0.5, "unknown_kid_wait_seconds": 0.5',
            '"timeout_seconds": 3, "unknown_kid_wait_seconds": 0.3, '
            '"unknown_kid_cooldown_seconds": 0')
        with authz_with_metrics(text, tmp_path) as (client, authz):
            wait_for(client.serving, what="authz ready")
            authz.mark()
            idp.set_route("/jwks", Route(body=json.dumps(jwt_kit.jwks(KEY)).encode(), delay=5))
            for n in range(6):
                started = time.monotonic()
                client.check(check_request(headers=bearer(jwt_kit.mint(stranger, sub=f"s{n}"))))
                assert time.monotonic() - started >= 0.25, "the Check waited for the refetch"
            scraped = authz.done()
            idp.release.set()
    promtool_test(tmp_path, [scraped], {
        "TollgateCheckLatencyHigh": [authz_labels(scraped, severity="warning")]})


def test_a_slow_redis_fires_store_latency(tmp_path: Path, redis_server: RedisProcess) -> None:
    config = tmp_path / "rl.yaml"
    config.write_text(RATELIMIT_CONFIG)
    with ratelimit_with_metrics(["--config", str(config), "--redis-url",
                                 redis_server.url]) as (proc, ratelimit):
        hit = request("shop", descriptor(("remote_address", "10.3.3.3")))
        proc.call(hit)
        ratelimit.mark()
        for _ in range(4):
            # A real Redis holding every client's commands for 0.2 s (CLIENT PAUSE answers
            # at once and pauses after), so the next call waits that long.
            assert cli(redis_server.port, "CLIENT", "PAUSE", "200").strip() == "OK"
            started = time.monotonic()
            proc.call(hit)
            assert time.monotonic() - started >= 0.1
        scraped = ratelimit.done()
    promtool_test(tmp_path, [scraped], {
        "TollgateStoreLatencyHigh": [authz_labels(scraped, severity="warning")],
        "TollgateCheckLatencyHigh": [authz_labels(scraped, severity="warning")],
    })


# --- the dashboard ----------------------------------------------------------------------


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every query of every panel, rows' panels included."""
    board = json.loads(DASHBOARD.read_text())
    found = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                found.append((panel["title"], target["expr"]))
            walk(panel.get("panels", []))

    walk(board["panels"])
    return found


def test_the_dashboard_is_grafana_json_with_a_query_on_every_panel() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] and board["title"] == "Tollgate"
    variables = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "job", "instance", "envoy_job"} <= variables
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len(panels) >= 20
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        assert panel.get("targets"), f"{panel['title']}: no query"
        assert panel["datasource"]["uid"] == "${datasource}"
    for title, expr in dashboard_queries():
        assert referenced_metrics(expr), f"{title}: {expr} reads no metric"


def _envoy_stats(stack: Stack) -> set[str]:
    url = f"http://127.0.0.1:{stack.admin_port}/stats/prometheus"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines()
            if line and not line.startswith("#")}


def _names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def test_every_dashboard_metric_is_exported_by_a_real_service_or_envoy(
    tmp_path: Path, redis_server: RedisProcess
) -> None:
    exported: set[str] = set()
    # Both Envoy layouts, driven through every demo answer (200, 401, 403, 429, ...).
    for layout in ("http", "grpc"):
        run_dir = Path(tempfile.mkdtemp(prefix="tg-"))
        stack = Stack(StackOptions(run_dir=run_dir, https_port=free_port(),
                                   mtls_port=free_port(), issuer_port=free_port(),
                                   envoy_log_level="error", layout=layout)).start()
        try:
            _, calls = demo_calls(stack, str(run_dir))
            for call in calls:
                call.send()
            if layout == "grpc":  # ratelimit-service gone: the filter counts an error
                stack.stop_part("ratelimit")
                read = token.mint(stack.run_dir, sub="dash", scope="orders:read")
                answer = envoy_request(stack.options.https_port, "GET", "/orders/42",
                                       ca=stack.ca, headers=bearer(read))
                assert answer.status == 200  # the filter fails open (failure_mode_deny off)
            exported |= _envoy_stats(stack)
        finally:
            stack.stop()
            shutil.rmtree(run_dir, ignore_errors=True)
    # authz-service with a remote IdP and Redis-counted limits; ratelimit-service on Redis.
    from tests.kits.limits_kit import limited

    with limited(tmp_path / "authz", redis_url=redis_server.url) as lim:
        lim.client.check(check_request(path="/orders", headers=lim.bearer(sub="dash-1")))
        exported |= _names(scrape(lim.metrics_port))
    with Idp() as idp, authz_with_metrics(policy(idp.url), tmp_path) as (client, authz):
        wait_for(client.serving, what="authz ready")
        exported |= _names(scrape(authz.port))
    config = tmp_path / "rl.yaml"
    config.write_text(RATELIMIT_CONFIG.replace("100", "1"))
    with ratelimit_with_metrics(["--config", str(config), "--redis-url",
                                 redis_server.url]) as (proc, ratelimit):
        for _ in range(2):
            proc.call(request("shop", descriptor(("remote_address", "10.4.4.4"))))
        exported |= _names(scrape(ratelimit.port))
    missing = {(title, name) for title, expr in dashboard_queries()
               for name in referenced_metrics(expr) if name not in exported}
    assert not missing, f"panels query metrics nobody exports: {sorted(missing)}"



# --- the monitoring objects of deploy/k8s and the chart ---------------------------------


def _pod_ports(docs: list[dict[str, Any]]) -> set[str]:
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"
                     and d["metadata"]["name"].endswith("tollgate")]
    spec = deployment["spec"]["template"]["spec"]
    return {port["name"] for c in [*spec.get("initContainers", []), *spec["containers"]]
            for port in c.get("ports", [])}


def _check_monitoring(docs: list[dict[str, Any]]) -> None:
    (monitor,) = [d for d in docs if d["kind"] == "PodMonitor"]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"
                     and d["metadata"]["name"].endswith("tollgate")]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items(), "the PodMonitor selects the Tollgate pods"
    endpoints = {e["port"]: e for e in monitor["spec"]["podMetricsEndpoints"]}
    assert set(endpoints) <= _pod_ports(docs)
    assert endpoints["envoy-probes"]["path"] == "/stats/prometheus"
    jobs = {e["relabelings"][0]["replacement"] for e in endpoints.values()}
    assert jobs == {"authz-service", "ratelimit-service", "envoy"}
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert rule["spec"] == yaml.safe_load(RULES.read_text())


def test_the_chart_ships_the_podmonitor_rules_and_dashboard_when_asked() -> None:
    from tests.kits.deploy_kit import CHART, helm_render

    assert (CHART / "files" / RULES.name).read_text() == RULES.read_text()
    assert (CHART / "files" / DASHBOARD.name).read_text() == DASHBOARD.read_text()
    docs = helm_render("monitoring")
    _check_monitoring(docs)
    (monitor,) = [d for d in docs if d["kind"] == "PodMonitor"]
    assert monitor["metadata"]["labels"]["release"] == "prom"
    (board,) = [d for d in docs if d["kind"] == "ConfigMap" and "tollgate-dashboard.json"
                in d.get("data", {})]
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(board["data"]["tollgate-dashboard.json"]) == json.loads(
        DASHBOARD.read_text())
    default = helm_render("default")
    assert not [d for d in default if d["kind"] in ("PodMonitor", "PrometheusRule")]


def test_the_kustomize_component_adds_the_podmonitor_and_rules(tmp_path: Path) -> None:
    from tests.kits.deploy_kit import K8S, kustomize

    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree)
    overlay = tree / "overlays" / "grpc"
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    kustomization["components"].append("../../components/monitoring")
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    _check_monitoring(kustomize(overlay))
