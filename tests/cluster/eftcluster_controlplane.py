"""A real Kubernetes control plane on loopback for the test suite: etcd, kube-apiserver, kube-controller-manager.

The binaries come from `scripts/testbin.sh` (built from the Go module proxy, cached outside the repository). Nothing
here imitates the API server: this module only generates what a cluster installer would (a CA and serving
certificate made with the `openssl` CLI, service-account signing keys, a static token file), starts the three
processes on free loopback ports, waits for them, and writes kubeconfigs.

Identities (static tokens, `--token-auth-file`):
* `admin` in `system:masters`: the tests, helm, the node agent;
* `system:serviceaccount:<ns>:<sa>` with the service-account groups: the chart's operator ServiceAccount, for
  requests the tests make *as the operator* (RBAC checks). The operator pod itself gets a real bound token
  through the TokenRequest API, as a kubelet would get it.

The module name is unique on purpose (pytest's default import mode, no `__init__.py`).
"""

from __future__ import annotations

import os
import secrets
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml
from child_process import die_with_parent

ROOT = Path(__file__).resolve().parents[2]
TESTBIN_SCRIPT = ROOT / "scripts" / "testbin.sh"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "helm", "kubectl")
#: What kube-controller-manager runs: the controllers the operator's children depend on, and no more.
CONTROLLERS = ("garbage-collector-controller", "namespace-controller", "job-controller", "deployment-controller",
               "replicaset-controller", "ttl-after-finished-controller", "serviceaccount-controller",
               "root-ca-certificate-publisher-controller", "persistentvolumeclaim-protection-controller",
               "persistentvolume-binder-controller", "persistentvolume-protection-controller")


class ControlPlaneError(RuntimeError):
    pass


