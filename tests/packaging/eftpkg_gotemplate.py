"""A small, strict renderer for the subset of Helm's Go templates that the chart uses.

There is no `helm` binary on the project's machines, so the chart tests render the templates with this
instead. It is deliberately narrow and loud: every construct or function it does not implement raises
`TemplateError`, so a template that leaves the subset fails the tests rather than being skipped. What it does
implement follows Go's text/template and Sprig semantics where the chart depends on them:

* actions `{{ }}` with `{{-`/`-}}` whitespace trimming and `{{/* comments */}}`;
* `define`, `include`, `if`/`else if`/`else`, `with`/`else`, `range` (lists and maps, sorted keys; `$v :=`
  and `$i, $v :=` forms), `end`, variables (`$x := ...`, `$`), pipelines with `|` and parentheses;
* functions: and, or, not, eq, ne, lt, gt, le, ge, default, empty, required, fail, quote, squote, printf,
  print, toYaml, toJson, indent, nindent, trunc, trimSuffix, trimPrefix, lower, upper, replace, list, dict,
  hasKey, index, toString, int, len, contains, sha256sum. Not supported (and so not used by the chart):
  semverCompare, lookup, tpl, .Files, .Capabilities checks, template/block.
* field access on a missing key gives nil (Helm's missingkey=zero); a field of nil raises like Go does;
  printing nil gives "" (Helm replaces "<no value>"); printing a map or list raises (a template bug).

Differences from Helm that matter for reading the results: `toYaml` uses PyYAML (keys sorted, like Helm's
sigs.k8s.io/yaml); numbers print in Python's form, which equals Go's for the integers and short decimals the
chart uses. The chart's templates are kept inside this subset on purpose (see charts/README in docs/deploying.md).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class TemplateError(Exception):
    pass


# ----------------------------------------------------------------------------- lexing
_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)


@dataclass
class Text:
    text: str


@dataclass
class Action:
    src: str
    where: str


@dataclass
class Node:
    kind: str  # output, assign, if, range, with, define
    where: str
    pipeline: list | None = None
    var: str | None = None  # assign target / range value var
    key_var: str | None = None
    declare: bool = True
    branches: list = field(default_factory=list)  # if: [(pipeline|None, body)], range/with: body, else
    body: list = field(default_factory=list)
    else_body: list = field(default_factory=list)
    name: str | None = None


def _lex(source: str, name: str) -> list:
    items: list = []
    pos = 0
    for m in _ACTION.finditer(source):
        text = source[pos:m.start()]
        if m.group(1):
            text = text.rstrip(" \t\r\n")
        items.append(Text(text))
        line = source.count("\n", 0, m.start()) + 1
        inner = m.group(2).strip()
        if not (inner.startswith("/*") and inner.endswith("*/")):
            items.append(Action(inner, f"{name}:{line}"))
        pos = m.end()
        if m.group(3):
            rest = source[pos:]
            pos += len(rest) - len(rest.lstrip(" \t\r\n"))
    items.append(Text(source[pos:]))
    return items


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>"(?:[^"\\]|\\.)*")
    | (?P<raw>`[^`]*`)
    | (?P<num>-?\d+(?:\.\d+)?)
    | (?P<assign>:=|=)
    | (?P<punct>[|(),])
    | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.X,
)


def _tokens(src: str, where: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    src = src.rstrip()
    while pos < len(src):
        m = _TOKEN.match(src, pos)
        if not m or m.end() == pos:
            raise TemplateError(f"{where}: cannot tokenize {src[pos:]!r}")
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


# ----------------------------------------------------------------------------- parsing
def _parse_pipeline(tokens: list, where: str) -> list:
    """A pipeline is a list of commands; a command is a list of operands (tokens or nested pipelines)."""
    commands, current, i = [], [], 0
    while i < len(tokens):
        kind, value = tokens[i]
        if kind == "punct" and value == "|":
            if not current:
                raise TemplateError(f"{where}: empty command in pipeline")
            commands.append(current)
            current = []
        elif kind == "punct" and value == "(":
            depth, j = 1, i + 1
            while j < len(tokens) and depth:
                if tokens[j] == ("punct", "("):
                    depth += 1
                elif tokens[j] == ("punct", ")"):
                    depth -= 1
                j += 1
            if depth:
                raise TemplateError(f"{where}: unbalanced parenthesis")
            current.append(("pipe", _parse_pipeline(tokens[i + 1:j - 1], where)))
            i = j
            continue
        elif kind == "punct":
            raise TemplateError(f"{where}: unexpected {value!r}")
        else:
            current.append((kind, value))
        i += 1
    if not current:
        raise TemplateError(f"{where}: empty pipeline")
    commands.append(current)
    return commands


def _split_decl(src: str, where: str):
    """`$a := pipe`, `$i, $v := pipe` -> (key_var, var, declare, pipeline tokens) or None."""
    tokens = _tokens(src, where)
    for n, (kind, value) in enumerate(tokens):
        if kind == "assign":
            names = [t for t in tokens[:n] if t != ("punct", ",")]
            if not names or any(k != "var" for k, _ in names):
                raise TemplateError(f"{where}: bad declaration {src!r}")
            vars_ = [v for _, v in names]
            key_var, var = (vars_[0], vars_[1]) if len(vars_) == 2 else (None, vars_[0])
            return key_var, var, value == ":=", tokens[n + 1:]
    return None


class Parser:
    def __init__(self, items: list):
        self.items = items
        self.pos = 0

    def parse(self, stop=()) -> tuple[list, Action | None]:
        body: list = []
        while self.pos < len(self.items):
            item = self.items[self.pos]
            self.pos += 1
            if isinstance(item, Text):
                if item.text:
                    body.append(item)
                continue
            src, where = item.src, item.where
            word = src.split(None, 1)[0] if src else ""
            if word in ("end", "else"):
                if word not in stop and not (word == "else" and "else" in stop):
                    raise TemplateError(f"{where}: unexpected {{{{ {src} }}}}")
                return body, item
            body.append(self._node(src, where, word))
        if stop:
            raise TemplateError(f"missing {{{{ end }}}} (expected one of {stop})")
        return body, None

    def _node(self, src: str, where: str, word: str) -> Node:
        rest = src[len(word):].strip()
        if word == "define":
            name = json.loads(rest)
            body, _ = self.parse(stop=("end",))
            return Node("define", where, name=name, body=body)
        if word == "if":
            node = Node("if", where)
            cond = _parse_pipeline(_tokens(rest, where), where)
            while True:
                body, closer = self.parse(stop=("end", "else"))
                node.branches.append((cond, body))
                if closer.src == "end":
                    return node
                tail = closer.src[len("else"):].strip()
                if tail.startswith("if "):
                    cond = _parse_pipeline(_tokens(tail[3:], where), closer.where)
                elif tail:
                    raise TemplateError(f"{closer.where}: unsupported {{{{ {closer.src} }}}}")
                else:
                    cond = None
        if word in ("range", "with"):
            node = Node(word, where)
            decl = _split_decl(rest, where) if word == "range" else None
            if decl:
                node.key_var, node.var, _, toks = decl
            else:
                toks = _tokens(rest, where)
            node.pipeline = _parse_pipeline(toks, where)
            node.body, closer = self.parse(stop=("end", "else"))
            if closer.src != "end":
                if closer.src.strip() != "else":
                    raise TemplateError(f"{closer.where}: unsupported {{{{ {closer.src} }}}}")
                node.else_body, closer = self.parse(stop=("end",))
            return node
        if word in ("template", "block", "break", "continue", "tpl"):
            raise TemplateError(f"{where}: `{word}` is outside the supported subset")
        decl = _split_decl(src, where)
        if decl:
            key_var, var, declare, toks = decl
            if key_var:
                raise TemplateError(f"{where}: two variables outside range")
            return Node("assign", where, var=var, declare=declare, pipeline=_parse_pipeline(toks, where))
        return Node("output", where, pipeline=_parse_pipeline(_tokens(src, where), where))


# ----------------------------------------------------------------------------- evaluation
def truthy(value) -> bool:
    if value is None or value is False:
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value != 0
    if isinstance(value, (str, list, dict, tuple)):
        return len(value) > 0
    return True


def go_print(value, where: str = "") -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value)) if abs(value) < 1e6 else repr(value)
    if isinstance(value, (dict, list)):
        raise TemplateError(f"{where}: printing a {type(value).__name__} directly (use toYaml)")
    return str(value)


def to_yaml(value) -> str:
    if value is None:
        return "null"
    return yaml.safe_dump(value, default_flow_style=False, sort_keys=True, width=10_000).rstrip("\n").removesuffix(
        "\n...")


def _same_kind(a, b) -> bool:
    def kind(v):
        if isinstance(v, bool):
            return "bool"
        if isinstance(v, (int, float)):
            return "number"
        return type(v).__name__

    return a is None or b is None or kind(a) == kind(b)


def _printf(fmt: str, *args) -> str:
    args = list(args)
    out, i = [], 0

    def take():
        if not args:
            raise TemplateError(f"printf {fmt!r}: too few arguments")
        return args.pop(0)

    while i < len(fmt):
        c = fmt[i]
        if c == "%" and i + 1 < len(fmt):
            verb = fmt[i + 1]
            i += 2
            if verb == "%":
                out.append("%")
            elif verb in "sv":
                out.append(go_print(take()))
            elif verb == "d":
                out.append(str(int(take())))
            elif verb == "q":
                out.append(json.dumps(go_print(take())))
            else:
                raise TemplateError(f"printf verb %{verb} is outside the supported subset")
        else:
            out.append(c)
            i += 1
    return "".join(out)


class Renderer:
    def __init__(self, templates: dict[str, str]):
        self.defines: dict[str, list] = {}
        self.trees: dict[str, list] = {}
        for name, source in templates.items():
            body, _ = Parser(_lex(source, name)).parse()
            self.trees[name] = body
            self._collect_defines(body)

    def _collect_defines(self, body):
        for node in body:
            if isinstance(node, Node) and node.kind == "define":
                if node.name in self.defines:
                    raise TemplateError(f"{node.where}: template {node.name!r} defined twice")
                self.defines[node.name] = node.body

    def render(self, name: str, context: dict) -> str:
        return self._exec(self.trees[name], context, {"$": context})

    # -- statements
    def _exec(self, body, dot, variables) -> str:
        out = []
        variables = dict(variables)  # a block's own variables end with the block
        for node in body:
            if isinstance(node, Text):
                out.append(node.text)
            elif node.kind == "define":
                continue
            elif node.kind == "output":
                out.append(go_print(self._pipeline(node.pipeline, dot, variables, node.where), node.where))
            elif node.kind == "assign":
                if not node.declare and node.var not in variables:
                    raise TemplateError(f"{node.where}: assignment to undeclared {node.var}")
                variables[node.var] = self._pipeline(node.pipeline, dot, variables, node.where)
            elif node.kind == "if":
                for cond, branch in node.branches:
                    if cond is None or truthy(self._pipeline(cond, dot, variables, node.where)):
                        out.append(self._exec(branch, dot, variables))
                        break
            elif node.kind == "with":
                value = self._pipeline(node.pipeline, dot, variables, node.where)
                if truthy(value):
                    out.append(self._exec(node.body, value, variables))
                else:
                    out.append(self._exec(node.else_body, dot, variables))
            elif node.kind == "range":
                value = self._pipeline(node.pipeline, dot, variables, node.where)
                if isinstance(value, dict):
                    pairs = [(k, value[k]) for k in sorted(value)]
                elif isinstance(value, (list, tuple)):
                    pairs = list(enumerate(value))
                elif value is None:
                    pairs = []
                elif isinstance(value, int):
                    pairs = [(i, i) for i in range(value)]
                else:
                    raise TemplateError(f"{node.where}: range over {type(value).__name__}")
                if not pairs:
                    out.append(self._exec(node.else_body, dot, variables))
                for k, v in pairs:
                    inner = dict(variables)
                    if node.var:
                        inner[node.var] = v
                    if node.key_var:
                        inner[node.key_var] = k
                    out.append(self._exec(node.body, v, inner))
            else:  # pragma: no cover
                raise TemplateError(f"{node.where}: unknown node {node.kind}")
        return "".join(out)

    # -- expressions
    def _pipeline(self, pipeline, dot, variables, where):
        value, first = None, True
        for command in pipeline:
            value = self._command(command, dot, variables, where, None if first else (value,))
            first = False
        return value

    def _operand(self, operand, dot, variables, where):
        kind, value = operand
        if kind == "pipe":
            return self._pipeline(value, dot, variables, where)
        if kind == "str":
            return json.loads(value)
        if kind == "raw":
            return value[1:-1]
        if kind == "num":
            return float(value) if "." in value else int(value)
        if kind == "field":
            return dot if value == "." else self._fields(dot, value[1:].split("."), where, value)
        if kind == "var":
            name, _, rest = value.partition(".")
            if name not in variables:
                raise TemplateError(f"{where}: undefined variable {name}")
            base = variables[name]
            return self._fields(base, rest.split("."), where, value) if rest else base
        if kind == "ident":
            if value in ("true", "false"):
                return value == "true"
            if value == "nil":
                return None
            return self._call(value, [], where)
        raise TemplateError(f"{where}: unexpected {value!r}")

    @staticmethod
    def _fields(base, names, where, expr):
        for n in names:
            if base is None:
                raise TemplateError(f"{where}: nil pointer evaluating {expr} (at .{n})")
            if not isinstance(base, dict):
                raise TemplateError(f"{where}: can't evaluate field {n} in {type(base).__name__} ({expr})")
            base = base.get(n)
        return base

    def _command(self, command, dot, variables, where, piped):
        head_kind, head = command[0]
        if head_kind == "ident" and head not in ("true", "false", "nil"):
            args = [self._operand(op, dot, variables, where) for op in command[1:]]
            if piped:
                args += list(piped)
            return self._call(head, args, where, dot=dot, variables=variables)
        if len(command) > 1 or piped:
            raise TemplateError(f"{where}: can't give arguments to a non-function {head!r}")
        return self._operand(command[0], dot, variables, where)

    def _call(self, name, args, where, dot=None, variables=None):
        def need(n):
            if len(args) != n:
                raise TemplateError(f"{where}: {name} expects {n} arguments, got {len(args)}")

        if name == "include":
            need(2)
            if args[0] not in self.defines:
                raise TemplateError(f"{where}: no template {args[0]!r}")
            return self._exec(self.defines[args[0]], args[1], {"$": args[1]})
        if name == "and":
            for a in args:
                if not truthy(a):
                    return a
            return args[-1]
        if name == "or":
            for a in args:
                if truthy(a):
                    return a
            return args[-1]
        if name == "not":
            need(1)
            return not truthy(args[0])
        if name in ("eq", "ne", "lt", "gt", "le", "ge"):
            need(2)
            if not _same_kind(*args):
                raise TemplateError(f"{where}: incompatible types for comparison {args!r}")
            a, b = args
            return {"eq": a == b, "ne": a != b}.get(name) if name in ("eq", "ne") else \
                {"lt": a < b, "gt": a > b, "le": a <= b, "ge": a >= b}[name]
        if name == "default":
            need(2)
            return args[1] if truthy(args[1]) else args[0]
        if name == "empty":
            need(1)
            return not truthy(args[0])
        if name == "required":
            need(2)
            if args[1] is None or args[1] == "":
                raise TemplateError(f"{where}: required: {args[0]}")
            return args[1]
        if name == "fail":
            need(1)
            raise TemplateError(f"{where}: fail: {args[0]}")
        if name == "quote":
            return " ".join(json.dumps(go_print(a)) for a in args if a is not None)
        if name == "squote":
            return " ".join("'" + go_print(a) + "'" for a in args if a is not None)
        if name == "printf":
            return _printf(args[0], *args[1:])
        if name == "print":
            return "".join(go_print(a) for a in args)
        if name == "toYaml":
            need(1)
            return to_yaml(args[0])
        if name == "toJson":
            need(1)
            return json.dumps(args[0], sort_keys=True, separators=(",", ":"))
        if name in ("indent", "nindent"):
            need(2)
            pad = " " * int(args[0])
            text = pad + str(args[1]).replace("\n", "\n" + pad)
            return ("\n" + text) if name == "nindent" else text
        if name == "trunc":
            need(2)
            n, s = int(args[0]), str(args[1])
            return s[:n] if n >= 0 else s[n:]
        if name == "trimSuffix":
            need(2)
            return str(args[1]).removesuffix(args[0])
        if name == "trimPrefix":
            need(2)
            return str(args[1]).removeprefix(args[0])
        if name in ("lower", "upper"):
            need(1)
            return getattr(str(args[0]), name)()
        if name == "replace":
            need(3)
            return str(args[2]).replace(args[0], args[1])
        if name == "contains":
            need(2)
            return str(args[0]) in str(args[1])
        if name == "list":
            return list(args)
        if name == "dict":
            if len(args) % 2:
                raise TemplateError(f"{where}: dict needs key/value pairs")
            return {str(args[i]): args[i + 1] for i in range(0, len(args), 2)}
        if name == "hasKey":
            need(2)
            return isinstance(args[0], dict) and args[1] in args[0]
        if name == "index":
            base = args[0]
            for k in args[1:]:
                base = base[k] if isinstance(base, list) else (base or {}).get(k)
            return base
        if name == "toString":
            need(1)
            return go_print(args[0])
        if name == "int":
            need(1)
            return int(args[0] or 0)
        if name == "sha256sum":
            need(1)
            return hashlib.sha256(str(args[0]).encode()).hexdigest()
        if name == "len":
            need(1)
            return len(args[0] or [])
        raise TemplateError(f"{where}: function {name!r} is outside the supported subset")


# ----------------------------------------------------------------------------- Helm-like chart rendering
def deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        elif v is None:
            out.pop(k, None)  # Helm: a null override deletes the default
        else:
            out[k] = v
    return out


def render_chart(chart_dir: Path, values: dict | None = None, release: str = "eft",
                 namespace: str = "eft-system") -> dict[str, str]:
    """Render every template of the chart like `helm template` would: {template path: text}."""
    chart_meta = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    defaults = yaml.safe_load((chart_dir / "values.yaml").read_text()) or {}
    merged = deep_merge(defaults, values or {})
    context = {
        "Values": merged,
        "Release": {"Name": release, "Namespace": namespace, "Service": "Helm", "IsInstall": True,
                    "IsUpgrade": False, "Revision": 1},
        "Chart": {k[:1].upper() + k[1:]: v for k, v in chart_meta.items()},
        "Capabilities": {"KubeVersion": {"Version": "v1.30.0", "Major": "1", "Minor": "30"}},
    }
    sources = {str(p.relative_to(chart_dir)): p.read_text()
               for p in sorted((chart_dir / "templates").rglob("*")) if p.is_file()}
    renderer = Renderer(sources)
    out = {}
    for name in sources:
        if Path(name).name.startswith("_"):
            continue
        out[name] = renderer.render(name, context)
    return out


def manifests(rendered: dict[str, str]) -> list[tuple[str, dict]]:
    """All YAML documents of the rendered templates (NOTES.txt excluded) as (template path, document)."""
    docs = []
    for name, text in rendered.items():
        if name.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc is not None:
                docs.append((name, doc))
    return docs
