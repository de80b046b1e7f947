"""The shipped deployment files: Kubernetes manifests valid against the API schemas (`kubernetes-validate`,
strict) and consistent with Corral (gRPC probes on the gRPC port and service, a grace period that covers
the drain, a PodDisruptionBudget selecting the Deployment's pods); the nginx config accepted by `nginx -t`."""

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import yaml

from tests.mesh.nginx import SHIPPED, Nginx, free_port

K8S = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"


def documents() -> list[dict]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_manifests_validate_strictly():
    docs = documents()
    assert {d["kind"] for d in docs} == {"Deployment", "Service", "PodDisruptionBudget"}
    for doc in docs:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_manifests_fit_corral():
    docs = documents()
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert pod["terminationGracePeriodSeconds"] >= float(env["CORRAL_DRAIN_SECONDS"])
    assert env["CORRAL_PULL_ON_DEMAND"] == "1"
    assert f"0.0.0.0:{ports['grpc']}" in container["args"]
    assert env["CORRAL_METRICS_ADDRESS"].endswith(f":{ports['metrics']}")
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["grpc"]["port"] == ports["grpc"]
    assert container["readinessProbe"]["grpc"]["service"] == "ollama.v1.Ollama"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for doc in docs:
        selector = doc["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        assert selector.items() <= labels.items(), doc["metadata"]["name"]
    pdb = next(d for d in docs if d["kind"] == "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] < deployment["spec"]["replicas"]


def test_validator_rejects_a_broken_manifest():
    deployment = next(d for d in documents() if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["port"] = "grpc"
    try:
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)
    except kubernetes_validate.ValidationError:
        return
    raise AssertionError("a grpc probe with a named port passed validation")


def test_nginx_accepts_the_shipped_config(tmp_path):
    text = SHIPPED.read_text()
    for directive in ("hash $http_x_ollama_model consistent;", "grpc_pass grpc://corral_grpc;",
                      "grpc_next_upstream error timeout invalid_header non_idempotent;", "max_fails=", "fail_timeout="):
        assert directive in text
    nginx = Nginx(tmp_path, [free_port(), free_port()])
    nginx.start()  # runs `nginx -t` on the rendered config first
    nginx.stop()
    out = subprocess.run([shutil.which("nginx") or "/usr/sbin/nginx", "-V"], capture_output=True, text=True)
    assert "without-http_grpc_module" not in out.stderr
