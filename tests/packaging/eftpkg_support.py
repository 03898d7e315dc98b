"""Shared helpers of the packaging tests (images, chart, Argo CD). Plain functions, no fixtures.

The module name is unusual on purpose: the tests run in pytest's default (prepend) import mode without
`__init__.py` files, so every helper module name must be unique across the whole tests tree.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"
CHART = ROOT / "charts" / "embedding-finetune-operator"
ARGOCD = ROOT / "argocd"


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def read_env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


# ----------------------------------------------------------------------------- Dockerfiles
@dataclass
class Instruction:
    keyword: str  # upper case
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the build stages of a Dockerfile (line continuations joined, comments dropped)."""
    logical: list[tuple[int, str]] = []
    buf, start = "", 0
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment inside a continued instruction
        if not buf:
            start = n
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        logical.append((start, buf + stripped))
        buf = ""
    assert not buf, f"{path}: dangling line continuation"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for n, text in logical:
        keyword, _, args = text.partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=parts[0], name=name))
        elif not stages:
            assert keyword == "ARG", f"{path}:{n}: only ARG may precede the first FROM"
            key, _, default = args.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, args, n))
    return global_args, stages


def expand(value: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m.group(1) or m.group(2), m.group(0)), value)


def exec_form(instruction: Instruction) -> list[str]:
    """The JSON (exec) form of ENTRYPOINT/CMD; shell form is rejected (signals would not reach the process)."""
    value = json.loads(instruction.args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), instruction
    return value


def parse_labels(stage: Stage) -> dict[str, str]:
    labels = {}
    for ins in stage.all("LABEL"):
        for token in shlex.split(ins.args):
            key, _, value = token.partition("=")
            labels[key] = value
    return labels


def parse_requirements(path: Path) -> dict[str, str]:
    """name (canonical) -> pinned version; every requirement line must be an exact `==` pin."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{path}: '{line}' is not pinned with =="
        name = canonicalize_name(req.name)
        assert name not in pins, f"{path}: {name} pinned twice"
        pins[name] = specs[0].version
    return pins


# ----------------------------------------------------------------------------- Argo CD health (Lua)
#: What a health script may use: Argo CD runs it in gopher-lua (Lua 5.1) with the base, table, string and
#: math libraries; io, os, require, load* are not offered here, so a script relying on them fails the tests.
LUA_SANDBOX = ("type", "tostring", "tonumber", "ipairs", "pairs", "next", "select", "pcall", "error",
               "assert", "unpack", "string", "table", "math")


def run_health_lua(script: str, obj) -> dict:
    """Run an Argo CD health script on a resource (a dict as Argo CD would pass it) with a real Lua 5.1."""
    from lupa import lua51

    lua = lua51.LuaRuntime(unpack_returned_tuples=True, register_eval=False, register_builtins=False)
    g = lua.globals()
    env = lua.table()
    for name in LUA_SANDBOX:
        env[name] = g[name]
    env["obj"] = lua.table_from(obj, recursive=True) if isinstance(obj, (dict, list)) else obj
    chunk = lua.eval("function(src, env) local f = assert(loadstring(src, '=health.lua')); "
                     "setfenv(f, env); return f() end")
    result = chunk(script, env)
    assert lupa_type(result) == "table", f"health script returned {result!r}"
    return {k: v for k, v in result.items()}


def lupa_type(value) -> str:
    from lupa import lua51

    return lua51.lua_type(value) or type(value).__name__
