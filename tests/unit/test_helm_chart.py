"""helm/mandate rendered and linted by Helm's own engine (helm-python-sdk carries Helm's Go
library), every object checked against Kubernetes' schemas (kubernetes-validate), and the
wiring that matters asserted: probes on the port Mandate serves, the ConfigMap where
--policies points, the Secret behind --chain-key, security context, replicas, PDB, Redis.
The Istio examples in helm/examples/ are checked here too.
"""

from __future__ import annotations

import base64
import re
import shutil
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from authz.chains.tokens import ChainKeys
from authz.cli import build_parser
from authz.policy.compiler import compile_directory
from tests.conftest import EXAMPLES, REPO
from tests.harness.istio import validate_authorization_policy

CHART = REPO / "helm" / "mandate"
HELM_EXAMPLES = REPO / "helm" / "examples"
NAMESPACE = "mandate-system"
# The chart's kubeVersion floor and the newest schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
# Kinds from CRDs that kubernetes-validate has no schema for; checked by hand below.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def example_values(name: str) -> dict[str, Any]:
    return yaml.safe_load((HELM_EXAMPLES / name).read_text())


def example_policy_files() -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted(EXAMPLES.glob("*.yaml"))}


# Every documented way to install the chart (values.yaml's comments, helm/README.md).
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "example-policies": {"policies": {"files": example_policy_files()}},
    "production": example_values("values-production.yaml"),
    "dev": example_values("values-dev.yaml"),
    "workers": example_values("values-workers.yaml"),
    "redis-url": {"redis": {"url": "rediss://mandate:secret@redis.example:6380/0"}},
    "redis-cluster-url": {"redis": {"url": "rediss+cluster://redis-cluster.redis.svc:6379"}, "replicaCount": 3},
    "existing-secrets": {"chainKey": {"existingSecret": "keys", "secretKey": "hmac"}, "policies": {"existingConfigMap": "profiles"}},
    "hpa-and-monitoring": {"autoscaling": {"enabled": True}, "serviceMonitor": {"enabled": True}},
    "custom-ports-and-paths": {
        "mandate": {"grpcPort": 19191, "metricsPort": 19090, "policiesPath": "/srv/profiles", "chainKeyDir": "/run/keys"},
    },
}


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: helm.Chart, values: dict[str, Any], release: str = "mandate") -> tuple[list[dict[str, Any]], str]:
    """Every object the chart renders, and NOTES.txt."""
    manifests = chart.render(values, name=release, namespace=NAMESPACE, is_install=True)
    objects: list[dict[str, Any]] = []
    notes = ""
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        objects.extend(document for document in yaml.safe_load_all(text) if document)
    return objects, notes


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [item for item in objects if item["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [item for item in by_kind(objects, kind) if name is None or item["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[item['metadata']['name'] for item in found]}"
    return found[0]


def mandate_deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return next(d for d in by_kind(objects, "Deployment") if d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "authorizer")


def serve_args(container: dict[str, Any]):
    """The container's command line, parsed by Mandate's own argument parser."""
    assert container["command"] == ["mandate"] and container["args"][0] == "serve"
    return build_parser().parse_args(container["args"])


# --- Helm: render and lint ------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_lint_is_clean(variant: str) -> None:
    report = helm.lint(CHART, VARIANTS[variant], strict=True, namespace=NAMESPACE, kube_version="v1.30.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []  # 2 warning, 3 error; 1 (info): "icon is recommended"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_object_validates_against_the_kubernetes_schemas(chart, variant: str) -> None:
    objects, _ = render(chart, VARIANTS[variant])
    assert objects
    for item in objects:
        assert item["metadata"]["namespace"] == NAMESPACE
        if (item["apiVersion"], item["kind"]) in CRD_KINDS:
            continue
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(item, version, strict=True)


def test_the_default_install(chart) -> None:
    objects, notes = render(chart, {})
    kinds = sorted(item["kind"] for item in objects)
    assert kinds == sorted([
        "ConfigMap", "Deployment", "Deployment", "PodDisruptionBudget", "Secret", "Secret",
        "Service", "Service", "ServiceAccount",
    ])
    deployment = mandate_deployment(objects)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    args = serve_args(deployment["spec"]["template"]["spec"]["containers"][0])
    assert args.workers == 1 and args.grpc_server == "threads" and args.chain_store_timeout == 0.25
    # The trial Redis is labelled as such, in the objects and in the notes.
    redis = one(objects, "Deployment", "mandate-redis")
    assert "not-for-production" in " ".join(redis["metadata"]["annotations"])
    assert "FOR TRIALS ONLY" in notes
    # The notes carry the Istio wiring for this release.
    for needle in ("service: mandate.mandate-system.svc.cluster.local", "port: 9191", "timeout: 0.5s", "failOpen: false",
                   "maxRequestBytes", "allowPartialMessage: false", "action: CUSTOM", "targetRefs", "mandate export istio"):
        assert needle in notes, needle


# --- the wiring -----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_probes_ports_and_service_match_the_server(chart, variant: str) -> None:
    objects, _ = render(chart, VARIANTS[variant])
    pod = mandate_deployment(objects)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = serve_args(container)
    grpc_port = int(args.listen.rsplit(":", 1)[1])
    metrics_port = int(args.metrics_listen.rsplit(":", 1)[1])
    assert args.listen.startswith("0.0.0.0:") and args.metrics_listen.startswith("0.0.0.0:")
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"grpc": grpc_port, "http-metrics": metrics_port}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        # gRPC health, service "" (Mandate: NOT_SERVING until policies load).
        assert container[probe]["grpc"] == {"port": grpc_port}, probe
    service = one(objects, "Service", "mandate")
    assert service["spec"]["selector"] == pod_labels_subset(mandate_deployment(objects), service["spec"]["selector"])
    by_name = {port["name"]: port for port in service["spec"]["ports"]}
    assert by_name["grpc"]["targetPort"] == "grpc" and by_name["grpc"]["appProtocol"] == "grpc"
    assert by_name["grpc"]["port"] == grpc_port
    assert by_name["http-metrics"]["targetPort"] == "http-metrics" and by_name["http-metrics"]["port"] == metrics_port
    assert VARIANTS[variant].get("mandate", {}).get("grpcPort", 9191) == grpc_port


def pod_labels_subset(deployment: dict[str, Any], selector: dict[str, str]) -> dict[str, str]:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    return {key: labels[key] for key in selector if key in labels}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_configmap_is_mounted_where_policies_points(chart, variant: str) -> None:
    objects, _ = render(chart, VARIANTS[variant])
    pod = mandate_deployment(objects)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = serve_args(container)
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == args.policies)
    assert "subPath" not in mount  # a subPath mount never sees the kubelet's ..data swap: no live reload
    assert mount["readOnly"] is True
    configmap_name = volumes[mount["name"]]["configMap"]["name"]
    existing = VARIANTS[variant].get("policies", {}).get("existingConfigMap")
    if existing:
        assert configmap_name == existing
        assert not by_kind(objects, "ConfigMap")
    else:
        configmap = one(objects, "ConfigMap", configmap_name)
        assert sorted(configmap["data"]) == sorted(VARIANTS[variant].get("policies", {}).get("files", {}))


