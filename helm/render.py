"""Render helm/mandate offline, as `helm template` would, with no helm binary and no cluster.

    python helm/render.py -f helm/mandate/values-trial.yaml [--set image.repository=...] [--validate]

Helm's own engine does the work (the helm-python-sdk package carries Helm's Go library,
the same the tests use), so the output is what `helm install` would apply: values.schema.json
checked, the templates' refusals included, `lookup` finding nothing (as on a first install,
so the chain key and the trial Redis' password are freshly generated on every run). With
--validate, every object is also checked against Kubernetes' schemas (kubernetes-validate),
for the chart's oldest Kubernetes and the newest the package knows. Both packages come with
`pip install -e '.[test]'`, or alone: `pip install helm-python-sdk kubernetes-validate pyyaml`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

CHART = Path(__file__).resolve().parent / "mandate"
OLDEST_KUBERNETES = "1.30.0"  # Chart.yaml's kubeVersion floor
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}  # no schema in kubernetes-validate


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of -f files and --set: maps merge key by key, anything else is replaced
    (null included: Helm then drops that key from the chart's defaults)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def user_values(files: list[Path], sets: list[str]) -> dict[str, Any]:
    """The values a user gives, in Helm's order: each -f file, then each --set (Helm's parser)."""
    values: dict[str, Any] = {}
    for path in files:
        values = merge(values, yaml.safe_load(path.read_text()) or {})
    for expression in sets:
        values = merge(values, helm.parse_set_string(expression))
    return values


def manifests(values: dict[str, Any], release: str, namespace: str) -> tuple[str, str]:
    """The rendered objects as one YAML stream, `# Source:` before each template, and the notes."""
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values, name=release, namespace=namespace, is_install=True)
    stream, notes = [], ""
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            notes = text
        elif text.strip():
            stream.append(f"---\n# Source: {path}\n{text.strip()}\n")
    return "".join(stream), notes


def validate(stream: str) -> int:
    """Check every object against Kubernetes' schemas; returns how many were checked."""
    import kubernetes_validate  # only for --validate

    checked = 0
    for item in yaml.safe_load_all(stream):
        if not item or (item["apiVersion"], item["kind"]) in CRD_KINDS:
            continue
        for version in (OLDEST_KUBERNETES, kubernetes_validate.latest_version()):
            kubernetes_validate.validate(item, version, strict=True)
        checked += 1
    return checked


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("-f", "--values", type=Path, action="append", default=[], help="a values file (repeatable)")
    cli.add_argument("--set", action="append", default=[], help="key=value, as helm --set (repeatable)")
    cli.add_argument("--release", default="mandate", help="release name (default: mandate)")
    cli.add_argument("-n", "--namespace", default="mandate-system", help="namespace (default: mandate-system)")
    cli.add_argument("--notes", action="store_true", help="print NOTES.txt after the objects, on stderr")
    cli.add_argument("--validate", action="store_true", help="check every object against Kubernetes' schemas")
    return cli


def main(argv: list[str] | None = None) -> int:
    """Print the manifests on stdout; on refused values, Helm's message on stderr and exit 1."""
    options = parser().parse_args(argv)
    try:
        stream, notes = manifests(user_values(options.values, options.set), options.release, options.namespace)
    except helm.HelmError as error:
        print(f"render: {error}", file=sys.stderr)
        return 1
    sys.stdout.write(stream)
    if options.notes:
        print(notes, file=sys.stderr)
    if options.validate:
        print(
            f"render: {validate(stream)} objects valid for Kubernetes {OLDEST_KUBERNETES} and latest", file=sys.stderr
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
