"""The operator's configuration: one typed, documented object, read from the environment and the `eft operator`
flags in one place (`OperatorConfig.load`) and passed to everything that needs it. Nothing else in the
controller reads `os.environ`, and nothing writes it.

Every field documents the environment variable it comes from (`env` in the field's metadata; the Helm chart
sets these) and, where there is one, the `eft operator` flag that overrides it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Mapping

import yaml
from pydantic import ValidationError

from eft.api.loader import problems_from_validation_error
from eft.api.spec import DEFAULT_PIPELINE_IMAGE, DEFAULT_SERVER_IMAGE, StageRuntime
from eft.api.stages import STAGES

OPERATOR_NAME = "embedding-finetune-operator"

#: Job `activeDeadlineSeconds` per stage when neither the resource nor the defaults file sets one.
DEFAULT_DEADLINES: dict[str, int] = {s.name: s.deadline_seconds for s in STAGES if s.deadline_seconds}
DEFAULT_BACKOFF_LIMIT = 2


def _setting(default: Any, env: str | None, parse: Callable[[str], Any] = str, flag: str | None = None,
             doc: str = "") -> Any:
    return field(default=default, metadata={"env": env, "parse": parse, "flag": flag, "doc": doc})


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be at least 1 (got {value})")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError(f"must not be negative (got {value})")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"must be a port number, or 0 to disable (got {value})")
    return value


def _check_runtime_layer(path: str, where: str, layer: Mapping[str, Any]) -> None:
    """ValueError naming the defaults file, the layer (`stages.train`, `server`) and every field of `layer` that
    `spec.runtime.stages.<stage>` would refuse."""
    try:
        StageRuntime.model_validate(layer)
    except ValidationError as err:
        problems = "; ".join(f"{where}.{field}: {message}" for field, message in problems_from_validation_error(err))
        raise ValueError(f"{path}: {problems}") from None


@dataclass(frozen=True)
class OperatorConfig:
    """Operator-wide settings.

    `stage_defaults` / `server_defaults` come from the chart's defaults file (`EFT_DEFAULTS_FILE`: YAML with
    `stages: {all: ..., <stage>: ...}` in the keys of `spec.runtime.stages.<stage>`, and `server: {resources,
    nodeSelector, tolerations}`); a resource's `spec.runtime` and `spec.deploy.resources` override them.
    """

    pipeline_image: str = _setting(DEFAULT_PIPELINE_IMAGE, "EFT_PIPELINE_IMAGE",
                                   doc="Image of every stage Job unless the resource names one.")
    server_image: str = _setting(DEFAULT_SERVER_IMAGE, "EFT_SERVER_IMAGE",
                                 doc="Image of the server Deployment unless spec.deploy.image is set.")
    defaults_file: str | None = _setting(None, "EFT_DEFAULTS_FILE",
                                         doc="YAML file of per-stage and server pod defaults (the chart's "
                                             "ConfigMap); read into stage_defaults and server_defaults.")
    workers: int = _setting(8, "EFT_WORKERS", _positive_int, "--workers",
                            doc="Resources reconciled concurrently.")
    resync_seconds: float = _setting(60.0, "EFT_RESYNC_SECONDS", _non_negative_float,
                                     doc="Every resource is reconciled at least this often (the safety net).")
    ref_cache_seconds: float = _setting(20.0, "EFT_REF_CACHE_SECONDS", _non_negative_float,
                                        doc="How long a looked-up Secret or claim counts as current.")
    watch_timeout_seconds: float = _setting(300.0, "EFT_WATCH_TIMEOUT", _non_negative_float,
                                            doc="Server-side timeout of Kopf's watch requests.")
    liveness_port: int = _setting(8080, "EFT_LIVENESS_PORT", _port, "--liveness-port",
                                  doc="Kopf's health endpoint (GET /healthz) for the probes; 0 disables it.")
    metrics_port: int = _setting(9090, "EFT_METRICS_PORT", _port, "--metrics-port",
                                 doc="Prometheus metrics (GET /metrics); 0 disables them.")
    namespace: str | None = _setting(None, "EFT_OPERATOR_NAMESPACE",
                                     doc="Namespace the operator runs in (logged at start-up).")
    instance: str = _setting(OPERATOR_NAME, "EFT_OPERATOR_POD_NAME",
                             doc="This operator's pod name: the `reportingInstance` of its Events "
                                 "(falls back to HOSTNAME).")
    namespaces: tuple[str, ...] = _setting((), None, flag="--namespace",
                                           doc="Namespaces watched (globs allowed); empty with all_namespaces.")
    all_namespaces: bool = _setting(False, None, flag="--all-namespaces", doc="Watch every namespace.")
    debug: bool = _setting(False, None, flag="--debug", doc="Debug logging, Kopf's included.")
    default_backoff_limit: int = _setting(DEFAULT_BACKOFF_LIMIT, None,
                                          doc="Job backoffLimit unless the resource or defaults set one.")
    default_ttl_seconds_after_finished: int = _setting(
        7 * 24 * 3600, None, doc="Job ttlSecondsAfterFinished unless the resource or defaults set one.")
    deadlines: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_DEADLINES),
                                         metadata={"env": None, "doc": "Job activeDeadlineSeconds per stage."})
    stage_defaults: Mapping[str, dict[str, Any]] = field(
        default_factory=dict, metadata={"env": None, "doc": "From defaults_file: `stages`."})
    server_defaults: Mapping[str, Any] = field(
        default_factory=dict, metadata={"env": None, "doc": "From defaults_file: `server`."})

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **flags: Any) -> "OperatorConfig":
        """Read every setting from `env` (default: the process environment), then apply the flags given
        (None = not given), then the defaults file. ValueError names the variable or flag that is wrong."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            name, parse = f.metadata.get("env"), f.metadata.get("parse", str)
            if name and env.get(name):
                try:
                    values[f.name] = parse(env[name])
                except ValueError as err:
                    raise ValueError(f"{name}: {err}") from None
        if "instance" not in values and env.get("HOSTNAME"):
            values["instance"] = env["HOSTNAME"][:128]
        for key, value in flags.items():
            if key not in {f.name for f in fields(cls)}:
                raise TypeError(f"unknown operator setting {key!r}")
            if value is not None:
                values[key] = value
        config = cls(**values)
        return config._with_defaults_file()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "OperatorConfig":
        """`load` without flags."""
        return cls.load(env)

    def _with_defaults_file(self) -> "OperatorConfig":
        path = self.defaults_file
        if not path or not os.path.exists(path):
            return self
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
        stages = {k: dict(v or {}) for k, v in (data.get("stages") or {}).items()}
        for name, layer in stages.items():  # same keys and bounds as spec.runtime.stages.<stage>
            _check_runtime_layer(path, f"stages.{name}", layer)
        server = dict(data.get("server") or {})
        # resources, nodeSelector and tolerations: the same rules as a stage's (label keys and values included)
        _check_runtime_layer(path, "server", {k: v for k, v in server.items()
                                              if k in ("resources", "nodeSelector", "tolerations")})
        return replace(self, stage_defaults=stages, server_defaults=server)

    @classmethod
    def documentation(cls) -> list[tuple[str, str | None, str | None, str]]:
        """(field, environment variable, flag, description) of every setting, for docs and tests."""
        return [(f.name, f.metadata.get("env"), f.metadata.get("flag"), f.metadata.get("doc", ""))
                for f in fields(cls)]