def test_policy_files_from_values_reach_mandate_unchanged(chart, tmp_path: Path) -> None:
    objects, _ = render(chart, VARIANTS["example-policies"])
    configmap = one(objects, "ConfigMap")
    for name, text in configmap["data"].items():
        (tmp_path / name).write_text(text)
    assert configmap["data"] == example_policy_files()
    assert compile_directory(tmp_path).version == compile_directory(EXAMPLES).version


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_secret_feeds_chain_key(chart, variant: str, tmp_path: Path) -> None:
    objects, _ = render(chart, VARIANTS[variant])
    pod = mandate_deployment(objects)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = serve_args(container)
    key_dir, key_file = args.chain_key.rsplit("/", 1)
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == key_dir)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    secret_name = volume["secret"]["secretName"]
    items = {item["key"]: item["path"] for item in volume["secret"]["items"]}
    (secret_key,) = [key for key, path in items.items() if path == key_file]
    chain_key = VARIANTS[variant].get("chainKey", {})
    if chain_key.get("existingSecret"):
        assert (secret_name, secret_key) == (chain_key["existingSecret"], chain_key["secretKey"])
        assert not [s for s in by_kind(objects, "Secret") if s["metadata"]["name"] == secret_name]
        return
    secret = one(objects, "Secret", secret_name)
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    key_text = base64.b64decode(secret["data"][secret_key]).decode()
    (tmp_path / "chain.key").write_text(key_text)
    ChainKeys.from_file(tmp_path / "chain.key")  # what `mandate serve --chain-key` reads at start
    assert len(key_text.strip()) == 64


