"""Every reference in a rendered set of Kubernetes objects resolves, or a sentence says
which does not.

Pure: it reads the objects (as `kubectl kustomize` or Helm renders them) and returns
problems; the tests call it on every overlay and chart rendering, and on broken copies
to show that it does catch each kind of dangling reference. Checked:

- namespaces: every namespaced object's namespace is created by the rendering (or given);
- pods: the ServiceAccount, every ConfigMap / Secret volume (and the keys of `items`),
  every `configMapKeyRef` / `secretKeyRef` (and its key), every volume a container mounts,
  every port a probe names, a file under a ConfigMap mount that an argument names
  (`--config=/etc/tollgate/authz/authz.yaml` needs key `authz.yaml`), the commands the
  Tollgate image is asked to run;
- a Secret can come from a cert-manager Certificate (`spec.secretName`: tls.crt, tls.key,
  ca.crt), whose Issuer must exist too (a ClusterIssuer only when named as external);
- Services, PodDisruptionBudgets and NetworkPolicies select pods that exist, Services'
  target ports are ports of those pods, an HPA scales an object that exists;
- inside an Envoy bootstrap in a ConfigMap: every STRICT_DNS cluster address is a Service
  (and port) of the namespace, every Unix-socket endpoint is a socket a container of a
  pod mounting that ConfigMap listens on;
- a Redis URL in a Secret names a Service and port that exist.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "ClusterIssuer",
                  "CustomResourceDefinition", "PriorityClass", "StorageClass"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}
CERT_MANAGER_KEYS = frozenset({"tls.crt", "tls.key", "ca.crt"})


@dataclass(frozen=True)
class Image:
    """What one image can run: its repository and the commands on its PATH."""

    repository: str
    commands: frozenset[str]


@dataclass
class _Index:
    docs: list[dict[str, Any]]
    namespaces: set[str]
    by_key: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for doc in self.docs:
            self.by_key[(doc["kind"], _ns(doc), doc["metadata"]["name"])] = doc

    def get(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        return self.by_key.get((kind, ns, name))

    def of_kind(self, kind: str, ns: str | None = None) -> Iterator[dict[str, Any]]:
        for (k, n, _), doc in self.by_key.items():
            if k == kind and (ns is None or n == ns):
                yield doc

    def pods(self, ns: str) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """(workload, pod template) of every workload in ns."""
        for doc in self.docs:
            if doc["kind"] in WORKLOADS and _ns(doc) == ns:
                yield doc, doc["spec"]["template"]


def _ns(doc: dict[str, Any]) -> str:
    if doc["kind"] in CLUSTER_SCOPED:
        return ""
    return str(doc["metadata"].get("namespace", "default"))


def _where(doc: dict[str, Any]) -> str:
    ns = _ns(doc)
    return f"{doc['kind']}/{ns + '/' if ns else ''}{doc['metadata']['name']}"


def containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod_spec.get("initContainers", []), *pod_spec.get("containers", [])]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


def unresolved(docs: Iterable[dict[str, Any]], *, namespaces: Iterable[str] = (),
               images: Iterable[Image] = (),
               external_issuers: Iterable[str] = (),
               external_services: Iterable[str] = ()) -> list[str]:
    """Every reference of `docs` that does not resolve, one sentence each.

    `namespaces`: created outside the rendering (`helm install --create-namespace`);
    `images`: the commands an image has (a container of another image is not checked);
    `external_issuers`: ClusterIssuers the cluster provides.
    `external_services`: `NAME.NAMESPACE` of Services the cluster provides (a collector).
    """
    docs = list(docs)
    index = _Index(docs, {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}
                   | set(namespaces))
    known_images = {i.repository: i for i in images}
    problems: list[str] = []
    for doc in docs:
        where = _where(doc)
        ns = _ns(doc)
        if doc["kind"] not in CLUSTER_SCOPED and ns not in index.namespaces:
            problems.append(f"{where}: namespace {ns} is not created")
        if doc["kind"] in WORKLOADS:
            problems += _pod_problems(index, where, ns, doc["spec"]["template"]["spec"],
                                      known_images)
        kind = doc["kind"]
        if kind == "Service":
            problems += _service_problems(index, where, ns, doc)
        elif kind == "HorizontalPodAutoscaler":
            target = doc["spec"]["scaleTargetRef"]
            if index.get(target["kind"], ns, target["name"]) is None:
                problems.append(f"{where}: scales {target['kind']}/{target['name']}, "
                                "which does not exist")
        elif kind == "PodDisruptionBudget":
            problems += _selector_problems(index, where, ns,
                                           doc["spec"]["selector"]["matchLabels"])
        elif kind == "NetworkPolicy":
            problems += _network_policy_problems(index, where, ns, doc)
        elif kind == "Certificate":
            ref = doc["spec"]["issuerRef"]
            issuer_kind = ref.get("kind", "Issuer")
            if issuer_kind == "ClusterIssuer":
                if ref["name"] not in set(external_issuers) and \
                        index.get("ClusterIssuer", "", ref["name"]) is None:
                    problems.append(f"{where}: ClusterIssuer {ref['name']} does not exist")
            elif index.get("Issuer", ns, ref["name"]) is None:
                problems.append(f"{where}: Issuer {ref['name']} does not exist")
        elif kind == "ConfigMap":
            problems += _envoy_problems(index, where, ns, doc, set(external_services))
        elif kind == "Secret":
            problems += _redis_url_problems(index, where, ns, doc)
    return problems


def _secret_keys(index: _Index, ns: str, name: str) -> frozenset[str] | None:
    secret = index.get("Secret", ns, name)
    if secret is not None:
        return frozenset({*secret.get("data", {}), *secret.get("stringData", {})})
    for cert in index.of_kind("Certificate", ns):
        if cert["spec"]["secretName"] == name:
            return CERT_MANAGER_KEYS
    return None


def _configmap_keys(index: _Index, ns: str, name: str) -> frozenset[str] | None:
    cm = index.get("ConfigMap", ns, name)
    if cm is None:
        return None
    return frozenset({*cm.get("data", {}), *cm.get("binaryData", {})})


def _pod_problems(index: _Index, where: str, ns: str, spec: dict[str, Any],
                  images: dict[str, Image]) -> list[str]:
    problems: list[str] = []
    sa = spec.get("serviceAccountName")
    if sa and sa != "default" and index.get("ServiceAccount", ns, sa) is None:
        problems.append(f"{where}: ServiceAccount {sa} does not exist")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    volume_keys: dict[str, frozenset[str]] = {}
    for name, volume in volumes.items():
        if "configMap" in volume:
            ref, kind = volume["configMap"], "ConfigMap"
            keys = _configmap_keys(index, ns, ref["name"])
        elif "secret" in volume:
            ref, kind = volume["secret"], "Secret"
            ref = {"name": ref["secretName"], **ref}
            keys = _secret_keys(index, ns, ref["name"])
        else:
            continue
        if keys is None:
            if not ref.get("optional"):
                problems.append(f"{where}: volume {name}: {kind} {ref['name']} does not exist")
            continue
        for item in ref.get("items", []):
            if item["key"] not in keys:
                problems.append(f"{where}: volume {name}: {kind} {ref['name']} has no key "
                                f"{item['key']}")
        volume_keys[name] = keys if not ref.get("items") else \
            frozenset(i.get("path", i["key"]) for i in ref["items"])
    for c in containers(spec):
        at = f"{where}: container {c['name']}"
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        for name in mounts.values():
            if name not in volumes:
                problems.append(f"{at}: mounts volume {name}, which the pod does not define")
        for env in c.get("env", []):
            source = env.get("valueFrom", {})
            for ref_kind, lookup in (("configMapKeyRef", _configmap_keys),
                                     ("secretKeyRef", _secret_keys)):
                if ref_kind in source:
                    ref = source[ref_kind]
                    keys = lookup(index, ns, ref["name"])
                    if ref.get("optional"):
                        continue
                    if keys is None:
                        problems.append(f"{at}: env {env['name']}: {ref_kind} {ref['name']} "
                                        "does not exist")
                    elif ref["key"] not in keys:
                        problems.append(f"{at}: env {env['name']}: {ref['name']} has no key "
                                        f"{ref['key']}")
        for source in c.get("envFrom", []):
            for ref_kind, lookup in (("configMapRef", _configmap_keys),
                                     ("secretRef", _secret_keys)):
                if ref_kind in source and not source[ref_kind].get("optional") and \
                        lookup(index, ns, source[ref_kind]["name"]) is None:
                    problems.append(f"{at}: envFrom {source[ref_kind]['name']} does not exist")
        port_names = {p["name"] for p in c.get("ports", []) if "name" in p}
        for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = c.get(probe_name)
            if probe is None:
                continue
            for handler in ("httpGet", "tcpSocket", "grpc"):
                port = probe.get(handler, {}).get("port")
                if isinstance(port, str) and port not in port_names:
                    problems.append(f"{at}: {probe_name} names port {port}, which the "
                                    "container does not declare")
        for arg in [*c.get("command", []), *c.get("args", [])]:
            for path in re.findall(r"(/[\w./-]+)", arg):
                problems += _file_problems(at, path, mounts, volume_keys)
        image = images.get(c["image"].split("@")[0].rsplit(":", 1)[0])
        if image is not None:
            runs = [c.get("command", [None])[0]]
            for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
                command = c.get(probe_name, {}).get("exec", {}).get("command")
                if command:
                    runs.append(command[0])
            for command in runs:
                if command is not None and command not in image.commands:
                    problems.append(f"{at}: image {image.repository} has no command {command}")
    return problems


def _file_problems(at: str, path: str, mounts: dict[str, str],
                   volume_keys: dict[str, frozenset[str]]) -> list[str]:
    """A path below a ConfigMap/Secret mount must be one of its keys."""
    for mount, volume in mounts.items():
        if volume not in volume_keys or not path.startswith(mount.rstrip("/") + "/"):
            continue
        first = path[len(mount.rstrip("/")) + 1:].split("/", maxsplit=1)[0]
        if first and first not in volume_keys[volume]:
            return [f"{at}: {path} is not in volume {volume} (keys: "
                    f"{', '.join(sorted(volume_keys[volume]))})"]
    return []


def _selector_problems(index: _Index, where: str, ns: str,
                       selector: dict[str, str]) -> list[str]:
    if any(_selects(selector, t["metadata"].get("labels", {})) for _, t in index.pods(ns)):
        return []
    return [f"{where}: selects no pod ({selector})"]


def _service_problems(index: _Index, where: str, ns: str, doc: dict[str, Any]) -> list[str]:
    selector = doc["spec"].get("selector")
    if not selector:
        return []
    pods = [t for _, t in index.pods(ns) if _selects(selector, t["metadata"].get("labels", {}))]
    if not pods:
        return [f"{where}: selects no pod ({selector})"]
    problems = []
    for port in doc["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        found = any(
            (p.get("name") == target) if isinstance(target, str) else
            (p["containerPort"] == target)
            for t in pods for c in containers(t["spec"]) for p in c.get("ports", []))
        if not found:
            problems.append(f"{where}: targetPort {target} is no port of the pods it selects")
    return problems


def _network_policy_problems(index: _Index, where: str, ns: str,
                             doc: dict[str, Any]) -> list[str]:
    spec = doc["spec"]
    problems = _selector_problems(index, where, ns, spec["podSelector"]["matchLabels"])
    targets = [t for _, t in index.pods(ns)
               if _selects(spec["podSelector"]["matchLabels"], t["metadata"].get("labels", {}))]
    for rule in spec.get("ingress", []):
        for peer in rule.get("from", []):
            if "podSelector" in peer and "namespaceSelector" not in peer:
                problems += _selector_problems(index, f"{where}: ingress from", ns,
                                               peer["podSelector"]["matchLabels"])
        for port in rule.get("ports", []):
            name = port.get("port")
            if isinstance(name, str) and not any(
                    p.get("name") == name for t in targets
                    for c in containers(t["spec"]) for p in c.get("ports", [])):
                problems.append(f"{where}: port {name} is no port of the pods it selects")
    return problems


def _service_port(index: _Index, ns: str, host: str, port: int) -> str | None:
    """None when host:port is a Service of ns (short or .ns.svc[.cluster.local] name)."""
    parts = host.split(".")
    name, service_ns = parts[0], parts[1] if len(parts) > 1 else ns
    service = index.get("Service", service_ns, name)
    if service is None:
        return f"Service {name} does not exist in namespace {service_ns}"
    if port not in {p["port"] for p in service["spec"]["ports"]}:
        return f"Service {name} has no port {port}"
    return None


def _envoy_problems(index: _Index, where: str, ns: str, doc: dict[str, Any],
                    external: set[str]) -> list[str]:
    text = doc.get("data", {}).get("envoy.yaml")
    if text is None:
        return []
    config = yaml.safe_load(text)
    problems = []
    mounting = [(t["spec"], c) for _, t in index.pods(ns) for c in containers(t["spec"])
                if any(v.get("configMap", {}).get("name") == doc["metadata"]["name"]
                       for v in t["spec"].get("volumes", []))]
    listening = {addr.removeprefix("unix:")
                 for spec, _ in mounting for c in containers(spec)
                 for arg in c.get("args", [])
                 for addr in re.findall(r"unix:(/\S+)", arg)}
    for cluster in config["static_resources"].get("clusters", []):
        for group in cluster["load_assignment"]["endpoints"]:
            for endpoint in group["lb_endpoints"]:
                address = endpoint["endpoint"]["address"]
                if "pipe" in address:
                    path = address["pipe"]["path"]
                    if path not in listening:
                        problems.append(f"{where}: cluster {cluster['name']}: no container "
                                        f"beside this Envoy listens on unix:{path}")
                elif cluster.get("type") in ("STRICT_DNS", "LOGICAL_DNS"):
                    socket = address["socket_address"]
                    host = str(socket["address"]).removesuffix(".svc.cluster.local")
                    if host.removesuffix(".svc") in external:
                        continue
                    missing = _service_port(index, ns, socket["address"], socket["port_value"])
                    if missing:
                        problems.append(f"{where}: cluster {cluster['name']}: {missing}")
    return problems


def _redis_url_problems(index: _Index, where: str, ns: str, doc: dict[str, Any]) -> list[str]:
    values = {**doc.get("stringData", {})}
    problems = []
    for key, value in values.items():
        match = re.fullmatch(r"rediss?://(?:[^@/]*@)?([\w.-]+):(\d+)(?:/\d*)?", str(value))
        if match is None:
            continue
        host, port = match.group(1), int(match.group(2))
        if "." in host and not host.endswith((".svc", ".svc.cluster.local")) \
                and host.count(".") != 1:
            continue  # a name outside the cluster: not ours to resolve
        missing = _service_port(index, ns, host, port)
        if missing:
            problems.append(f"{where}: {key}: {missing}")
    return problems
