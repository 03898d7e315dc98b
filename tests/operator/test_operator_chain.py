"""The real operator process against kmock's emulator: the whole chain from apply to Ready=True."""

from __future__ import annotations

from eftop_harness import Cluster, drive_to_ready, sample_resource, secrets_for, wait_for

NS = "default"


def test_full_chain_to_ready(cluster: Cluster, operator):
    secrets_for(cluster)
    cluster.apply(sample_resource("demo"))
    created = drive_to_ready(cluster, NS, "demo")
    body = cluster.eft(NS, "demo")
    st = body["status"]
    assert st["phase"] == "Succeeded"
    assert st["endpoint"] == "http://demo-server.default.svc:8000"
    assert st["metrics"]["finetuned"]["ndcg@10"] == 0.61
    assert st["metrics"]["ndcg10"].startswith("0.550 → 0.610")
    print(st)
    print(cluster.job_names(NS, "demo"))
