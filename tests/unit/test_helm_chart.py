"""helm/mandate rendered and linted by Helm's own engine (helm-python-sdk carries Helm's Go
library), every object checked against Kubernetes' schemas (kubernetes-validate), and the
wiring that matters asserted: probes on the port Mandate serves, the ConfigMap where
--policies points, the Secret behind --chain-key, security context, replicas, PDB, Redis,
the image reference, and who the NetworkPolicies let in (evaluated for sample pods).
The Istio examples in helm/examples/ and the offline renderer helm/render.py are checked too.
"""

from __future__ import annotations

import base64
import io
import re
import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from authz.chains.tokens import ChainKeys
from authz.cli import build_parser
from authz.policy.compiler import compile_directory
from tests.harness.example_policies import EXAMPLES, REPO
from tests.harness.istio import validate_authorization_policy

CHART = REPO / "helm" / "mandate"
HELM_EXAMPLES = REPO / "helm" / "examples"
TRIAL = yaml.safe_load((CHART / "values-trial.yaml").read_text())
NAMESPACE = "mandate-system"
# The chart's kubeVersion floor and the newest schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
# Kinds from CRDs that kubernetes-validate has no schema for; checked by hand below.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def example_values(name: str) -> dict[str, Any]:
    return yaml.safe_load((HELM_EXAMPLES / name).read_text())


def example_policy_files() -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted(EXAMPLES.glob("*.yaml"))}


# Every documented way to install the chart (values.yaml's comments, helm/README.md). The
# defaults alone are refused (two replicas need a chain store: test_the_defaults_ask_for_a_chain_store).
VARIANTS: dict[str, dict[str, Any]] = {
    "trial": TRIAL,
    "example-policies": {**TRIAL, "policies": {"files": example_policy_files()}},
    "production": example_values("values-production.yaml"),
    "dev": example_values("values-dev.yaml"),
    "workers": example_values("values-workers.yaml"),
    "redis-url": {"redis": {"url": "rediss://mandate:secret@redis.example:6380/0"}},
    "redis-cluster-url": {"redis": {"url": "rediss+cluster://redis-cluster.redis.svc:6379"}, "replicaCount": 3},
    "existing-secrets": {
        **TRIAL,
        "chainKey": {"existingSecret": "keys", "secretKey": "hmac"},
        "policies": {"existingConfigMap": "profiles"},
    },
    "hpa-and-monitoring": {**TRIAL, "autoscaling": {"enabled": True}, "serviceMonitor": {"enabled": True}},
    "custom-ports-and-paths": {
        **TRIAL,
        "mandate": {
            "grpcPort": 19191,
            "metricsPort": 19090,
            "policiesPath": "/srv/profiles",
            "chainKeyDir": "/run/keys",
        },
    },
    "ambient": {**TRIAL, "networkPolicy": {"ambient": {"enabled": True}}},
    "credentials": {
        **TRIAL,
        "credentials": [
            {"secretName": "team-a-openai", "mountPath": "/var/run/secrets/team-a"},
            {"secretName": "team-b-openai", "mountPath": "/var/run/secrets/team-b"},
        ],
    },
    "no-network-policy": {"replicaCount": 1, "networkPolicy": {"enabled": False}},
    "image-by-digest": {
        "replicaCount": 1,
        "image": {"repository": "ghcr.io/example/mandate", "digest": "sha256:" + "ab" * 32},
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
    return next(
        d
        for d in by_kind(objects, "Deployment")
        if d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "authorizer"
    )


def serve_args(container: dict[str, Any]):
    """The container's command line, parsed by Mandate's own argument parser."""
    assert container["command"] == ["mandate"] and container["args"][0] == "serve"
    return build_parser().parse_args(container["args"])


# --- Helm: render and lint ------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_lint_is_clean(variant: str) -> None:
    report = helm.lint(CHART, VARIANTS[variant], strict=True, namespace=NAMESPACE, kube_version="v1.30.0")
    assert report["errors"] == []
    assert [
        m for m in report["messages"] if m["severity"] >= 2
    ] == []  # 2 warning, 3 error; 1 (info): "icon is recommended"


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


def test_the_defaults_ask_for_a_chain_store(chart) -> None:
    """Two replicas by default, and no Redis unless asked for: the install stops and says what to set."""
    with pytest.raises(helm.HelmRenderError, match="needs a chain store") as refused:
        chart.render({}, name="mandate", namespace=NAMESPACE)
    for choice in ("redis.url", "redis.existingSecret", "-f helm/mandate/values-trial.yaml", "replicaCount=1"):
        assert choice in str(refused.value), choice


def test_the_trial_file_only_turns_on_the_trial_redis() -> None:
    assert TRIAL == {"redis": {"internal": {"enabled": True}}}
    assert yaml.safe_load((CHART / "values.yaml").read_text())["redis"]["internal"]["enabled"] is False


def test_the_trial_install(chart) -> None:
    objects, notes = render(chart, TRIAL)
    kinds = sorted(item["kind"] for item in objects)
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "Deployment",
            "NetworkPolicy",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Secret",
            "Secret",
            "Service",
            "Service",
            "ServiceAccount",
        ]
    )
    deployment = mandate_deployment(objects)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    args = serve_args(deployment["spec"]["template"]["spec"]["containers"][0])
    assert args.workers == "auto" and args.grpc_server == "core" and args.chain_store_timeout == 0.25
    # The trial Redis is labelled as such, in the objects and in the notes.
    redis = one(objects, "Deployment", "mandate-redis")
    assert "not-for-production" in " ".join(redis["metadata"]["annotations"])
    assert "FOR TRIALS ONLY" in notes
    # The notes carry the Istio wiring for this release.
    for needle in (
        "service: mandate.mandate-system.svc.cluster.local",
        "port: 9191",
        "timeout: 0.5s",
        "failOpen: false",
        "maxRequestBytes",
        "allowPartialMessage: false",
        "action: CUSTOM",
        "targetRefs",
        "mandate export istio",
    ):
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


