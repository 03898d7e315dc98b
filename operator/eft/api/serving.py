"""The serving hand-off: one typed object for what `eft serve` runs with.

The operator builds it from the spec (`ServingSettings.for_resource`) and writes it into the server
Deployment (`command_line()` and `environment()`); `eft serve` parses exactly those flags and variables back
into the same object (`eft.serve.cli`). `SERVE_OPTIONS` is the single list of which field travels as which
flag and which environment variable, and the bounds, choices and defaults come from `DeploySpec`, so the
two sides cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from eft.api.spec import DeploySpec, EmbeddingFinetuneSpec, ServingBackend, field_bounds, field_default

BACKENDS: tuple[str, ...] = get_args(ServingBackend)
InputType = Literal["query", "passage"]
INPUT_TYPES: tuple[str, ...] = get_args(InputType)
DEFAULT_HOST = "0.0.0.0"
#: Files of the export stage (in `<workspace>/export/`) that the serving side reads: its summary, where
#: `eft serve` finds why a variant was not kept, and each int8 variant's test-split metrics, which `eft verify`
#: reproduces through an endpoint serving that variant.
EXPORT_SUMMARY_FILE = "export.json"
INT8_QUALITY_FILES = {"onnx-int8": "int8_quality.json", "openvino-int8": "openvino_int8_quality.json"}
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024


def deploy_default(name: str) -> Any:
    """The default of `spec.deploy.<name>` (snake_case field name)."""
    return field_default(DeploySpec, name)


def deploy_bounds(name: str) -> tuple[float | None, float | None]:
    """(lower, upper) inclusive bounds of a numeric `spec.deploy.<name>` field; None where unbounded."""
    return field_bounds(DeploySpec, name)


@dataclass
class ServingSettings:
    """Everything `eft serve` needs. Units: milliseconds for `max_wait_ms`, bytes for `max_request_bytes`."""

    model_dir: str
    host: str = DEFAULT_HOST
    port: int = deploy_default("port")
    backend: ServingBackend = deploy_default("backend")
    #: Model ids clients send as `model` (the first is shown); empty = the exported model's own name.
    served_model_names: tuple[str, ...] = ()
    max_batch_size: int = deploy_default("max_batch_size")
    max_wait_ms: float = deploy_default("max_wait_ms")
    max_inputs_per_request: int = deploy_default("max_inputs_per_request")
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    #: Inference threads; None = the CPUs this process may use (onnxruntime on CPU: also its lanes, see
    #: `eft.serve.backends.OnnxBackend`).
    threads: int | None = None
    #: Run a warm-up batch before reporting ready (tests switch it off).
    warmup: bool = True
    #: `input_type` for requests that send none; None = such requests get a 400 when the model's queries and
    #: passages are encoded differently (NIM's behaviour).
    default_input_type: InputType | None = None

    @classmethod
    def for_resource(cls, name: str, spec: EmbeddingFinetuneSpec, model_dir: str) -> "ServingSettings":
        """The settings the operator's server Deployment runs: `spec.deploy`, the model served as `name`."""
        d = spec.deploy
        return cls(model_dir=model_dir, port=d.port, backend=d.backend, served_model_names=(name,),
                   max_batch_size=d.max_batch_size, max_wait_ms=d.max_wait_ms,
                   max_inputs_per_request=d.max_inputs_per_request, default_input_type=d.default_input_type)

    def command_line(self) -> list[str]:
        """`eft serve` with the fields carried as flags."""
        args = ["eft", "serve"]
        for opt in SERVE_OPTIONS:
            if opt.carried == "flag":
                args += [opt.flag, str(getattr(self, opt.field))]
        return args

    def environment(self) -> list[dict[str, str]]:
        """Container `env` entries for the fields carried as environment variables (unset ones left out)."""
        out = []
        for opt in SERVE_OPTIONS:
            value = getattr(self, opt.field)
            if opt.carried != "env" or value is None or value == ():
                continue
            text = " ".join(value) if isinstance(value, tuple) else str(value)
            out.append({"name": opt.envvar, "value": text})
        return out


@dataclass(frozen=True)
class ServeOption:
    """How one field travels: `eft serve` reads `flag`, or `envvar` when the flag is absent. The operator
    writes it as a flag (`carried="flag"`), as a variable (`"env"`), or not at all (None: the default)."""

    field: str
    flag: str
    envvar: str
    carried: Literal["flag", "env"] | None
    help: str = ""


def serve_option(field_name: str) -> ServeOption:
    """The row of `SERVE_OPTIONS` for one `ServingSettings` field."""
    return next(o for o in SERVE_OPTIONS if o.field == field_name)


SERVE_OPTIONS: tuple[ServeOption, ...] = (
    ServeOption("model_dir", "--model", "EFT_MODEL_DIR", "flag",
                "An export folder (DIR/export), one variant (DIR/export/onnx), a workspace DIR, or a "
                "SentenceTransformer folder (served with PyTorch)."),
    ServeOption("host", "--host", "EFT_HOST", "flag"),
    ServeOption("port", "--port", "EFT_PORT", "flag"),
    ServeOption("backend", "--backend", "EFT_BACKEND", "env",
                "auto: TensorRT when an engine and a GPU exist, else ONNX (CUDA or CPU), else PyTorch."),
    ServeOption("served_model_names", "--served-model-name", "EFT_SERVED_MODEL_NAME", "env",
                "Model id(s) clients send as `model` (default: the exported model's name)."),
    ServeOption("max_batch_size", "--max-batch-size", "EFT_MAX_BATCH_SIZE", "env",
                "Most texts in one inference batch."),
    ServeOption("max_wait_ms", "--max-wait-ms", "EFT_MAX_WAIT_MS", "env",
                "Longest wait for more requests to fill a batch (milliseconds)."),
    ServeOption("max_inputs_per_request", "--max-inputs", "EFT_MAX_INPUTS", "env", "Most texts in one request."),
    ServeOption("default_input_type", "--default-input-type", "EFT_DEFAULT_INPUT_TYPE", "env",
                "input_type for requests that send none. Without it, a model whose queries and passages are "
                "encoded differently answers such requests with a 400 (as NVIDIA NIM does)."),
    ServeOption("max_request_bytes", "--max-request-bytes", "EFT_MAX_REQUEST_BYTES", None,
                "Largest request body (bytes)."),
    ServeOption("threads", "--threads", "EFT_THREADS", None,
                "Inference threads (default: the CPUs this process may use, within its container's CPU limit). "
                "With onnxruntime on CPU, also the model calls that may run at once, one thread each (a lone "
                "request gets all threads)."),
)
