"""Derive the operator's Kubernetes API calls from the controller's source, without running it.

What it reads (operator/eft/controller/*.py):
* calls on the controller's client, `api.<verb>(RES, ...)` / `self.api.<verb>(RES, ...)` with verb get, list,
  create, patch, delete (`sub="status"` makes it the status subresource), and `api.call("METHOD", RES, ...)`;
  RES is a module-level `eft.controller.kube.Res` constant, or a parameter of the enclosing function, in which
  case every call site of that function supplies it (helpers such as `_ensure(res, ...)`);
* Kopf registrations, `@kopf.on.event(group, version, plural)` and `@kopf.index(...)` (list + watch), and the
  change-tracking ones (`on.create/update/delete/resume/field`, timers, daemons), which also patch the resource.

It is loud rather than lenient: an argument it cannot resolve, a second Kubernetes client (the `kubernetes`
package, raw aiohttp outside kube.py), or a forwarded parameter without call sites raises `ScanError`.
What Kopf itself requests regardless of the handlers (CRD observation, its Events) is not
in the handlers' code; `KOPF_FRAMEWORK` lists it with the reason for each, checked against Kopf's source.
"""

from __future__ import annotations

import ast
import importlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

from eftpkg_support import ROOT

CONTROLLER = ROOT / "operator" / "eft" / "controller"
CLIENT_VERBS = {"get": "get", "list": "list", "create": "create", "patch": "patch", "delete": "delete"}
KOPF_WATCHERS = {"event", "index"}
KOPF_CHANGERS = {"create", "update", "delete", "resume", "field", "timer", "daemon"}


class ScanError(Exception):
    pass


def kopf_framework(resource_group: str, resource_plural: str) -> dict[tuple[str, str, str], str]:
    """Requests Kopf makes on its own, with why (kopf/_core/reactor/observation.py, _cogs/clients/events.py,
    _core/reactor/processing.py; the operator runs with standalone=True, so no peering resources).

    Not listed: namespaces. Kopf's namespace observer lists/watches them only when not clusterwide, and then
    falls back to the exact names given when forbidden; with --all-namespaces it requests nothing."""
    return {
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"): "Kopf's resource observer (references.CRDS)",
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"): "Kopf's resource observer (references.CRDS)",
        ("", "events", "create"): "Kopf posts its own warnings as core/v1 Events (references.EVENTS)",
        (resource_group, resource_plural, "patch"): "Kopf removes a stale finalizer of its own and applies "
                                                     "patches returned by handlers (reactor/processing.py)",
    }


def admission_needs(resource_group: str, resource_plural: str) -> dict[tuple[str, str, str], str]:
    """Permissions the API server checks on requests the controller makes, without a call of their own: the
    OwnerReferencesPermissionEnforcement admission plugin refuses an owner reference with blockOwnerDeletion
    unless the creator may update the owner's finalizers (only while our owner references set it)."""
    sys.path.insert(0, str(ROOT / "operator"))
    manifests = importlib.import_module("eft.controller.manifests")
    ref = manifests.owner_reference(manifests.Owner(name="x", namespace="y", uid="u", generation=1))
    if not ref.get("blockOwnerDeletion"):
        return {}
    return {(resource_group, f"{resource_plural}/finalizers", "update"):
            "OwnerReferencesPermissionEnforcement: children's owner references set blockOwnerDeletion"}


@dataclass
class Scan:
    calls: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)

    def add(self, triple, where):
        self.calls.setdefault(triple, []).append(where)


def _res_constants() -> dict[str, object]:
    """Module-level Res constants of every controller module, by name."""
    sys.path.insert(0, str(ROOT / "operator"))
    kube = importlib.import_module("eft.controller.kube")
    found: dict[str, object] = {}
    for path in sorted(CONTROLLER.glob("*.py")):
        mod = importlib.import_module(f"eft.controller.{path.stem}") if path.stem != "__init__" else None
        for name, value in vars(mod or {}).items() if mod else []:
            if isinstance(value, kube.Res):
                if name in found and found[name] != value:
                    raise ScanError(f"Res constant {name} means two things")
                found[name] = value
    return found


def _module_globals(path: Path) -> dict:
    return vars(importlib.import_module(f"eft.controller.{path.stem}"))


def _is_api(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id == "api") or (isinstance(node, ast.Attribute) and node.attr == "api")


def _const(node: ast.AST, globs: dict, where: str):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in globs:
        return globs[node.id]
    if isinstance(node, ast.JoinedStr):
        raise ScanError(f"{where}: f-string resource names are not resolved")
    raise ScanError(f"{where}: cannot resolve {ast.dump(node)[:80]}")