def test_each_credential_secret_is_mounted_whole_where_policies_read_it(chart) -> None:
    """`{secret:PATH}` files: a subPath mount never sees a rotated Secret, so each is mounted whole."""
    objects, _ = render(chart, VARIANTS["credentials"])
    pod = mandate_deployment(objects)["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    for credential in VARIANTS["credentials"]["credentials"]:
        mount = mounts[credential["mountPath"]]
        assert mount["readOnly"] is True and "subPath" not in mount
        secret = volumes[mount["name"]]["secret"]
        assert secret["secretName"] == credential["secretName"] and "items" not in secret


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
    keys = {one(render(chart, TRIAL)[0], "Secret", "mandate-chain-key")["data"]["chain.key"] for _ in range(3)}
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
    several = (
        values.get("replicaCount", 2) > 1
        or values.get("autoscaling", {}).get("enabled")
        or values.get("mandate", {}).get("workers", "auto") not in ("auto", 1)
    )
    if redis.get("url"):
        assert env["MANDATE_REDIS"]["value"] == redis["url"] and not internal
    elif redis.get("existingSecret"):
        assert env["MANDATE_REDIS"]["valueFrom"]["secretKeyRef"] == {
            "name": redis["existingSecret"],
            "key": redis.get("existingSecretKey", "url"),
        }
        assert not internal
    elif redis.get("internal", {}).get("enabled", False):
        (store,) = internal
        service = one(objects, "Service", store["metadata"]["name"])
        assert service["spec"]["selector"] == {
            k: v for k, v in store["spec"]["template"]["metadata"]["labels"].items() if k in service["spec"]["selector"]
        }
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
    "autoscaling down to one": ({"autoscaling": {"enabled": True, "minReplicas": 1}}, "minReplicas"),
    "policies twice": ({"policies": {"existingConfigMap": "x", "files": {"a.yaml": "{}"}}}, "allOf"),
    "a policy file Mandate would not load": ({"policies": {"files": {"agents.txt": "{}"}}}, "agents.txt"),
    "an unknown Redis scheme": ({"redis": {"url": "http://redis:6379"}}, "/redis/url"),
    "a writable root filesystem": (
        {"securityContext": {"readOnlyRootFilesystem": False, "allowPrivilegeEscalation": False}},
        "readOnlyRootFilesystem",
    ),
    "root": ({"podSecurityContext": {"runAsNonRoot": False}}, "runAsNonRoot"),
    "a typo": ({"replicas": 3}, "replicas"),
    "an unknown gRPC server": ({"mandate": {"grpcServer": "tornado"}}, "grpcServer"),
    # the image: fully qualified, without a tag or digest in the repository
    "a bare image name": ({"image": {"repository": "mandate"}}, "/image/repository"),
    "a Docker Hub short name": ({"image": {"repository": "platform/mandate"}}, "/image/repository"),
    "a tag inside the repository": (
        {"image": {"repository": "registry.example.com/platform/mandate:0.1.0"}},
        "/image/repository",
    ),
    "a digest inside the repository": (
        {"image": {"repository": "ghcr.io/x/mandate@sha256:" + "0" * 64}},
        "/image/repository",
    ),
    "a tag with a slash": ({"image": {"tag": "v1/evil"}}, "/image/tag"),
    "a short digest": ({"image": {"digest": "sha256:abc"}}, "/image/digest"),
    "a short Redis image name": (
        {"redis": {"internal": {"enabled": True, "image": {"repository": "redis", "tag": "7"}}}},
        "/redis/internal/image/repository",
    ),
    # the NetworkPolicy: an empty peer would admit everyone
    "an empty peer": ({"networkPolicy": {"grpcFrom": {"anyone": {}}}}, "/networkPolicy/grpcFrom/anyone"),
    "a misspelt peer": ({"networkPolicy": {"grpcFrom": {"sidecars": {"podSelecter": {}}}}}, "podSelecter"),
    "an unknown selector operator": (
        {
            "networkPolicy": {
                "metricsFrom": {"p": {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Is"}]}}}
            }
        },
        "operator",
    ),
    "a probe address that is not a CIDR": (
        {"networkPolicy": {"ambient": {"kubeletProbeCIDRs": ["kubelet"]}}},
        "kubeletProbeCIDRs",
    ),
    "a typo in networkPolicy": ({"networkPolicy": {"enable": True}}, "enable"),
    "a credential mounted at a relative path": (
        {**TRIAL, "credentials": [{"secretName": "key", "mountPath": "secrets/key"}]},
        "mountPath",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_the_schema_refuses(chart, case: str) -> None:
    values, where = REFUSED[case]
    with pytest.raises(helm.HelmValuesError, match=re.escape(where)):
        chart.render(values, name="mandate", namespace=NAMESPACE)


TEMPLATE_REFUSALS = [
    ({}, "needs a chain store"),
    ({"replicaCount": 1, "autoscaling": {"enabled": True}}, "needs a chain store"),
    ({"replicaCount": 1, "mandate": {"workers": 3}}, "workers > 1 needs a shared chain store"),
    ({**TRIAL, "mandate": {"grpcPort": 9000, "metricsPort": 9000}}, "must differ"),
    (
        {
            **TRIAL,
            "networkPolicy": {
                "grpcFrom": {"sidecars": None, "waypoints": None, "gatewayApiGateways": None, "gateways": None}
            },
        },
        "grpcFrom admits no one",
    ),
]


@pytest.mark.parametrize(("values", "message"), TEMPLATE_REFUSALS)
def test_the_templates_refuse(chart, values: dict[str, Any], message: str) -> None:
    """What the schema cannot say (or says less helpfully) the templates refuse, with what to set."""
    with pytest.raises(helm.HelmRenderError, match=message):
        chart.render(values, name="mandate", namespace=NAMESPACE)


@pytest.mark.parametrize(("values", "message"), TEMPLATE_REFUSALS)
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
    objects, _ = render(chart, TRIAL)
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
        {("selector", None), ("targetRefs", "Gateway"), ("targetRefs", "Service"), ("targetRefs", "ServiceEntry")},
        key=str,
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


# --- the image ------------------------------------------------------------------------------------


def container_images(objects: list[dict[str, Any]]) -> dict[str, str]:
    return {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["image"]
        for d in by_kind(objects, "Deployment")
    }


@pytest.mark.parametrize(
    ("image", "reference"),
    [
        ({}, "registry.example.com/platform/mandate:0.1.0"),  # the placeholder, at the chart's appVersion
        ({"repository": "ghcr.io/acme/mandate"}, "ghcr.io/acme/mandate:0.1.0"),
        (
            {"repository": "registry.internal:5000/sec/mandate", "tag": "0.1.0-rc.1"},
            "registry.internal:5000/sec/mandate:0.1.0-rc.1",
        ),
        (
            {"repository": "ghcr.io/acme/mandate", "tag": "ignored", "digest": "sha256:" + "ab" * 32},
            "ghcr.io/acme/mandate@sha256:" + "ab" * 32,
        ),
        (
            {"repository": "docker.io/library/mandate", "tag": "dev"},
            "docker.io/library/mandate:dev",
        ),  # kind load docker-image
    ],
)
def test_the_image_reference_is_repository_and_tag(chart, image: dict[str, str], reference: str) -> None:
    objects, _ = render(chart, {**TRIAL, "image": image})
    assert container_images(objects) == {"mandate": reference, "mandate-redis": "docker.io/library/redis:7.4-alpine"}
    assert yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"] == "0.1.0"


def test_the_notes_flag_the_placeholder_registry(chart) -> None:
    _, notes = render(chart, TRIAL)
    assert "image.repository is the placeholder registry.example.com/platform/mandate" in notes
    _, notes = render(chart, {**TRIAL, "image": {"repository": "ghcr.io/acme/mandate"}})
    assert "placeholder" not in notes


# --- the trial Redis: absent unless asked for -------------------------------------------------


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_trial_redis_only_with_the_trial_file(chart, variant: str) -> None:
    objects, notes = render(chart, VARIANTS[variant])
    redis = sorted((item["kind"], item["metadata"]["name"]) for item in objects if "redis" in item["metadata"]["name"])
    if VARIANTS[variant].get("redis", {}).get("internal", {}).get("enabled"):
        wanted = [("Deployment", "mandate-redis"), ("Secret", "mandate-redis"), ("Service", "mandate-redis")]
        if VARIANTS[variant].get("networkPolicy", {}).get("enabled", True):
            wanted.append(("NetworkPolicy", "mandate-redis"))
        assert redis == sorted(wanted) and "FOR TRIALS ONLY" in notes
    else:
        assert redis == [] and "FOR TRIALS ONLY" not in notes


# --- the NetworkPolicies, evaluated for sample pods ---------------------------------------------


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector's verdict on a set of labels ({} selects everything)."""
    selector = selector or {}
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    verdicts = {
        "In": lambda key, values: labels.get(key) in values,
        "NotIn": lambda key, values: labels.get(key) not in values,
        "Exists": lambda key, values: key in labels,
        "DoesNotExist": lambda key, values: key not in labels,
    }
    return all(verdicts[e["operator"]](e["key"], e.get("values", [])) for e in selector.get("matchExpressions", []))


def peer_admits(peer: dict[str, Any], namespace: str, labels: dict[str, str], ip: str, home: str) -> bool:
    """One `from` entry: an ipBlock, or pods by namespace (the policy's own if unsaid) and labels."""
    if "ipBlock" in peer:
        return ip_in(ip, peer["ipBlock"]["cidr"])
    if "namespaceSelector" in peer:
        in_namespace = selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace})
    else:
        in_namespace = namespace == home
    return in_namespace and selects(peer.get("podSelector"), labels)


def ip_in(ip: str, cidr: str) -> bool:
    import ipaddress

    return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr)


def admitted(
    objects: list[dict[str, Any]], target: str, port: int, namespace: str, labels: dict[str, str], ip: str = "10.1.2.3"
) -> bool:
    """Whether a connection from a pod (or an address) reaches Deployment `target`'s pods on `port`,
    by the rendered NetworkPolicies that select those pods (none selecting them: everything does)."""
    pod = one(objects, "Deployment", target)["spec"]["template"]
    named = {p["name"]: p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
    policies = [
        p for p in by_kind(objects, "NetworkPolicy") if selects(p["spec"]["podSelector"], pod["metadata"]["labels"])
    ]
    if not policies:
        return True
    for policy in policies:
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        for rule in policy["spec"].get("ingress", []):
            ports = [named.get(p["port"], p["port"]) for p in rule["ports"]]
            assert rule["from"], "a rule without `from` admits every source"
            if port in ports and any(peer_admits(peer, namespace, labels, ip, NAMESPACE) for peer in rule["from"]):
                return True
    return False


SIDECAR = {"app": "github-mcp", "security.istio.io/tlsMode": "istio", "service.istio.io/canonical-name": "github-mcp"}
WAYPOINT = {
    "gateway.networking.k8s.io/gateway-name": "waypoint",
    "gateway.networking.k8s.io/gateway-class-name": "istio-waypoint",
    "gateway.istio.io/managed": "istio.io-mesh-controller",
}
INGRESS_GATEWAY = {"app": "istio-ingressgateway", "istio": "ingressgateway"}
EGRESS_GATEWAY = {"app": "istio-egressgateway", "istio": "egressgateway"}
GATEWAY_API = {
    "gateway.networking.k8s.io/gateway-name": "public",
    "gateway.networking.k8s.io/gateway-class-name": "istio",
}
AUTHORIZER = {
    "app.kubernetes.io/name": "mandate",
    "app.kubernetes.io/instance": "mandate",
    "app.kubernetes.io/component": "authorizer",
}

# (who, namespace, labels) -> may it reach Mandate's gRPC port, its metrics port, the trial Redis?
CALLERS = [
    ("a sidecar", "tools", SIDECAR, (True, False, False)),
    ("an ambient waypoint", "tools", WAYPOINT, (True, False, False)),
    ("the ingress gateway", "istio-system", INGRESS_GATEWAY, (True, False, False)),
    ("the egress gateway", "istio-system", EGRESS_GATEWAY, (True, False, False)),
    ("a Gateway API gateway", "ingress", GATEWAY_API, (True, False, False)),
    ("Prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"}, (False, True, False)),
    ("Mandate", NAMESPACE, AUTHORIZER, (False, False, True)),
    ("a pod without a sidecar", "tools", {"app": "github-mcp"}, (False, False, False)),
    ("a gateway look-alike outside istio-system", "tools", INGRESS_GATEWAY, (False, False, False)),
    ("another pod beside Mandate", NAMESPACE, {"app": "debug"}, (False, False, False)),
    (
        "the trial Redis itself",
        NAMESPACE,
        {
            "app.kubernetes.io/name": "mandate",
            "app.kubernetes.io/instance": "mandate",
            "app.kubernetes.io/component": "chain-store",
        },
        (False, False, False),
    ),
]


@pytest.mark.parametrize(("who", "namespace", "labels", "expected"), CALLERS, ids=[c[0] for c in CALLERS])
def test_who_reaches_mandate_and_redis(
    chart, who: str, namespace: str, labels: dict[str, str], expected: tuple[bool, bool, bool]
) -> None:
    objects, _ = render(chart, TRIAL)
    grpc, metrics, redis = expected
    # ...and no other port: no HBONE (15008) outside ambient mode, no sidecar ports (15020, 15090)
    for target, port, reaches in [
        ("mandate", 9191, grpc),
        ("mandate", 9090, metrics),
        ("mandate-redis", 6379, redis),
        ("mandate", 15008, False),
        ("mandate", 15020, False),
        ("mandate", 15090, False),
    ]:
        assert admitted(objects, target, port, namespace, labels) is reaches, (who, target, port)


def test_ambient_admits_hbone_and_kubelet_probes(chart) -> None:
    objects, _ = render(chart, VARIANTS["ambient"])
    assert admitted(objects, "mandate", 15008, "tools", WAYPOINT)
    assert admitted(objects, "mandate-redis", 15008, NAMESPACE, AUTHORIZER)
    assert not admitted(objects, "mandate", 15008, "tools", {"app": "github-mcp"})
    assert admitted(objects, "mandate", 9191, "", {}, ip="169.254.7.127")  # kubelet's gRPC probe, SNATed by istio-cni
    assert not admitted(objects, "mandate", 9191, "", {}, ip="10.1.2.3")
    assert admitted(objects, "mandate-redis", 6379, "", {}, ip="169.254.7.127")
    objects, _ = render(chart, TRIAL)
    assert not admitted(objects, "mandate", 15008, "tools", WAYPOINT)
    assert not admitted(objects, "mandate", 9191, "", {}, ip="169.254.7.127")


def test_the_peers_are_configurable(chart) -> None:
    values = {
        **TRIAL,
        "networkPolicy": {
            "grpcFrom": {
                "gateways": None,
                "sidecars": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "tools"}},
                    "podSelector": {"matchLabels": {"security.istio.io/tlsMode": "istio"}},
                },
            },
            "metricsFrom": {
                "monitoring": None,
                "otel": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "otel"}}},
            },
            "extraIngress": [
                {
                    "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
                    "ports": [{"port": 15020, "protocol": "TCP"}],
                }
            ],
        },
    }
    objects, _ = render(chart, values)
    assert admitted(objects, "mandate", 9191, "tools", SIDECAR) and not admitted(
        objects, "mandate", 9191, "billing", SIDECAR
    )
    assert not admitted(objects, "mandate", 9191, "istio-system", INGRESS_GATEWAY)  # dropped with null
    assert admitted(objects, "mandate", 9191, "tools", WAYPOINT)  # the defaults not overridden stay
    assert admitted(objects, "mandate", 9090, "otel", {}) and not admitted(objects, "mandate", 9090, "monitoring", {})
    assert admitted(objects, "mandate", 15020, "monitoring", {})  # Istio's merged metrics, by extraIngress
    objects, _ = render(chart, {**TRIAL, "networkPolicy": {"metricsFrom": {"monitoring": None}}})
    assert not admitted(objects, "mandate", 9090, "monitoring", {})  # no one scrapes: no rule, not an open one