def testbin_dir(need: tuple[str, ...] = BINARIES) -> Path:
    """The folder `scripts/testbin.sh` fills; the binaries in `need` must be there (tests fail, never skip)."""
    env = os.environ.get("EFT_TESTBIN")
    if env:
        d = Path(env)
    else:
        out = subprocess.run(["bash", str(TESTBIN_SCRIPT), "--dir"], capture_output=True, text=True, check=True)
        d = Path(out.stdout.strip())
    missing = [b for b in need if not os.access(d / b, os.X_OK)]
    if missing:
        raise ControlPlaneError(f"missing Kubernetes test binaries in {d}: {', '.join(missing)}; "
                                f"run `bash scripts/testbin.sh` (the README's test command does)")
    return d


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_ip() -> str:
    """A free random loopback address whose port 443 the API server takes: in-cluster clients (Kopf's
    service-account login) always call `https://kubernetes.default.svc` on port 443, which the node agent's
    per-pod /etc/hosts points here (the part of the `kubernetes` Service's ClusterIP)."""
    for _ in range(50):
        ip = f"127.{secrets.randbelow(250) + 2}.{secrets.randbelow(250) + 1}.{secrets.randbelow(250) + 1}"
        with socket.socket() as s:
            try:
                s.bind((ip, 443))
                return ip
            except OSError:
                continue
    raise ControlPlaneError("no free loopback address with port 443 for the API server")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d: Path, ip: str) -> None:
    """CA, API server serving certificate (SANs: loopback, `ip` and the in-cluster names), service-account keys."""
    d.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "3",
             "-subj", "/CN=eft-test-ca", cwd=d)
    (d / "san.ext").write_text(
        f"subjectAltName=IP:127.0.0.1,IP:{ip},IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
        "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
        "extendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "apiserver.key", "-out", "apiserver.csr",
             "-subj", "/CN=kube-apiserver", cwd=d)
    _openssl("x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "apiserver.crt", "-days", "3", "-extfile", "san.ext", cwd=d)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


@dataclass
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager, started by `start()` and stopped by `stop()`."""

    workdir: Path
    operator_namespace: str = "eft-system"
    operator_service_account: str = "eft-operator"
    bin_dir: Path = field(default_factory=testbin_dir)
    procs: list[Proc] = field(default_factory=list)
    admin_token: str = field(default_factory=lambda: secrets.token_hex(16))
    operator_token: str = field(default_factory=lambda: secrets.token_hex(16))
    ip: str = ""
    port: int = 443
    _clients: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ paths
    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def server(self) -> str:
        return f"https://{self.ip}:{self.port}"

    @property
    def ca(self) -> Path:
        return self.pki / "ca.crt"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def operator_kubeconfig(self) -> Path:
        return self.workdir / "operator.kubeconfig"

    @property
    def operator_user(self) -> str:
        return f"system:serviceaccount:{self.operator_namespace}:{self.operator_service_account}"

    def binary(self, name: str) -> str:
        return str(self.bin_dir / name)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "ControlPlane":
        self.workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        self.ip = service_ip()
        make_pki(self.pki, self.ip)
        ns, sa = self.operator_namespace, self.operator_service_account
        (self.workdir / "tokens.csv").write_text(
            f'{self.admin_token},admin,admin-uid,"system:masters"\n'
            f'{self.operator_token},{self.operator_user},operator-sa-uid,'
            f'"system:serviceaccounts,system:serviceaccounts:{ns},system:authenticated"\n')
        etcd_port, peer_port = free_port(), free_port()
        self._spawn("etcd", [
            self.binary("etcd"), "--name", "default", "--data-dir", str(self.workdir / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"default=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync", "--log-level", "warn",
        ])
        self._wait_http(f"http://127.0.0.1:{etcd_port}/health", "etcd", 60)
        self._spawn("kube-apiserver", [
            self.binary("kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            f"--bind-address={self.ip}", "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
            f"--cert-dir={self.pki}", f"--tls-cert-file={self.pki / 'apiserver.crt'}",
            f"--tls-private-key-file={self.pki / 'apiserver.key'}", f"--client-ca-file={self.ca}",
            f"--token-auth-file={self.workdir / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={self.pki / 'sa.pub'}",
            f"--service-account-signing-key-file={self.pki / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24",
            # Loopback advertise address: the lease reconciler refuses it for the `kubernetes` Service endpoints
            # (in-cluster clients get the loopback address from the node agent instead).
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true", "--profiling=false", "--v=1",
        ])
        self._write_kubeconfig(self.admin_kubeconfig, "admin", self.admin_token)
        self._write_kubeconfig(self.operator_kubeconfig, self.operator_user, self.operator_token)
        self._wait_http(f"{self.server}/readyz", "kube-apiserver", 180, token=self.admin_token)
        self._spawn("kube-controller-manager", [
            self.binary("kube-controller-manager"),
            f"--kubeconfig={self.admin_kubeconfig}", f"--authentication-kubeconfig={self.admin_kubeconfig}",
            f"--authorization-kubeconfig={self.admin_kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            f"--controllers={','.join(CONTROLLERS)}",
            f"--root-ca-file={self.ca}", f"--service-account-private-key-file={self.pki / 'sa.key'}",
            "--leader-elect=false", "--concurrent-job-syncs=10", "--concurrent-gc-syncs=20", "--v=1",
        ])
        self._wait_default_service_account(120)
        self.startup_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        for c in self._clients.values():
            c.close()
        self._clients.clear()
        for p in reversed(self.procs):
            if p.popen.poll() is None:
                p.popen.terminate()
        for p in reversed(self.procs):
            try:
                p.popen.wait(15)
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait(5)
        self.procs.clear()

    def check_alive(self) -> None:
        for p in self.procs:
            if p.popen.poll() is not None:
                raise ControlPlaneError(f"{p.name} exited ({p.popen.returncode}):\n{p.tail()}")

    # ------------------------------------------------------------------ helpers
    def _spawn(self, name: str, argv: list[str]) -> None:
        log = self.workdir / f"{name}.log"
        f = open(log, "ab")
        popen = subprocess.Popen(die_with_parent(argv), stdout=f, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, cwd=self.workdir, start_new_session=True)
        f.close()
        self.procs.append(Proc(name, popen, log))

    def _wait_http(self, url: str, what: str, timeout: float, token: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        last = ""
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                r = httpx.get(url, headers=headers, verify=self.ssl_context() if url.startswith("https") else False,
                              timeout=5)
                if r.status_code == 200:
                    return
                last = f"{r.status_code} {r.text[:300]}"
            except httpx.HTTPError as err:
                last = str(err)
            time.sleep(0.5)
        proc = next((p for p in self.procs if p.name == what), None)
        raise ControlPlaneError(f"{what} not ready after {timeout}s ({last})\n{proc.tail() if proc else ''}")

    def _wait_default_service_account(self, timeout: float) -> None:
        """kube-controller-manager is working once it has created `default/default` (serviceaccount controller)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            r = self.admin().get("/api/v1/namespaces/default/serviceaccounts/default")
            if r.status_code == 200:
                return
            time.sleep(0.5)
        raise ControlPlaneError("kube-controller-manager did not create the default ServiceAccount\n"
                                + self.procs[-1].tail())

    def _write_kubeconfig(self, path: Path, user: str, token: str) -> None:
        cfg = {
            "apiVersion": "v1", "kind": "Config", "current-context": "eft-test", "preferences": {},
            "clusters": [{"name": "eft-test", "cluster": {"server": self.server,
                                                          "certificate-authority": str(self.ca)}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "eft-test", "context": {"cluster": "eft-test", "user": user}}],
        }
        path.write_text(yaml.safe_dump(cfg))
        path.chmod(0o600)

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def client(self, token: str) -> httpx.Client:
        """An HTTP client for `token` (one per token, kept open until `stop()`)."""
        if token not in self._clients:
            self._clients[token] = httpx.Client(base_url=self.server, verify=self.ssl_context(), timeout=30,
                                                headers={"Authorization": f"Bearer {token}"})
        return self._clients[token]

    def admin(self) -> httpx.Client:
        return self.client(self.admin_token)

    def as_operator(self) -> httpx.Client:
        """Requests authenticated as the chart's operator ServiceAccount (static token)."""
        return self.client(self.operator_token)
