"""The Kubernetes manifests (deploy/k8s): both overlays rendered by `kubectl kustomize`,
validated offline against the Kubernetes API's schemas (kubernetes-validate, strict, pinned to
one version), and held to the policies kube-linter checks by default: non-root, read-only
root file system, no privilege escalation, capabilities dropped, resources set, probes on
real ports and paths, selectors that match, a PDB with an unhealthy-pod eviction policy, no
`latest` tag. Each policy check is also shown to catch a manifest that breaks it."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from models.config import load_config
from service.front.routes import router
from service.settings import Settings, fields
from tests.support.tools import REPO, tool_or_skip

K8S = REPO / "deploy" / "k8s"
KUBERNETES = "1.32.0"  # the oldest release whose API the manifests must fit
INSTALL = "https://kubernetes.io/docs/tasks/tools/ (kubectl, with kustomize built in)"
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}  # not in the core schemas
Doc = dict[str, Any]


def render(folder: Path) -> list[Doc]:
    kubectl = tool_or_skip("kubectl", INSTALL)
    run = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    return [d for d in yaml.safe_load_all(run.stdout) if d]


@pytest.fixture(scope="module", params=["cpu", "gpu"])
def overlay(request) -> tuple[str, list[Doc]]:
    return request.param, render(K8S / "overlays" / request.param)


def one(docs: list[Doc], kind: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind}"
    return found[0]


def pod_spec(docs: list[Doc]) -> Doc:
    return one(docs, "Deployment")["spec"]["template"]["spec"]


def containers(docs: list[Doc]) -> list[Doc]:
    spec = pod_spec(docs)
    return [*spec.get("initContainers", []), *spec["containers"]]


def env_of(docs: list[Doc], container: Doc) -> dict[str, str]:
    """What the container's environment holds: its ConfigMaps, then its literal values."""
    values: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        values.update(next(d for d in docs if d["metadata"]["name"] == name)["data"])
    values.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return values


# ---------------------------------------------------------------- the policies
def policy_failures(docs: list[Doc]) -> list[str]:
    """Every rule of kube-linter's defaults that these manifests could break, as messages."""
    failures = []
    spec = pod_spec(docs)
    pod_security = spec.get("securityContext", {})
    for c in containers(docs):
        security, name = c.get("securityContext", {}), c["name"]
        if not (security.get("runAsNonRoot") or pod_security.get("runAsNonRoot")):
            failures.append(f"{name}: may run as root")
        if security.get("readOnlyRootFilesystem") is not True:
            failures.append(f"{name}: writable root file system")
        if security.get("allowPrivilegeEscalation") is not False:
            failures.append(f"{name}: privilege escalation allowed")
        if security.get("privileged"):
            failures.append(f"{name}: privileged")
        if "ALL" not in security.get("capabilities", {}).get("drop", []):
            failures.append(f"{name}: capabilities not all dropped")
        for kind in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in c.get("resources", {}).get(kind, {}):
                    failures.append(f"{name}: no {resource} {kind}")
        image = c["image"]
        if image.endswith(":latest") or not re.search(r":[\w.-]+$|@sha256:", image):
            failures.append(f"{name}: image {image} has no fixed tag")
    failures += probe_failures(spec["containers"])
    failures += selector_failures(docs)
    pdb = one(docs, "PodDisruptionBudget")["spec"]
    if pdb.get("unhealthyPodEvictionPolicy") != "AlwaysAllow":
        failures.append("PDB: no unhealthyPodEvictionPolicy AlwaysAllow")
    if spec.get("automountServiceAccountToken") is not False:
        failures.append("pod: mounts a service account token it never uses")
    return failures


def probe_failures(serving: list[Doc]) -> list[str]:
    routes = {getattr(r, "path", None) for r in router.routes}
    failures = []
    for c in serving:
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            get = c.get(probe, {}).get("httpGet")
            if get is None:
                failures.append(f"{c['name']}: no {probe}")
                continue
            if get["port"] not in ports and get["port"] not in ports.values():
                failures.append(f"{c['name']}: {probe} on port {get['port']}, which it lacks")
            if get["path"] not in routes:
                failures.append(f"{c['name']}: {probe} on {get['path']}, not a route")
        if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
            failures.append(f"{c['name']}: readiness is not /readyz")
    return failures