def test_without_network_policy_nothing_is_rendered(chart) -> None:
    objects, notes = render(chart, VARIANTS["no-network-policy"])
    assert by_kind(objects, "NetworkPolicy") == [] and "NetworkPolicy" not in notes


# --- helm/render.py: the chart rendered offline ---------------------------------------------------


def renderer():
    import importlib.util

    spec = importlib.util.spec_from_file_location("helm_render", REPO / "helm" / "render.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_renderer(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = renderer().main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_the_renderer_prints_what_helm_would_install(chart) -> None:
    code, out, err = run_renderer(
        "-f",
        str(CHART / "values-trial.yaml"),
        "--set",
        "image.repository=ghcr.io/acme/mandate,image.tag=1.2.3",
        "--validate",
        "--notes",
    )
    assert code == 0, err
    printed = [item for item in yaml.safe_load_all(out) if item]
    expected, _ = render(chart, {**TRIAL, "image": {"repository": "ghcr.io/acme/mandate", "tag": "1.2.3"}})
    assert sorted((o["kind"], o["metadata"]["name"]) for o in printed) == sorted(
        (o["kind"], o["metadata"]["name"]) for o in expected
    )
    assert container_images(printed)["mandate"] == "ghcr.io/acme/mandate:1.2.3"
    for template in ("deployment.yaml", "networkpolicy.yaml", "redis.yaml", "service.yaml"):
        assert f"# Source: mandate/templates/{template}\n" in out, template
    assert "objects valid for Kubernetes 1.30.0" in err and "Wire it into Istio" in err


def test_the_renderer_reports_what_helm_refuses() -> None:
    code, out, err = run_renderer()
    assert code == 1 and out == "" and "needs a chain store" in err and "values-trial.yaml" in err
    code, _, err = run_renderer("--set", "replicaCount=1", "--set", "image.repository=mandate")
    assert code == 1 and "/image/repository" in err


def test_the_renderer_merges_values_as_helm_does(tmp_path: Path) -> None:
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("redis: {internal: {enabled: true}}\nnetworkPolicy: {grpcFrom: {gateways: null}}\n")
    second.write_text("redis: {url: redis://r:6379/0}\nreplicaCount: 3\n")
    values = renderer().user_values([first, second], ["replicaCount=4", "mandate.workers=2"])
    assert values == {
        "redis": {"internal": {"enabled": True}, "url": "redis://r:6379/0"},
        "networkPolicy": {"grpcFrom": {"gateways": None}},
        "replicaCount": 4,
        "mandate": {"workers": 2},
    }
