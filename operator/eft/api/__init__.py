"""The `EmbeddingFinetune` resource model (spec and status), shared by the CLI, the stages and the controller."""

from eft.api.spec import (
    API_GROUP,
    API_VERSION,
    KIND,
    PLURAL,
    SHORT_NAME,
    EmbeddingFinetune,
    EmbeddingFinetuneSpec,
)
from eft.api.loader import SpecError, load_resource, parse_resource

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "KIND",
    "PLURAL",
    "SHORT_NAME",
    "EmbeddingFinetune",
    "EmbeddingFinetuneSpec",
    "SpecError",
    "load_resource",
    "parse_resource",
]
