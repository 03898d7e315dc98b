"""A small asyncio Kubernetes API client (aiohttp) for the controller's own calls.

It takes its endpoint and credentials from the same `kopf.ConnectionInfo` Kopf logs in with, so the operator
needs neither the synchronous `kubernetes` package nor threads. Every call goes through `KubeApi.call`, which
records `(apiGroup, resource, verb)`: `eft.controller.rbac` lists the same triples for the Helm RBAC, and a test
checks the list covers every call.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import tempfile
from dataclasses import dataclass
from typing import Any, Callable

import aiohttp

log = logging.getLogger("eft.controller.kube")


@dataclass(frozen=True)
class Res:
    group: str
    version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if sub:
            base += f"/{sub}"
        return base


JOBS = Res("batch", "v1", "jobs")
PODS = Res("", "v1", "pods")
CONFIGMAPS = Res("", "v1", "configmaps")
SECRETS = Res("", "v1", "secrets")
PVCS = Res("", "v1", "persistentvolumeclaims")
SERVICES = Res("", "v1", "services")
EVENTS = Res("", "v1", "events")
DEPLOYMENTS = Res("apps", "v1", "deployments")


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str):
        self.status, self.reason, self.message = status, reason, message
        super().__init__(f"{status} {reason}: {message}")


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    pass


USER_AGENT = "embedding-finetune-operator/controller"

#: (apiGroup, resource[/subresource], verb) of every call made by this process (checked against rbac.py).
CALLS: set[tuple[str, str, str]] = set()


def _verb(method: str, name: str | None) -> str:
    return {"GET": "get" if name else "list", "POST": "create", "PATCH": "patch", "PUT": "update",
            "DELETE": "delete"}[method]


class KubeApi:
    def __init__(self, server: str, headers: dict[str, str], ssl_ctx: ssl.SSLContext | bool | None,
                 relogin: Callable[[], Any] | None = None, timeout: float = 30.0, limit: int = 32):
        self.server = server.rstrip("/")
        self.headers = dict(headers)
        self.ssl_ctx = ssl_ctx
        self.relogin = relogin
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._sem = asyncio.Semaphore(limit)

    @classmethod
    def from_connection_info(cls, info: Any, relogin: Callable[[], Any] | None = None) -> "KubeApi":
        """Build from a `kopf.ConnectionInfo` (server, CA, client certificate, token or basic auth)."""
        headers = info.as_http_headers() if hasattr(info, "as_http_headers") else {}
        ctx: ssl.SSLContext | bool | None = None
        if info.server.startswith("https"):
            if info.insecure:
                ctx = False
            else:
                ctx = ssl.create_default_context()
                if info.ca_path:
                    ctx.load_verify_locations(cafile=info.ca_path)
                elif info.ca_data:
                    ctx.load_verify_locations(cadata=_pem(info.ca_data))
            cert, key = info.certificate_path, info.private_key_path
            if info.certificate_data or info.private_key_data:
                cert = _tempfile(_pem(info.certificate_data)) if info.certificate_data else cert
                key = _tempfile(_pem(info.private_key_data)) if info.private_key_data else key
            if cert and ctx is not False:
                ctx.load_cert_chain(certfile=cert, keyfile=key)
        return cls(info.server, headers, ctx, relogin)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def call(self, method: str, res: Res, namespace: str | None = None, name: str | None = None,
                   sub: str | None = None, body: Any = None, params: dict[str, str] | None = None) -> Any:
        CALLS.add((res.group, f"{res.plural}/{sub}" if sub else res.plural, _verb(method, name)))
        url = self.server + res.path(namespace, name, sub)
        headers = {"User-Agent": USER_AGENT, **self.headers}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/merge-patch+json" if method == "PATCH" else "application/json"
            data = json.dumps(body)
        for attempt in range(2):
            async with self._sem:
                async with self._client().request(method, url, data=data, params=params, headers=headers,
                                                  ssl=self.ssl_ctx) as resp:
                    text = await resp.text()
                    status = resp.status
            if status == 401 and attempt == 0 and self.relogin is not None:
                info = await _maybe_await(self.relogin())
                if info is not None:
                    self.headers = info.as_http_headers()
                    headers.update(self.headers)
                    continue
            break
        if status >= 400:
            try:
                err = json.loads(text)
                reason, message = err.get("reason", ""), err.get("message", text)
            except json.JSONDecodeError:
                reason, message = "", text[:500]
            cls = NotFound if status == 404 else Conflict if status == 409 else ApiError
            raise cls(status, reason, message)
        return json.loads(text) if text else None

    # Convenience wrappers.
    async def get(self, res: Res, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.call("GET", res, namespace, name)
        except NotFound:
            return None

    async def list(self, res: Res, namespace: str | None, label_selector: str | None = None) -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else None
        data = await self.call("GET", res, namespace, params=params)
        return list((data or {}).get("items") or [])

    async def create(self, res: Res, namespace: str, body: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
        """(object, created): an existing object of that name (409) counts as done."""
        try:
            return await self.call("POST", res, namespace, body=body), True
        except Conflict:
            return None, False

    async def patch(self, res: Res, namespace: str, name: str, body: dict[str, Any],
                    sub: str | None = None) -> dict[str, Any]:
        return await self.call("PATCH", res, namespace, name, sub=sub, body=body)

    async def delete(self, res: Res, namespace: str, name: str, propagation: str = "Background") -> bool:
        """Delete an object, its dependents (a Job's pods) by `propagation`: "Background" (the object goes now)
        or "Foreground" (it stays, with a deletionTimestamp, until its dependents are gone). False if missing."""
        try:
            await self.call("DELETE", res, namespace, name,
                            body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation})
            return True
        except NotFound:
            return False


async def _maybe_await(x: Any) -> Any:
    return await x if asyncio.iscoroutine(x) else x


def _pem(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    if b"-----BEGIN" in raw:
        return raw.decode()
    return base64.b64decode(raw).decode()


def _tempfile(content: str) -> str:
    f = tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False)
    f.write(content)
    f.close()
    return f.name
