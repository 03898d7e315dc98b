"""Selecting the corpus files (include/exclude globs, document limit), reading them, and fingerprinting them."""

from __future__ import annotations

import fnmatch
import hashlib
from pathlib import Path

from eft.api.spec import CorpusSpec
from eft.corpus.decoding import decode_bytes
from eft.corpus.documents import HTML_SUFFIXES, SUPPORTED_SUFFIXES
from eft.errors import InvalidInput

FIELD = "spec.corpus.source.path"


def corpus_root(spec: CorpusSpec) -> Path:
    """The local folder holding the documents (in a pod the PVC/ConfigMap is mounted and given as `path`)."""
    src = spec.source
    if src.path is None:
        kind = "pvc" if src.pvc else "uri" if src.uri else "configMap"
        raise InvalidInput(
            f"the local runner reads documents from a folder; {kind} sources are mounted by the operator "
            f"(set spec.corpus.source.path for `eft run`)", "spec.corpus.source",
        )
    root = Path(src.path)
    if not root.exists():
        raise InvalidInput(f"corpus folder does not exist: {root}", FIELD)
    if not root.is_dir():
        raise InvalidInput(f"corpus path is not a folder: {root}", FIELD)
    return root


def select_files(spec: CorpusSpec) -> list[Path]:
    """Files matching `include` and not `exclude`, supported types only, sorted, at most `maxDocuments`."""
    root = corpus_root(spec)
    if not any(root.iterdir()):
        raise InvalidInput(f"corpus folder is empty: {root}", FIELD)
    found: set[Path] = set()
    for pattern in spec.include:
        found.update(p for p in root.glob(pattern) if p.is_file())
    included = sorted(p.relative_to(root).as_posix() for p in found)
    rel = [r for r in included if not any(fnmatch.fnmatch(r, ex) for ex in spec.exclude)]
    supported = [r for r in rel if Path(r).suffix.lower() in SUPPORTED_SUFFIXES]
    if not supported:
        kinds = ", ".join(sorted(SUPPORTED_SUFFIXES))
        if included and not rel:
            raise InvalidInput(f"{len(included)} files in {root} matched spec.corpus.include, and spec.corpus.exclude "
                               f"{spec.exclude} removed every one", "spec.corpus.exclude")
        detail = f"{len(rel)} matched files have unsupported types" if rel else "no file matched spec.corpus.include"
        raise InvalidInput(f"no supported documents in {root} ({detail}; supported: {kinds})", FIELD)
    if spec.max_documents:
        supported = supported[: spec.max_documents]
    return [root / r for r in supported]


def read_text(path: Path) -> str:
    """The text of one corpus file: HTML by its byte-order mark or declared encoding, then detection; text and
    Markdown by byte-order mark, then detection (`eft.corpus.decoding`). Raises `UndecodableDocument`."""
    text, _ = decode_bytes(path.read_bytes(), html=path.suffix.lower() in HTML_SUFFIXES, name=path)
    return text


def corpus_fingerprint(spec: CorpusSpec) -> str | None:
    """sha256 over the selected files' paths and contents; None when the source is not a local folder."""
    if spec.source.path is None:
        return None
    root = corpus_root(spec)
    h = hashlib.sha256()
    for p in select_files(spec):
        h.update(p.relative_to(root).as_posix().encode())
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()