def selector_failures(docs: list[Doc]) -> list[str]:
    deployment = one(docs, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]

    def selects(selector: dict[str, str]) -> bool:
        return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

    failures = []
    service = one(docs, "Service")
    if not selects(deployment["spec"]["selector"]["matchLabels"]):
        failures.append("Deployment: its selector misses its own pods")
    if not selects(service["spec"]["selector"]):
        failures.append("Service: its selector misses the pods")
    if not selects(one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"]):
        failures.append("PDB: its selector misses the pods")
    ports = {p["name"] for c in pod_spec(docs)["containers"] for p in c.get("ports", [])}
    if any(p["targetPort"] not in ports for p in service["spec"]["ports"]):
        failures.append("Service: a targetPort no container has")
    target = one(docs, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    if (target["kind"], target["name"]) != ("Deployment", deployment["metadata"]["name"]):
        failures.append("HPA: scales something else")
    anti = pod_spec(docs)["affinity"]["podAntiAffinity"]
    terms = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    if not all(selects(t["podAffinityTerm"]["labelSelector"]["matchLabels"]) for t in terms):
        failures.append("anti-affinity: its selector misses the pods")
    return failures


# ---------------------------------------------------------------- the tests
def test_the_overlays_validate_against_the_kubernetes_schemas(overlay):
    _name, docs = overlay
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "Namespace",
            "PodDisruptionBudget",
            "Secret",
            "Service",
            "ServiceAccount",
        ]
    )
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    assert one(docs, "HorizontalPodAutoscaler")["apiVersion"] == "autoscaling/v2"


def test_the_overlays_meet_the_policies(overlay):
    _name, docs = overlay
    assert policy_failures(docs) == []


@pytest.mark.parametrize(
    ("breaks", "failure"),
    [
        (
            lambda s: s["containers"][0]["securityContext"].pop("readOnlyRootFilesystem"),
            "writable root",
        ),
        (
            lambda s: s["initContainers"][0]["securityContext"].update(
                allowPrivilegeEscalation=True
            ),
            "privilege escalation",
        ),
        (lambda s: s["securityContext"].pop("runAsNonRoot"), "may run as root"),
        (
            lambda s: s["containers"][0]["securityContext"]["capabilities"].update(
                drop=["NET_RAW"]
            ),
            "not all dropped",
        ),
        (lambda s: s["containers"][0]["resources"]["limits"].pop("memory"), "no memory limits"),
        (lambda s: s["containers"][0].update(image="walrus-serve:latest"), "no fixed tag"),
        (
            lambda s: s["containers"][0]["livenessProbe"]["httpGet"].update(path="/health"),
            "not a route",
        ),
        (
            lambda s: s["containers"][0]["readinessProbe"]["httpGet"].update(port="metrics"),
            "which it lacks",
        ),
        (
            lambda s: s["template_labels"].update({"app.kubernetes.io/name": "other"}),
            "selector misses",
        ),
    ],
)
def test_each_policy_check_catches_a_manifest_that_breaks_it(breaks, failure):
    docs = copy.deepcopy(render(K8S / "overlays" / "cpu"))
    spec = pod_spec(docs)
    spec["template_labels"] = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    breaks(spec)
    del spec["template_labels"]
    assert any(failure in f for f in policy_failures(docs)), policy_failures(docs)


def test_the_pdb_check_catches_a_missing_eviction_policy():
    docs = render(K8S / "overlays" / "cpu")
    del one(docs, "PodDisruptionBudget")["spec"]["unhealthyPodEvictionPolicy"]
    assert policy_failures(docs) == ["PDB: no unhealthyPodEvictionPolicy AlwaysAllow"]


