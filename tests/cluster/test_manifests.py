"""The top-level ``cluster/`` kustomize folders: every listed resource loads and validates.

Built-in kinds are validated against the Kubernetes API schemas that the ``kubernetes-validate``
package ships (strict: unknown fields fail); Ray kinds with raymlp's validator; custom kinds of
other operators (the Prometheus Operator's PodMonitor) are only allowed from a short list.
Where ``kubectl`` is installed, ``kubectl kustomize`` also builds each local folder.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from raymlp.cluster import is_ray_resource, validate_manifest

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
K8S_VERSION = "1.32.0"  # the oldest Kubernetes version KubeRay v1.7.0 is tested with here
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "PodMonitor")}
KUSTOMIZATIONS = sorted(p.parent for p in CLUSTER.rglob("kustomization.yaml"))


def load_kustomization(folder: Path) -> tuple[list[dict], list[str]]:
    """The documents a kustomization lists (recursively) and its remote references."""
    kust = yaml.safe_load((folder / "kustomization.yaml").read_text())
    assert kust["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and kust["kind"] == "Kustomization"
    docs, remote = [], []
    for res in kust.get("resources", []):
        if "://" in res or res.startswith("github.com/"):
            remote.append(res)
            continue
        path = (folder / res).resolve()
        assert path.exists(), f"{folder}/kustomization.yaml lists {res}, which does not exist"
        if path.is_dir():
            sub_docs, sub_remote = load_kustomization(path)
            docs += sub_docs
            remote += sub_remote
        else:
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for gen in kust.get("secretGenerator", []):
        pairs = dict(item.split("=", 1) for item in gen.get("literals", []))
        docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": gen["name"]}, "stringData": pairs})
    for gen in kust.get("configMapGenerator", []):
        data = {Path(f).name: (folder / f).read_text() for f in gen.get("files", [])}
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data})
    return docs, remote


def _check(doc: dict) -> str:
    key = (doc.get("apiVersion"), doc.get("kind"))
    if is_ray_resource(doc):
        assert validate_manifest(doc) == []
        return "ray"
    if key in CUSTOM_KINDS:
        return "custom"
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    return "builtin"


def test_every_folder_has_a_kustomization():
    names = {str(p.relative_to(CLUSTER)) for p in KUSTOMIZATIONS}
    assert {"operator", "team/base", "team/overlays/team-a", "mlflow", "monitoring"} <= names


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(CLUSTER)))
def test_every_listed_resource_loads_and_validates(folder):
    docs, remote = load_kustomization(folder)
    kinds = [_check(d) for d in docs]
    assert docs or remote
    if folder.name == "operator":
        assert remote == ["https://github.com/ray-project/kuberay/ray-operator/config/default?ref=v1.7.0"]
    assert kinds.count("builtin") + kinds.count("custom") + kinds.count("ray") == len(docs)


def test_a_schema_violation_is_caught():
    bad = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"}, "spec": {"hardd": {}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_team_namespace_has_quota_limits_and_gpu_budget():
    docs, _ = load_kustomization(CLUSTER / "team" / "base")
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    hard = by_kind["ResourceQuota"][0]["spec"]["hard"]
    assert {"requests.cpu", "requests.memory", "requests.nvidia.com/gpu"} <= set(hard)
    assert by_kind["LimitRange"][0]["spec"]["limits"][0]["default"]
    assert {"Namespace", "ServiceAccount", "Role", "RoleBinding"} <= set(by_kind)


def test_network_policies_deny_by_default_and_allow_dns_and_mlflow():
    docs, _ = load_kustomization(CLUSTER / "team" / "base")
    policies = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    deny = policies["default-deny"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    dns_ports = {(p["protocol"], p["port"]) for p in policies["allow-dns"]["egress"][0]["ports"]}
    assert dns_ports == {("UDP", 53), ("TCP", 53)}
    mlflow = policies["allow-mlflow"]["egress"][0]
    assert mlflow["to"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "mlflow"}
    assert mlflow["ports"] == [{"protocol": "TCP", "port": 5000}]
    # ... and the MLflow Service really listens there with that label.
    ml_docs, _ = load_kustomization(CLUSTER / "mlflow")
    svc = next(d for d in ml_docs if d["kind"] == "Service" and d["metadata"]["name"] == "mlflow")
    assert svc["spec"]["ports"][0]["port"] == 5000
    assert svc["spec"]["selector"] == mlflow["to"][0]["podSelector"]["matchLabels"]


def test_team_role_only_touches_ray_resources_and_reads_pods():
    docs, _ = load_kustomization(CLUSTER / "team" / "base")
    role = next(d for d in docs if d["kind"] == "Role")
    writes = [r for r in role["rules"] if set(r["verbs"]) - {"get", "list", "watch"}]
    assert writes == [r for r in role["rules"] if r["apiGroups"] == ["ray.io"] and "rayjobs" in r["resources"]]
    assert set(writes[0]["resources"]) == {"rayclusters", "rayjobs", "rayservices"}
    assert not any("secrets" in r["resources"] or "*" in r["verbs"] for r in role["rules"])
    binding = next(d for d in docs if d["kind"] == "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


def test_mlflow_uses_postgres_and_an_s3_artifact_store():
    docs, _ = load_kustomization(CLUSTER / "mlflow")
    server = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "mlflow")
    args = " ".join(server["spec"]["template"]["spec"]["containers"][0]["args"])
    assert "--backend-store-uri \"postgresql://" in args and "--artifacts-destination s3://" in args
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "StatefulSet"} == {"postgres", "minio"}


def test_grafana_dashboard_is_json_and_queries_ray_metrics():
    dashboard = json.loads((CLUSTER / "monitoring" / "ray-cluster-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert exprs and all("ray_" in e for e in exprs)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with built-in kustomize) is not installed")
@pytest.mark.parametrize("folder", [p for p in KUSTOMIZATIONS if p.name != "operator"],
                         ids=lambda p: str(p.relative_to(CLUSTER)))
def test_kubectl_kustomize_builds_and_the_output_validates(folder):
    # The operator folder is remote (GitHub) and there is no network here, so it is not built.
    built = subprocess.run(["kubectl", "kustomize", str(folder)], check=False, capture_output=True, text=True,
                           timeout=60)
    assert built.returncode == 0, built.stderr
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    assert docs and all(_check(d) for d in docs)
    if folder.name == "team-a":
        names = {(d["kind"], d["metadata"]["name"]) for d in docs}
        assert ("Namespace", "team-a") in names
        assert all(d["metadata"].get("namespace") == "team-a" for d in docs if d["kind"] != "Namespace")
        quota = next(d for d in docs if d["kind"] == "ResourceQuota")
        assert quota["spec"]["hard"]["requests.nvidia.com/gpu"] == "16"
