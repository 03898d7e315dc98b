"""Scale benchmark of the operator: apply N EmbeddingFinetune resources and time until every resource's first Job
(sdg) exists; report the operator process's peak RSS. Against kmock's emulator, a real control plane, or both.

    python bench/operator_scale.py [--count 200] [--target emulator|real|both]

Targets (issue 4): every first Job within 30 s, peak RSS at most 150 MB. The operator runs as a real
`eft operator --all-namespaces` subprocess. `emulator`: kmock's emulator in this process (tests/operator/
eftop_harness.py). `real`: etcd + kube-apiserver + kube-controller-manager from `scripts/testbin.sh`
(tests/cluster/eftcluster_controlplane.py), the chart installed by helm, the operator authenticated as the
chart's ServiceAccount (its RBAC enforced); no node agent, so the Jobs' pods stay Pending.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "operator"))
sys.path.insert(0, str(ROOT / "tests" / "cluster"))

from eftop_harness import Cluster, EmulatorThread, OperatorProcess, sample_resource, secrets_for  # noqa: E402


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_first_jobs(list_jobs, names: list[str], t0: float, timeout: float) -> int:
    """Poll until every resource in `names` has a Job; the number of Jobs seen."""
    want = set(names)
    while True:
        jobs = list_jobs()
        have = {j["metadata"]["labels"].get("finetune.embeddings.io/resource") for j in jobs}
        if want <= have:
            return len(jobs)
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"timeout: {len(want & have)}/{len(want)} first Jobs after {timeout}s")
        time.sleep(0.2)


def report(target: str, count: int, applied: float, elapsed: float, rss: float, idle_rss: float, jobs: int) -> bool:
    result = {"target": target, "resources": count, "apply_seconds": round(applied, 2),
              "all_first_jobs_seconds": round(elapsed, 2),
              "after_last_apply_seconds": round(elapsed - applied, 2), "operator_peak_rss_mb": round(rss, 1),
              "operator_idle_rss_mb": round(idle_rss, 1), "jobs": jobs,
              "targets": {"all_first_jobs_seconds": 30, "operator_peak_rss_mb": 150}}
    print(f"[{target}] resources applied:            {count} (in {applied:.2f} s)")
    print(f"[{target}] time until every first Job:   {elapsed:.2f} s   (target <= 30 s; "
          f"{elapsed - applied:.2f} s after the last apply)")
    print(f"[{target}] operator peak RSS:            {rss:.1f} MB  (target <= 150 MB; {idle_rss:.1f} MB at start)")
    print(json.dumps(result))
    return elapsed <= 30 and rss <= 150


def run_emulator(count: int, timeout: float) -> bool:
    with EmulatorThread() as emu, tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(emu.url)
        secrets_for(cluster)
        op = OperatorProcess(emu.url, Path(tmp), extra_env={"EFT_RESYNC_SECONDS": "60"}).start()
        try:
            idle_rss = peak_rss_mb(op.proc.pid)
            names = [f"bench-{i:04d}" for i in range(count)]
            t0 = time.monotonic()
            for name in names:
                cluster.apply(sample_resource(name))
            applied = time.monotonic() - t0
            jobs = wait_first_jobs(lambda: cluster.list("jobs", "default"), names, t0, timeout)
            elapsed = time.monotonic() - t0
            time.sleep(3)  # let the status writes and Events settle before reading the peak
            return report("emulator", count, applied, elapsed, peak_rss_mb(op.proc.pid), idle_rss, jobs)
        finally:
            op.stop()


def run_real(count: int, timeout: float) -> bool:
    import subprocess

    from eftcluster_controlplane import ControlPlane
    from eftcluster_support import CHART, E2E_NS, OPERATOR_NS, RELEASE, tiny_resource

    with tempfile.TemporaryDirectory() as tmp:
        cp = ControlPlane(Path(tmp) / "k8s", operator_namespace=OPERATOR_NS, operator_service_account=RELEASE)
        op = None
        try:
            cp.start()
            api = cp.admin()
            env = {**os.environ, "KUBECONFIG": str(cp.admin_kubeconfig), "HELM_CACHE_HOME": tmp,
                   "HELM_CONFIG_HOME": tmp, "HELM_DATA_HOME": tmp}
            for ns in (OPERATOR_NS, E2E_NS):
                api.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                     "metadata": {"name": ns}}).raise_for_status()
            subprocess.run([cp.binary("helm"), "install", RELEASE, str(CHART), "-n", OPERATOR_NS], env=env,
                           check=True, capture_output=True)
            cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "corpus", "namespace": E2E_NS},
                  "data": {"a.md": "# A\n\nSome text about indexes.\n"}}
            api.post(f"/api/v1/namespaces/{E2E_NS}/configmaps", json=cm).raise_for_status()
            log = open(Path(tmp) / "operator.log", "wb")
            op = subprocess.Popen(
                [sys.executable, "-m", "eft.cli", "operator", "--all-namespaces", "--liveness-port", "0",
                 "--metrics-port", "0"],
                env={**os.environ, "KUBECONFIG": str(cp.operator_kubeconfig), "EFT_RESYNC_SECONDS": "60"},
                stdout=log, stderr=subprocess.STDOUT)
            time.sleep(5)
            idle_rss = peak_rss_mb(op.pid)
            names = [f"bench-{i:04d}" for i in range(count)]
            path = f"/apis/finetune.embeddings.io/v1alpha1/namespaces/{E2E_NS}/embeddingfinetunes"
            t0 = time.monotonic()
            for name in names:
                api.post(path, json=tiny_resource(name, "corpus")).raise_for_status()
            applied = time.monotonic() - t0

            def list_jobs():
                r = api.get(f"/apis/batch/v1/namespaces/{E2E_NS}/jobs")
                r.raise_for_status()
                return r.json()["items"]

            jobs = wait_first_jobs(list_jobs, names, t0, timeout)
            elapsed = time.monotonic() - t0
            time.sleep(3)
            forbidden = [line for line in (Path(tmp) / "operator.log").read_text(errors="replace").splitlines()
                         if " 403" in line or "orbidden" in line]
            if forbidden:
                print("operator log has forbidden requests:\n" + "\n".join(forbidden[:10]))
            return report("real", count, applied, elapsed, peak_rss_mb(op.pid), idle_rss, jobs) and not forbidden
        finally:
            if op is not None:
                op.terminate()
                op.wait(30)
            cp.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--timeout", type=float, default=180)
    ap.add_argument("--target", choices=("emulator", "real", "both"), default="both")
    args = ap.parse_args()
    ok = True
    if args.target in ("emulator", "both"):
        ok &= run_emulator(args.count, args.timeout)
    if args.target in ("real", "both"):
        ok &= run_real(args.count, args.timeout)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
