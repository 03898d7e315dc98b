"""Reading an `EmbeddingFinetune` resource from YAML/JSON and turning pydantic errors into field-path messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from eft.api.spec import LABEL_NAME_MAX, LABEL_VALUE_PATTERN, EmbeddingFinetune
from eft.errors import InvalidInput


class SpecError(InvalidInput):
    """The resource is invalid; `problems` lists (field path, message) for every problem found."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "resource"):
        self.problems = problems
        lines = "\n".join(f"  {path}: {msg}" for path, msg in problems)
        super().__init__(f"{source} is invalid ({len(problems)} problem{'s' if len(problems) != 1 else ''}):\n{lines}")


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(root)"


def problems_from_validation_error(err: ValidationError) -> list[tuple[str, str]]:
    """One (camelCase field path, message) per error; `got` shows the offending value when short."""
    problems = []
    for e in err.errors(include_url=False):
        # Errors raised by model validators carry the model's own path; drop pydantic's internal tags.
        # ... and the "[key]" of a map key's error (its message says it is about the key)
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and (p.startswith("function-") or p == "[key]")))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "string_pattern_mismatch" and e.get("ctx", {}).get("pattern") == LABEL_VALUE_PATTERN:
            msg = (f"not a valid label value: at most {LABEL_NAME_MAX} characters, letters or digits at both ends and "
                   "'-', '_' or '.' between, or empty")
        if e["type"] not in ("missing", "extra_forbidden") and "input" in e:
            shown = repr(e["input"])
            if len(shown) <= 60 and not isinstance(e["input"], dict):
                msg += f" (got {shown})"
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; fields are camelCase)"
        problems.append((_path(loc), msg))
    return problems


def parse_resource(data: Any, source: str = "resource") -> EmbeddingFinetune:
    """Validate a resource given as a dict (as loaded from YAML or read from the API server)."""
    if not isinstance(data, dict):
        raise SpecError([("(root)", f"expected a mapping with apiVersion, kind, metadata, spec (got {type(data).__name__})")], source)
    if "spec" not in data:
        raise SpecError([("spec", "field required")], source)
    try:
        return EmbeddingFinetune.model_validate(data)
    except ValidationError as err:
        raise SpecError(problems_from_validation_error(err), source) from None


def load_resource(path: str | Path) -> EmbeddingFinetune:
    """Load and validate a resource file. Relative `spec.corpus.source.path` values resolve against the file's folder."""
    p = Path(path)
    if p.is_dir():
        raise InvalidInput(f"{p} is a folder; give the resource's YAML file")
    if not p.is_file():
        raise InvalidInput(f"spec file not found: {p}")
    try:
        # bytes: PyYAML reads UTF-8 and, by their byte-order mark, UTF-16 files (PowerShell's `>` writes those)
        docs = [d for d in yaml.safe_load_all(p.read_bytes()) if d is not None]
    except yaml.YAMLError as err:
        raise InvalidInput(f"{p} is not valid YAML: {err}") from None
    except UnicodeDecodeError as err:
        raise InvalidInput(f"{p} is not UTF-8 or UTF-16 text: {err}") from None
    docs = [d for d in docs if isinstance(d, dict) and d.get("kind", "EmbeddingFinetune") == "EmbeddingFinetune"]
    if len(docs) != 1:
        raise InvalidInput(f"{p} must hold exactly one EmbeddingFinetune resource (found {len(docs)})")
    resource = parse_resource(docs[0], source=str(p))
    src = resource.spec.corpus.source
    if src.path is not None and not Path(src.path).is_absolute():
        src.path = str((p.parent / src.path).resolve())
    return resource
