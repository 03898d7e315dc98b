"""The node agent: the parts of a cluster no binary here can play for our Pods (scheduler, kubelet, cluster DNS).

It is test code and says so. Everything else (Job conditions, retries, podFailurePolicy, ReplicaSets, rollouts,
garbage collection) is done by the real kube-controller-manager against the real kube-apiserver.

What it does, on a polling loop against the API server (admin identity):

* **scheduler**: binds every unbound Pod of a served namespace to the fake Node `eft-node` (`pods/binding`);
* **kubelet**: runs each container's command as a local process (the image is ignored; `eft`, the entrypoint of
  the project's images, is `python -m eft.cli` of this interpreter), with the container's `env` (values,
  `fieldRef`, `secretKeyRef`, `configMapKeyRef`) and its `volumeMounts` bound at their real paths in a private
  mount namespace (`unshare -m`): PVCs are folders kept per claim uid, ConfigMap/Secret volumes are written out,
  emptyDirs are per pod, projected service-account volumes get a real bound token from the TokenRequest API.
  A container whose Secret or key is missing waits with `CreateContainerConfigError` and the kubelet's message,
  and starts once it appears. Results go through `pods/status`: running/terminated states with exit code and
  termination message (`terminationMessagePath`, `FallbackToLogsOnError`), phase, and readiness from the
  `readinessProbe` (HTTP GET). `restartPolicy: Always` containers are restarted (`restartCount`). Deleted Pods
  have their processes killed and are removed (grace period 0), as a kubelet confirms a deletion.
* **ports and DNS**: there is no network namespace per Pod, so each declared `containerPort` gets a free loopback
  port, and an argument or env value equal to that port number is replaced by it. `http://<svc>.<ns>.svc[:port]`
  in a container's arguments or env resolves to the loopback port of a Ready Pod behind that Service; each pod's
  /etc/hosts (written per pod, as a kubelet does) resolves `kubernetes.default.svc` to the API server's loopback
  address (it serves on port 443 there), and `KUBERNETES_SERVICE_HOST/PORT` name the same.

Not played: liveness/startup probes, resource limits, securityContext (processes run as the test user), init
containers, image pulls, Service environment variables.

Tests drive it: `fail_next(match, exit_code, message)` makes the next container matching a predicate exit with
that code instead of running its command (a crashing container); `kill(pod, sig)` signals a running container;
`logs(namespace, pod)` reads a container's output.

The module name is unique on purpose (pytest's default import mode, no `__init__.py`).
"""

from __future__ import annotations

import base64
import datetime
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx
from child_process import die_with_parent

