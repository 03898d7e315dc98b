"""Fixtures of the real-control-plane suite: etcd + kube-apiserver + kube-controller-manager on loopback (one per
test session), the node agent, helm/kubectl, and the chart installed with the operator running as its pod.

Missing binaries make every test here fail (run `bash scripts/testbin.sh`); nothing is skipped.
"""

from __future__ import annotations

import pytest
import yaml

from eftcluster_controlplane import ControlPlane
from eftcluster_node import NodeAgent
from eftcluster_support import CHART, E2E_NS, OPERATOR_NS, RELEASE, TEST_VALUES, Kube, wait_for


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory) -> ControlPlane:
    cp = ControlPlane(tmp_path_factory.mktemp("k8s"), operator_namespace=OPERATOR_NS,
                      operator_service_account=RELEASE)
    try:
        cp.start()
    except Exception:
        cp.stop()
        raise
    print(f"control plane up in {cp.startup_seconds:.1f}s at {cp.server}")
    yield cp
    cp.stop()


@pytest.fixture(scope="session")
def node_agent(control_plane, tmp_path_factory) -> NodeAgent:
    agent = NodeAgent(control_plane.admin(), control_plane.server, control_plane.ca,
                      tmp_path_factory.mktemp("node"), {OPERATOR_NS}).start()
    yield agent
    agent.stop()


@pytest.fixture(scope="session")
def kube(control_plane, node_agent) -> Kube:
    return Kube(control_plane, node_agent)


@pytest.fixture(scope="session")
def operator_release(kube, tmp_path_factory) -> Kube:
    """The chart installed by real helm into eft-system, its operator pod Ready (run by the node agent)."""
    values = tmp_path_factory.mktemp("values") / "test-values.yaml"
    values.write_text(yaml.safe_dump(TEST_VALUES))
    kube.ensure_namespace(OPERATOR_NS)
    kube.helm("install", RELEASE, str(CHART), "--namespace", OPERATOR_NS, "-f", str(values))

    def operator_ready():
        pod = kube.operator_pod()
        if not pod:
            return None
        p = kube.get(f"/api/v1/namespaces/{OPERATOR_NS}/pods/{pod}") or {}
        return any(c["type"] == "Ready" and c["status"] == "True" for c in (p.get("status") or {}).get("conditions") or [])

    wait_for(operator_ready, 120, "the operator pod to be Ready", 1.0, kube.operator_log)
    kube.ensure_namespace(E2E_NS)
    return kube


@pytest.fixture(scope="session")
def corpus_configmap(operator_release, tiny_corpus) -> str:
    """The tiny corpus (real manual pages) as a ConfigMap in the e2e namespace."""
    data = {p.name: p.read_text(errors="replace") for p in sorted(tiny_corpus.iterdir()) if p.is_file()}
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "tiny-corpus", "namespace": E2E_NS},
          "data": data}
    r = operator_release.api.post(f"/api/v1/namespaces/{E2E_NS}/configmaps", json=cm)
    assert r.status_code in (201, 409), r.text
    return "tiny-corpus"