#: Modules of the kubernetes client that make no API call (quantity parsing), so the scan may let them pass.
CLIENT_OFFLINE_MODULES = {"kubernetes.utils.quantity"}


def scan_controller() -> Scan:
    res_by_name = _res_constants()
    scan = Scan()
    forwards: list[tuple[str, int, str, str | None, str]] = []  # (function, param index, verb, sub, where)
    trees = {}
    for path in sorted(CONTROLLER.glob("*.py")):
        source = path.read_text()
        tree = ast.parse(source)
        trees[path] = tree
        rel = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any((n == "kubernetes" or n.startswith("kubernetes.")) and n not in CLIENT_OFFLINE_MODULES
                       for n in names):
                    raise ScanError(f"{rel}:{node.lineno}: the kubernetes client is used; extend the scanner")
                if path.name != "kube.py" and any(n == "aiohttp" or n.startswith("aiohttp.") for n in names):
                    raise ScanError(f"{rel}:{node.lineno}: raw HTTP outside kube.py; extend the scanner")
        if path.name == "kube.py":
            continue  # the client itself: its calls are what the wrappers are
        globs = _module_globals(path)
        for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            params = [a.arg for a in func.args.args]
            # Kopf registrations on this function.
            for dec in func.decorator_list:
                if not isinstance(dec, ast.Call):
                    continue
                chain = ast.unparse(dec.func)
                kind = chain.rsplit(".", 1)[-1]
                if not chain.startswith("kopf."):
                    continue
                if kind in KOPF_WATCHERS | KOPF_CHANGERS and len(dec.args) >= 3:
                    where = f"{rel}:{dec.lineno}"
                    group, _version, plural = (_const(a, globs, where) for a in dec.args[:3])
                    scan.add((group, plural, "list"), where)
                    scan.add((group, plural, "watch"), where)
                    if kind in KOPF_CHANGERS:
                        scan.add((group, plural, "patch"), where)
            for call in [n for n in ast.walk(func) if isinstance(n, ast.Call)]:
                f = call.func
                if not (isinstance(f, ast.Attribute) and _is_api(f.value)):
                    continue
                where = f"{rel}:{call.lineno}"
                if f.attr == "call":
                    method = _const(call.args[0], globs, where)
                    res_arg = call.args[1]
                    has_name = len(call.args) > 3 or any(k.arg == "name" for k in call.keywords)
                    verb = {"GET": "get" if has_name else "list", "POST": "create", "PATCH": "patch",
                            "PUT": "update", "DELETE": "delete"}[method]
                elif f.attr in CLIENT_VERBS:
                    verb = CLIENT_VERBS[f.attr]
                    res_arg = call.args[0]
                else:
                    continue  # close() and the like
                sub = next((_const(k.value, globs, where) for k in call.keywords if k.arg == "sub"), None)
                if isinstance(res_arg, ast.Name) and res_arg.id in res_by_name:
                    res = res_by_name[res_arg.id]
                    scan.add((res.group, f"{res.plural}/{sub}" if sub else res.plural, verb), where)
                elif isinstance(res_arg, ast.Name) and res_arg.id in params:
                    forwards.append((func.name, params.index(res_arg.id), verb, sub, where))
                else:
                    raise ScanError(f"{where}: cannot tell which resource {ast.unparse(res_arg)} is")
    # Resolve helpers that take the resource as a parameter, through their call sites.
    for fname, index, verb, sub, where in forwards:
        sites = 0
        for path, tree in trees.items():
            for call in [n for n in ast.walk(tree) if isinstance(n, ast.Call)]:
                f = call.func
                name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
                if name != fname:
                    continue
                # A method called as self.f(...): the first parameter (self) is not in call.args.
                arg_index = index - 1 if isinstance(f, ast.Attribute) and index > 0 else index
                if arg_index >= len(call.args):
                    continue
                arg = call.args[arg_index]
                site = f"{path.relative_to(ROOT)}:{call.lineno}"
                if not (isinstance(arg, ast.Name) and arg.id in res_by_name):
                    raise ScanError(f"{site}: {fname}() gets a resource that is not a Res constant")
                res = res_by_name[arg.id]
                scan.add((res.group, f"{res.plural}/{sub}" if sub else res.plural, verb), f"{site} via {where}")
                sites += 1
        if not sites:
            raise ScanError(f"{where}: {fname}() forwards a resource but has no call sites")
    return scan