def test_shutdown_fits_the_grace_period_and_the_bundle_is_pulled_first(overlay):
    _name, docs = overlay
    spec = pod_spec(docs)
    serving = spec["containers"][0]
    env = env_of(docs, serving)
    pause = int(serving["lifecycle"]["preStop"]["exec"]["command"][-1])
    drain = float(env["WALRUS_FRONT__DRAIN_S"]) + float(env["WALRUS_FRONT__GRACEFUL_TIMEOUT_S"])
    assert spec["terminationGracePeriodSeconds"] > pause + drain
    pull = spec["initContainers"][0]
    assert pull["command"][:3] == ["walrus", "bundle", "pull"] and pull["image"] == serving["image"]
    assert env_of(docs, pull)["WALRUS_BUNDLE"].startswith("s3://")
    shared = {m["mountPath"] for m in pull["volumeMounts"]} & {
        m["mountPath"] for m in serving["volumeMounts"]
    }
    assert env["WALRUS_BUNDLE_CACHE"] in shared and pull["command"][4] == env["WALRUS_BUNDLE_CACHE"]
    names = {d["metadata"]["name"] for d in docs}
    refs = [
        e["valueFrom"]["secretKeyRef"]["name"]
        for c in containers(docs)
        for e in c.get("env", [])
        if "valueFrom" in e
    ]
    assert refs and set(refs) <= names and spec["serviceAccountName"] in names
    # The settings the pod gets are settings the service has (a typo fails here) and accepts.
    walrus_env = {k: str(v) for k, v in env.items() if k.startswith("WALRUS_")}
    assert set(walrus_env) <= {name for name, _ in fields()}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in walrus_env.items():
            patch.setenv(name, value)
        Settings()


def test_the_gpu_overlay_asks_for_one_gpu_and_the_gpu_image(overlay):
    name, docs = overlay
    serving = pod_spec(docs)["containers"][0]
    gpus = serving["resources"]["limits"].get("nvidia.com/gpu")
    if name == "gpu":
        assert gpus == 1 and "walrus-serve-gpu:" in serving["image"]
        assert env_of(docs, serving)["WALRUS_DEVICE"] == "cuda"
    else:
        assert gpus is None and "walrus-serve:" in serving["image"]


def with_component(name: str, tmp_path: Path) -> list[Doc]:
    """The cpu overlay with a component turned on (as its comment shows), copied to
    tmp_path: kustomize takes folders by relative path and files only from below the
    kustomization."""
    cpu = K8S / "overlays" / "cpu"
    shutil.copytree(cpu, tmp_path, dirs_exist_ok=True)
    overlay = yaml.safe_load((cpu / "kustomization.yaml").read_text())
    overlay["resources"] = [
        os.path.relpath(cpu / r, tmp_path) if (cpu / r).is_dir() else r
        for r in overlay["resources"]
    ]
    overlay["components"] = [os.path.relpath(K8S / "components" / name, tmp_path)]
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    return render(tmp_path)


def test_the_servicemonitor_component_scrapes_the_services_metrics(tmp_path):
    docs = with_component("prometheus", tmp_path)
    monitor = one(docs, "ServiceMonitor")
    service = one(docs, "Service")
    assert ("monitoring.coreos.com/v1", "ServiceMonitor") in CRDS
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert all(service["metadata"]["labels"].get(k) == v for k, v in selector.items())
    ports = {p["name"] for p in service["spec"]["ports"]}
    assert [(e["port"] in ports, e["path"]) for e in monitor["spec"]["endpoints"]] == [
        (True, "/metrics")
    ]


def test_the_retrain_component_is_a_valid_hardened_nightly_job(tmp_path):
    """The cpu overlay with `components: [../../components/retrain]`: a CronJob that pulls
    the serving bundle, retrains with the serving pods' settings (their Redis, their store)
    and publishes back to where they pull from."""
    docs = with_component("retrain", tmp_path)
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    job = one(docs, "CronJob")
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    spec = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    serving = pod_spec(docs)["containers"][0]
    for container in spec["initContainers"] + spec["containers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] and context["capabilities"]["drop"] == ["ALL"]
        assert container["envFrom"] == serving["envFrom"]  # the pods' Redis and store
        assert container["image"].startswith("registry.example.com/walrus/walrus-pipeline:")
    command = spec["containers"][0]["command"]
    assert command[:2] == ["walrus", "retrain"]
    assert command[command.index("--publish-to") + 1] == "$(WALRUS_BUNDLE)"
    assert command[command.index("--serving") + 1] == spec["initContainers"][0]["command"][4]
    [config] = [d for d in docs if d["metadata"]["name"].startswith("walrus-retrain-config")]
    toml = tmp_path / "pipeline.toml"
    toml.write_text(config["data"]["pipeline.toml"])
    assert load_config(toml).retrain.promote  # object storage takes a promotion only