NODE_NAME = "eft-node"
MERGE = {"Content-Type": "application/merge-patch+json"}
SA_MOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
SVC_URL = re.compile(r"(https?://)([a-z0-9]([-a-z0-9]*[a-z0-9])?)\.([a-z0-9]([-a-z0-9]*[a-z0-9])?)\.svc"
                     r"(\.cluster\.local)?(:(\d+))?")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Waiting(Exception):
    """A container cannot start yet: (reason, message) as a kubelet reports it."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclass
class Container:
    name: str
    spec: dict[str, Any]
    log: Path
    term_file: Path
    popen: subprocess.Popen | None = None
    started_at: str | None = None
    restarts: int = 0
    last_terminated: dict[str, Any] | None = None
    terminated: dict[str, Any] | None = None
    waiting: tuple[str, str] | None = None
    ready: bool = False
    ports: dict[int, int] = field(default_factory=dict)  # containerPort -> loopback port
    port_names: dict[str, int] = field(default_factory=dict)
    next_probe: float = 0.0
    restart_at: float = 0.0


@dataclass
class PodState:
    namespace: str
    name: str
    uid: str
    dir: Path
    restart_policy: str
    containers: dict[str, Container] = field(default_factory=dict)
    started: str = field(default_factory=_now)
    reported: Any = None
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Injection:
    match: Callable[[dict[str, Any]], bool]
    exit_code: int
    message: str
    remaining: int = 1


class NodeAgent:
    """Scheduler + kubelet + DNS for Pods in `namespaces`, over `client` (an admin httpx client)."""

    def __init__(self, client: httpx.Client, api_server: str, ca_file: Path, workdir: Path,
                 namespaces: set[str], poll_seconds: float = 0.25):
        self.api = client
        self.api_server = api_server
        self.api_ip, self.api_port = api_server.removeprefix("https://").rsplit(":", 1)
        self.ca_file = ca_file
        self.workdir = workdir
        self.namespaces = set(namespaces)
        self.poll = poll_seconds
        self.pods: dict[str, PodState] = {}  # by uid
        self.confirmed: set[str] = set()  # uids whose deletion was confirmed
        self.injections: list[Injection] = []
        self.errors: list[str] = []
        self.lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.python = sys.executable

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "NodeAgent":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._register_node()
        self._thread = threading.Thread(target=self._run, name="eft-node-agent", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        with self.lock:
            for pod in list(self.pods.values()):
                self._kill_pod(pod)
            self.pods.clear()

    def _register_node(self) -> None:
        node = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": NODE_NAME, "labels": {"kubernetes.io/hostname": NODE_NAME,
                                                           "kubernetes.io/os": "linux"}}}
        r = self.api.post("/api/v1/nodes", json=node)
        if r.status_code not in (201, 409):
            raise RuntimeError(f"cannot register the node: {r.status_code} {r.text}")
        status = {"status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "eft test node agent", "lastHeartbeatTime": _now(),
                            "lastTransitionTime": _now()}],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": NODE_NAME}],
            "capacity": {"cpu": "64", "memory": "256Gi", "pods": "500"},
            "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "500"},
        }}
        self.api.patch(f"/api/v1/nodes/{NODE_NAME}/status", json=status, headers=MERGE).raise_for_status()

    # ------------------------------------------------------------------ test controls
    def fail_next(self, match: Callable[[dict[str, Any]], bool], exit_code: int, message: str = "",
                  times: int = 1) -> None:
        """The next `times` containers of Pods matching `match` exit with `exit_code` (and write `message` as
        their termination message) instead of running their command."""
        with self.lock:
            self.injections.append(Injection(match, exit_code, message, times))

    def kill(self, namespace: str, pod_name: str, sig: int = signal.SIGKILL) -> int:
        """Signal the running container(s) of a Pod; returns the number signalled."""
        n = 0
        with self.lock:
            for pod in self.pods.values():
                if pod.namespace == namespace and pod.name == pod_name:
                    for c in pod.containers.values():
                        if c.popen is not None and c.popen.poll() is None:
                            os.killpg(c.popen.pid, sig)
                            n += 1
        return n

    def running_pods(self, namespace: str, label: str | None = None) -> list[str]:
        with self.lock:
            return [p.name for p in self.pods.values() if p.namespace == namespace
                    and (label is None or label in [f"{k}={v}" for k, v in p.labels.items()])
                    and any(c.popen is not None and c.popen.poll() is None for c in p.containers.values())]

    def logs(self, namespace: str, pod_name: str) -> str:
        out = []
        for path in sorted(self.workdir.glob(f"logs/{namespace}_{pod_name}_*.log")):
            out.append(path.read_text(errors="replace"))
        return "".join(out)

    # ------------------------------------------------------------------ loop
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except Exception as err:  # noqa: BLE001 - keep playing the node; tests read `errors`
                self.errors.append(f"{type(err).__name__}: {err}")
            self._stop.wait(self.poll)

    def _sync(self) -> None:
        r = self.api.get("/api/v1/pods")
        r.raise_for_status()
        seen = set()
        for pod in r.json().get("items") or []:
            meta = pod["metadata"]
            if meta["namespace"] not in self.namespaces:
                continue
            uid = meta["uid"]
            seen.add(uid)
            with self.lock:
                self._sync_pod(pod)
        with self.lock:
            for uid in [u for u in self.pods if u not in seen]:
                self._kill_pod(self.pods.pop(uid))

    def _sync_pod(self, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        if meta.get("deletionTimestamp"):
            state = self.pods.pop(uid, None)
            if state is not None:
                self._kill_pod(state)
            if (spec.get("nodeName") == NODE_NAME or state is not None) and uid not in self.confirmed:
                # Confirm the deletion once (finalizers, e.g. the Job controller's, may keep the object a while).
                self.api.request("DELETE", f"/api/v1/namespaces/{ns}/pods/{name}",
                                 json={"gracePeriodSeconds": 0, "preconditions": {"uid": uid}})
                self.confirmed.add(uid)
            return
        if not spec.get("nodeName"):
            binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "uid": uid},
                       "target": {"apiVersion": "v1", "kind": "Node", "name": NODE_NAME}}
            self.api.post(f"/api/v1/namespaces/{ns}/pods/{name}/binding", json=binding)
            return
        if spec.get("nodeName") != NODE_NAME:
            return
        state = self.pods.get(uid)
        if state is None:
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                return  # finished before (e.g. by an earlier agent); nothing to run
            state = PodState(ns, name, uid, self.workdir / "pods" / uid, spec.get("restartPolicy", "Always"),
                             labels=dict(meta.get("labels") or {}))
            for c in spec.get("containers") or []:
                state.containers[c["name"]] = Container(
                    c["name"], c, self.workdir / "logs" / f"{ns}_{name}_{c['name']}.log",
                    state.dir / "termination" / c["name"])
            self.pods[uid] = state
        self._drive(state, pod)
        self._report(state, pod)

    # ------------------------------------------------------------------ containers
    def _drive(self, state: PodState, pod: dict[str, Any]) -> None:
        now = time.monotonic()
        for c in state.containers.values():
            if c.popen is None and c.terminated is None:
                if now < c.restart_at:
                    continue
                try:
                    self._start(state, c, pod)
                    c.waiting = None
                except Waiting as w:
                    c.waiting = (w.reason, w.message)
                continue
            if c.popen is not None and c.popen.poll() is not None:
                code = c.popen.returncode
                code = 128 - code if code < 0 else code
                c.popen = None
                c.ready = False
                term = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                        "startedAt": c.started_at, "finishedAt": _now(), "message": self._message(c, code)}
                policy = state.restart_policy
                if policy == "Always" or (policy == "OnFailure" and code != 0):
                    c.last_terminated, c.restarts = term, c.restarts + 1
                    c.restart_at = now + 1.0
                else:
                    c.terminated = term
            elif c.popen is not None and c.spec.get("readinessProbe") and now >= c.next_probe:
                c.next_probe = now + 0.5
                c.ready = self._probe(c, c.spec["readinessProbe"])
            elif c.popen is not None and not c.spec.get("readinessProbe"):
                c.ready = True

    def _message(self, c: Container, code: int) -> str:
        text = c.term_file.read_text(errors="replace") if c.term_file.exists() else ""
        if not text.strip() and code != 0 and c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            lines = c.log.read_text(errors="replace").splitlines()[-80:] if c.log.exists() else []
            text = "\n".join(lines)[-2048:]
        return text[-4096:]

    def _probe(self, c: Container, probe: dict[str, Any]) -> bool:
        get = probe.get("httpGet")
        if not get:
            return True
        port = get.get("port")
        local = c.port_names.get(port) if isinstance(port, str) else c.ports.get(int(port))
        if local is None:
            return False
        try:
            r = httpx.get(f"http://127.0.0.1:{local}{get.get('path', '/')}", timeout=2)
            return 200 <= r.status_code < 400
        except httpx.HTTPError:
            return False

    def _start(self, state: PodState, c: Container, pod: dict[str, Any]) -> None:
        spec = c.spec
        # Ports first: arguments and env naming a port are rewritten to the loopback port.
        if not c.ports:
            from eftcluster_controlplane import free_port

            for p in spec.get("ports") or []:
                local = free_port()
                c.ports[int(p["containerPort"])] = local
                if p.get("name"):
                    c.port_names[p["name"]] = local
        env = self._env(state, c, pod)
        mounts = self._mounts(state, c, pod)
        injection = self._take_injection(pod)
        if injection is not None:
            argv = [self.python, "-c",
                    "import os,sys; p=os.environ.get('EFT_INJECTED_TERM');"
                    "open(p,'w').write(sys.argv[2]) if p else None; sys.exit(int(sys.argv[1]))",
                    str(injection.exit_code), injection.message]
            env["EFT_INJECTED_TERM"] = spec.get("terminationMessagePath") or "/dev/termination-log"
        else:
            argv = list(spec.get("command") or ["eft"]) + list(spec.get("args") or [])
            argv = [self._rewrite(a, c, state.namespace) for a in argv]
            if argv[0] == "eft":
                argv = [self.python, "-m", "eft.cli", *argv[1:]]
        for k in list(env):
            env[k] = self._rewrite(env[k], c, state.namespace)
        c.term_file.parent.mkdir(parents=True, exist_ok=True)
        c.term_file.write_text("")
        # The kubelet writes each pod's /etc/hosts; here it also carries cluster DNS for the API server.
        hosts = state.dir / "etc-hosts"
        hosts.write_text(f"127.0.0.1\tlocalhost\n127.0.0.1\t{state.name}\n{self.api_ip}\tkubernetes "
                         "kubernetes.default kubernetes.default.svc kubernetes.default.svc.cluster.local\n")
        mounts.append((str(hosts), "/etc/hosts", True))
        mounts.append((str(c.term_file), spec.get("terminationMessagePath") or "/dev/termination-log", False))
        # A mount whose target holds another mount's source (an emptyDir at /tmp) goes after it; parents first.
        sources = [src for src, _, _ in mounts]
        mounts.sort(key=lambda m: (any(s.startswith(m[1].rstrip("/") + "/") for s in sources), m[1].count("/")))
        script = ["set -e"]
        for src, dst, ro in mounts:
            script.append(f"mount --bind {shlex.quote(src)} {shlex.quote(dst)}")
            if ro:
                script.append(f"mount -o remount,bind,ro {shlex.quote(dst)}")
        script.append('exec "$@"')
        c.log.parent.mkdir(parents=True, exist_ok=True)
        with open(c.log, "ab") as log:
            log.write(f"--- {_now()} start {' '.join(argv)[:300]}\n".encode())
            log.flush()
            c.popen = subprocess.Popen(
                die_with_parent(["unshare", "-m", "--propagation", "private", "--", "/bin/sh", "-c", "\n".join(script),
                                 "sh", *argv]),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=spec.get("workingDir") or "/", start_new_session=True)
        c.started_at = _now()

    def _take_injection(self, pod: dict[str, Any]) -> Injection | None:
        for inj in self.injections:
            if inj.remaining > 0 and inj.match(pod):
                inj.remaining -= 1
                return inj
        return None

    def _rewrite(self, value: str, c: Container, namespace: str) -> str:
        if not isinstance(value, str):
            return value
        for port, local in c.ports.items():
            if value == str(port):
                return str(local)
        return SVC_URL.sub(lambda m: self._resolve(m, namespace), value)

    def _resolve(self, m: re.Match, namespace: str) -> str:
        """`<svc>.<ns>.svc[:port]` → the loopback port of a Ready Pod behind that Service (DNS + Service VIP)."""
        svc_name, ns = m.group(2), m.group(4)
        port = int(m.group(8)) if m.group(8) else (443 if m.group(1) == "https://" else 80)
        r = self.api.get(f"/api/v1/namespaces/{ns}/services/{svc_name}")
        if r.status_code != 200:
            return m.group(0)
        svc = r.json()
        sp = next((p for p in svc["spec"].get("ports") or [] if int(p["port"]) == port), None)
        selector = svc["spec"].get("selector") or {}
        if sp is None or not selector:
            return m.group(0)
        target = sp.get("targetPort", port)
        for state in self.pods.values():
            if state.namespace != ns or any(state.labels.get(k) != v for k, v in selector.items()):
                continue
            for c in state.containers.values():
                if not c.ready:
                    continue
                local = c.port_names.get(target) if isinstance(target, str) else c.ports.get(int(target))
                if local:
                    return f"{m.group(1)}127.0.0.1:{local}"
        return m.group(0)

    # ------------------------------------------------------------------ env and volumes
    def _get(self, path: str) -> dict[str, Any] | None:
        r = self.api.get(path)
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return r.json()

    def _env(self, state: PodState, c: Container, pod: dict[str, Any]) -> dict[str, str]:
        ns = state.namespace
        env = {k: os.environ[k] for k in ("PATH", "PYTHONPATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
               if k in os.environ}
        env.update({"HOSTNAME": state.name, "KUBERNETES_SERVICE_HOST": self.api_ip,
                    "KUBERNETES_SERVICE_PORT": self.api_port,
                    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
        for e in c.spec.get("env") or []:
            if "value" in e:
                env[e["name"]] = str(e["value"])
                continue
            src = e.get("valueFrom") or {}
            if "fieldRef" in src:
                env[e["name"]] = self._field(pod, src["fieldRef"]["fieldPath"])
            elif "secretKeyRef" in src:
                ref = src["secretKeyRef"]
                secret = self._get(f"/api/v1/namespaces/{ns}/secrets/{ref['name']}")
                if secret is None or ref["key"] not in (secret.get("data") or {}):
                    if ref.get("optional"):
                        continue
                    if secret is None:
                        raise Waiting("CreateContainerConfigError", f'secret "{ref["name"]}" not found')
                    raise Waiting("CreateContainerConfigError",
                                  f"couldn't find key {ref['key']} in Secret {ns}/{ref['name']}")
                env[e["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
            elif "configMapKeyRef" in src:
                ref = src["configMapKeyRef"]
                cm = self._get(f"/api/v1/namespaces/{ns}/configmaps/{ref['name']}")
                if cm is None or ref["key"] not in (cm.get("data") or {}):
                    if ref.get("optional"):
                        continue
                    raise Waiting("CreateContainerConfigError",
                                  f'configmap "{ref["name"]}" not found' if cm is None else
                                  f"couldn't find key {ref['key']} in ConfigMap {ns}/{ref['name']}")
                env[e["name"]] = cm["data"][ref["key"]]
        return env

    @staticmethod
    def _field(pod: dict[str, Any], path: str) -> str:
        meta = pod["metadata"]
        simple = {"metadata.name": meta["name"], "metadata.namespace": meta["namespace"], "metadata.uid": meta["uid"],
                  "spec.nodeName": NODE_NAME, "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
                  "status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1"}
        if path in simple:
            return simple[path]
        m = re.fullmatch(r"metadata\.(annotations|labels)\['(.+)'\]", path)
        if m:
            return (meta.get(m.group(1)) or {}).get(m.group(2), "")
        raise Waiting("CreateContainerConfigError", f"unsupported fieldPath {path}")

    def _mounts(self, state: PodState, c: Container, pod: dict[str, Any]) -> list[tuple[str, str, bool]]:
        ns = state.namespace
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        out = []
        for vm in c.spec.get("volumeMounts") or []:
            vol = volumes[vm["name"]]
            src = self._volume_dir(state, vol, ns, pod)
            if vm.get("subPath"):
                src = src / vm["subPath"]
                src.mkdir(parents=True, exist_ok=True)
            dst = vm["mountPath"]
            Path(dst).mkdir(parents=True, exist_ok=True)  # the mount point (empty) as a container runtime makes it
            ro = bool(vm.get("readOnly")) or "configMap" in vol or "secret" in vol or "projected" in vol
            out.append((str(src), dst, ro))
        term = c.spec.get("terminationMessagePath") or "/dev/termination-log"
        if not os.path.exists(term):
            Path(term).parent.mkdir(parents=True, exist_ok=True)
            Path(term).touch()
        return out

    def _volume_dir(self, state: PodState, vol: dict[str, Any], ns: str, pod: dict[str, Any]) -> Path:
        vdir = state.dir / "volumes" / vol["name"]
        if "persistentVolumeClaim" in vol:
            claim = vol["persistentVolumeClaim"]["claimName"]
            pvc = self._get(f"/api/v1/namespaces/{ns}/persistentvolumeclaims/{claim}")
            if pvc is None:
                raise Waiting("ContainerCreating", f'persistentvolumeclaim "{claim}" not found')
            d = self.workdir / "pvc" / ns / f"{claim}-{pvc['metadata']['uid']}"
            d.mkdir(parents=True, exist_ok=True)
            return d
        if "emptyDir" in vol:
            vdir.mkdir(parents=True, exist_ok=True)
            return vdir
        if "configMap" in vol or "secret" in vol:
            files = self._volume_files(vol, ns)
            self._write_files(vdir, files)
            return vdir
        if "projected" in vol:
            files: dict[str, bytes] = {}
            for source in vol["projected"].get("sources") or []:
                if "serviceAccountToken" in source:
                    files[source["serviceAccountToken"]["path"]] = self._token(pod, source["serviceAccountToken"])
                elif "downwardAPI" in source:
                    for item in source["downwardAPI"].get("items") or []:
                        files[item["path"]] = self._field(pod, item["fieldRef"]["fieldPath"]).encode()
                else:
                    files.update(self._volume_files(source, ns))
            self._write_files(vdir, files)
            return vdir
        raise Waiting("ContainerCreating", f"volume {vol['name']}: unsupported volume type")

    def _volume_files(self, vol: dict[str, Any], ns: str) -> dict[str, bytes]:
        kind = "configMap" if "configMap" in vol else "secret"
        ref = vol[kind]
        name = ref.get("name") or ref.get("secretName")
        obj = self._get(f"/api/v1/namespaces/{ns}/{'configmaps' if kind == 'configMap' else 'secrets'}/{name}")
        if obj is None:
            if ref.get("optional"):
                return {}
            raise Waiting("ContainerCreating", f'{kind.lower()} "{name}" not found')
        data: dict[str, bytes] = {}
        for k, v in (obj.get("data") or {}).items():
            data[k] = base64.b64decode(v) if kind == "secret" else v.encode()
        for k, v in (obj.get("binaryData") or {}).items():
            data[k] = base64.b64decode(v)
        if ref.get("items"):
            return {i["path"]: data[i["key"]] for i in ref["items"] if i["key"] in data}
        return data

    @staticmethod
    def _write_files(d: Path, files: dict[str, bytes]) -> None:
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        for rel, content in files.items():
            p = d / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(content)

    def _token(self, pod: dict[str, Any], source: dict[str, Any]) -> bytes:
        """A bound service-account token from the TokenRequest API, as a kubelet requests it."""
        meta = pod["metadata"]
        sa = pod["spec"].get("serviceAccountName") or "default"
        req = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
               "spec": {"audiences": [source["audience"]] if source.get("audience") else None,
                        "expirationSeconds": int(source.get("expirationSeconds") or 3607),
                        "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": meta["name"],
                                           "uid": meta["uid"]}}}
        r = self.api.post(f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{sa}/token", json=req)
        if r.status_code != 201:
            raise Waiting("ContainerCreating", f"token request for {sa}: {r.status_code} {r.text[:200]}")
        return r.json()["status"]["token"].encode()

    # ------------------------------------------------------------------ status
    def _report(self, state: PodState, pod: dict[str, Any]) -> None:
        statuses = []
        for c in state.containers.values():
            st: dict[str, Any] = {"name": c.name, "image": c.spec.get("image", ""), "imageID": "",
                                  "restartCount": c.restarts, "ready": c.ready}
            if c.terminated is not None:
                st["state"] = {"terminated": c.terminated}
                st["started"] = False
                st["containerID"] = f"eft-agent://{state.uid}/{c.name}"
            elif c.popen is not None:
                st["state"] = {"running": {"startedAt": c.started_at}}
                st["started"] = True
                st["containerID"] = f"eft-agent://{state.uid}/{c.name}"
            elif c.waiting is not None:
                st["state"] = {"waiting": {"reason": c.waiting[0], "message": c.waiting[1]}}
                st["started"] = False
            else:
                st["state"] = {"waiting": {"reason": "ContainerCreating"}}
                st["started"] = False
            if c.last_terminated is not None:
                st["lastState"] = {"terminated": c.last_terminated}
            statuses.append(st)
        terms = [c.terminated for c in state.containers.values()]
        if all(t is not None for t in terms):
            phase = "Succeeded" if all(t["exitCode"] == 0 for t in terms) else "Failed"
        elif any(c.popen is not None or c.restarts for c in state.containers.values()):
            phase = "Running"
        else:
            phase = "Pending"
        ready = phase == "Running" and all(c.ready for c in state.containers.values())
        status = {
            "phase": phase, "hostIP": "127.0.0.1", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": state.started, "containerStatuses": statuses,
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": "True" if ready else "False"},
                {"type": "Ready", "status": "True" if ready else "False"},
            ],
        }
        if status == state.reported:
            return
        stamped = {**status, "conditions": [{**c, "lastTransitionTime": _now()} for c in status["conditions"]]}
        meta = pod["metadata"]
        r = self.api.patch(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
                           json={"status": stamped}, headers=MERGE)
        if r.status_code == 200:
            state.reported = status

    def _kill_pod(self, state: PodState) -> None:
        for c in state.containers.values():
            if c.popen is not None and c.popen.poll() is None:
                try:
                    os.killpg(c.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                c.popen.wait(10)
            c.popen = None