def test_each_install_generates_its_own_key(chart) -> None:
    """Offline, `lookup` finds nothing, so each render is a fresh install: a new random key.
    (Keeping the key on upgrade needs the cluster's answer to `lookup`; see helm/README.md.)"""
    keys = {one(render(chart, {})[0], "Secret", "mandate-chain-key")["data"]["chain.key"] for _ in range(3)}
    assert len(keys) == 3


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_non_root_read_only_no_capabilities(chart, variant: str) -> None:
    objects, _ = render(chart, VARIANTS[variant])
    for deployment in by_kind(objects, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    container = mandate_deployment(objects)["spec"]["template"]["spec"]["containers"][0]
    writable = [m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")]
    assert writable == ["/tmp"]  # --workers' state; everything else is read-only


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_replicas_pdb_and_autoscaling(chart, variant: str) -> None:
    values = VARIANTS[variant]
    objects, _ = render(chart, values)
    deployment = mandate_deployment(objects)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    autoscaled = values.get("autoscaling", {}).get("enabled", False)
    if autoscaled:
        assert "replicas" not in deployment["spec"]
        hpa = one(objects, "HorizontalPodAutoscaler")
        assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        assert hpa["spec"]["minReplicas"] >= 2
    else:
        assert not by_kind(objects, "HorizontalPodAutoscaler")
        assert deployment["spec"]["replicas"] == values.get("replicaCount", 2)
    pdbs = by_kind(objects, "PodDisruptionBudget")
    if autoscaled or deployment["spec"].get("replicas", 2) > 1:
        (pdb,) = pdbs
        assert pdb["spec"]["minAvailable"] == values.get("podDisruptionBudget", {}).get("minAvailable", 1)
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert all(labels[key] == value for key, value in selector.items())
        # The PDB must not also count the trial Redis' pod.
        assert selector["app.kubernetes.io/component"] == "authorizer"
    else:
        assert pdbs == []  # minAvailable 1 of 1 would block every node drain


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_redis_wiring(chart, variant: str) -> None:
    values = VARIANTS[variant]
    objects, _ = render(chart, values)
    deployment = mandate_deployment(objects)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item for item in container.get("env", [])}
    redis = values.get("redis", {})
    internal = [d for d in by_kind(objects, "Deployment") if d["metadata"]["name"].endswith("-redis")]
    several = values.get("replicaCount", 2) > 1 or values.get("autoscaling", {}).get("enabled") or values.get("mandate", {}).get("workers", 1) > 1
    if redis.get("url"):
        assert env["MANDATE_REDIS"]["value"] == redis["url"] and not internal
    elif redis.get("existingSecret"):
        assert env["MANDATE_REDIS"]["valueFrom"]["secretKeyRef"] == {"name": redis["existingSecret"], "key": redis.get("existingSecretKey", "url")}
        assert not internal
    elif redis.get("internal", {}).get("enabled", True):
        (store,) = internal
        service = one(objects, "Service", store["metadata"]["name"])
        assert service["spec"]["selector"] == {k: v for k, v in store["spec"]["template"]["metadata"]["labels"].items() if k in service["spec"]["selector"]}
        url = env["MANDATE_REDIS"]["value"]
        assert url == f"redis://:$(MANDATE_REDIS_PASSWORD)@{service['metadata']['name']}.{NAMESPACE}.svc:6379/0"
        names = list(env)
        assert names.index("MANDATE_REDIS_PASSWORD") < names.index("MANDATE_REDIS")  # $(VAR) expands only earlier vars
        password_ref = env["MANDATE_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        redis_env = {item["name"]: item for item in store["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert redis_env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == password_ref
        assert store["spec"]["replicas"] == 1
    else:
        assert "MANDATE_REDIS" not in env and not internal and not several


# --- values the chart refuses -----------------------------------------------------------------


REFUSED = {
    "two replicas, no chain store": ({"redis": {"internal": {"enabled": False}}}, "/redis"),
    "two workers, no chain store": ({"replicaCount": 1, "mandate": {"workers": 2}, "redis": {"internal": {"enabled": False}}}, "/redis"),
    "autoscaling, no chain store": ({"replicaCount": 1, "autoscaling": {"enabled": True}, "redis": {"internal": {"enabled": False}}}, "/redis"),
    "autoscaling down to one": ({"autoscaling": {"enabled": True, "minReplicas": 1}}, "minReplicas"),
    "policies twice": ({"policies": {"existingConfigMap": "x", "files": {"a.yaml": "{}"}}}, "allOf"),
    "a policy file Mandate would not load": ({"policies": {"files": {"agents.txt": "{}"}}}, "agents.txt"),
    "an unknown Redis scheme": ({"redis": {"url": "http://redis:6379"}}, "/redis/url"),
    "a writable root filesystem": ({"securityContext": {"readOnlyRootFilesystem": False, "allowPrivilegeEscalation": False}}, "readOnlyRootFilesystem"),
    "root": ({"podSecurityContext": {"runAsNonRoot": False}}, "runAsNonRoot"),
    "a typo": ({"replicas": 3}, "replicas"),
    "an unknown gRPC server": ({"mandate": {"grpcServer": "tornado"}}, "grpcServer"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_the_schema_refuses(chart, case: str) -> None:
    values, where = REFUSED[case]
    with pytest.raises(helm.HelmValuesError, match=re.escape(where)):
        chart.render(values, name="mandate", namespace=NAMESPACE)


@pytest.mark.parametrize(("values", "message"), [
    ({"redis": {"internal": {"enabled": False}}}, "needs a shared chain store"),
    ({"replicaCount": 1, "mandate": {"workers": 3}, "redis": {"internal": {"enabled": False}}}, "workers > 1 needs a shared chain store"),
    ({"mandate": {"grpcPort": 9000, "metricsPort": 9000}}, "must differ"),
])
def test_the_templates_refuse_without_the_schema(tmp_path: Path, values: dict[str, Any], message: str) -> None:
    """`helm install --skip-schema-validation` still cannot deploy replicas without Redis."""
    copy = tmp_path / "mandate"
    shutil.copytree(CHART, copy)
    (copy / "values.schema.json").unlink()
    with helm.Chart.load(copy) as chart, pytest.raises(helm.HelmRenderError, match=message):
        chart.render(values, name="mandate", namespace=NAMESPACE)


# --- helm/examples ------------------------------------------------------------------------------


def test_the_extension_provider_example(chart) -> None:
    (provider,) = example_values("istiod-values.yaml")["meshConfig"]["extensionProviders"]
    grpc = provider["envoyExtAuthzGrpc"]
    objects, _ = render(chart, {})
    service = one(objects, "Service", "mandate")
    assert provider["name"] == "mandate"
    assert grpc["service"] == f"{service['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
    assert grpc["port"] == next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert grpc["timeout"] == "0.5s" and grpc["failOpen"] is False
    body = grpc["includeRequestBodyInCheck"]
    assert body == {"maxRequestBytes": 1048576, "allowPartialMessage": False, "packAsBytes": True}
    assert set(grpc) <= {"service", "port", "timeout", "failOpen", "statusOnError", "includeRequestBodyInCheck"}


def example_documents(name: str) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all((HELM_EXAMPLES / name).read_text()) if document]


def test_the_authorization_policy_examples() -> None:
    attachments = []
    for name in ("sidecar-authorizationpolicy.yaml", "waypoint-authorizationpolicy.yaml", "egress-gateway.yaml"):
        for document in example_documents(name):
            if document["kind"] != "AuthorizationPolicy":
                continue
            validate_authorization_policy(document)
            spec = document["spec"]
            assert spec["action"] == "CUSTOM" and spec["provider"] == {"name": "mandate"}
            if "selector" in spec:
                attachments.append(("selector", None))
            else:
                attachments.extend(("targetRefs", ref["kind"]) for ref in spec["targetRefs"])
    assert sorted(set(attachments), key=str) == sorted(
        {("selector", None), ("targetRefs", "Gateway"), ("targetRefs", "Service"), ("targetRefs", "ServiceEntry")}, key=str
    )


def test_the_egress_example_names_the_example_egress_target() -> None:
    policy = compile_directory(EXAMPLES)
    egress_targets = {name for name, target in policy.targets.items() if target.kind == "egress"}
    entries = [d for d in example_documents("egress-gateway.yaml") if d["kind"] == "ServiceEntry"]
    assert entries and {entry["metadata"]["name"] for entry in entries} <= egress_targets
    assert all(set(entry["spec"]["hosts"]) <= set(policy.egress_hosts) for entry in entries)


def test_the_ci_example_runs_the_real_commands() -> None:
    (job,) = yaml.safe_load((HELM_EXAMPLES / "policy-repo-ci.yaml").read_text())["jobs"].values()
    script = "\n".join(step.get("run", "") for step in job["steps"])
    assert "validate /policies" in script and "export istio --policies /policies" in script
    parser = build_parser()
    assert parser.parse_args(["validate", "/policies"]).command == "validate"
    assert parser.parse_args(["export", "istio", "--policies", "/policies"]).export_kind == "istio"


def test_the_service_monitor_scrapes_the_metrics_port(chart) -> None:
    objects, _ = render(chart, VARIANTS["hpa-and-monitoring"])
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service", "mandate")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()  # it selects Mandate's Service...
    redis_service = one(objects, "Service", "mandate-redis")
    assert not selector.items() <= redis_service["metadata"]["labels"].items()  # ...and not the trial Redis
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert endpoint["port"] == "http-metrics" and endpoint["path"] == "/metrics"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
