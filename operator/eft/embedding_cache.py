"""An embedding cache shared by the stages, so each corpus is encoded once per (model, settings).

prep encodes every chunk with the base model to mine negatives; eval encodes the same chunks with the base
model again (the test split's corpus is every chunk) and with the fine-tuned model; export needs the fine-tuned
model's fp32 embeddings of the test split as the reference for its int8 check. With this cache each of those
passes happens once: a later stage finds the vectors an earlier one computed.

Layout (under `DIR/_cache/embeddings/`, beside the stage folders, so a stage re-run for a new config hash
never wipes it): one folder per settings key, `<key>/meta.json` holding the key's components, and shards
`<sha256>.npz` (arrays `ids`: uint8 [n, 32], the sha256 of each text; `emb`: float32 [n, dim]) named by the
sha256 of their own bytes.

The key covers everything that changes a vector (`KEY_COMPONENTS`):
- `model`: a digest of the weights as loaded (every tensor's name, dtype, shape and bytes), the tokenizer
  (its serialisation without the truncation and padding it was last called with, which every call rewrites,
  and its padding side), the transformer config, and the code that runs them (`code_identity`: the versions
  of torch, transformers, sentence-transformers and tokenizers, and the source of any module class none of
  them defines, such as a model's own `modeling_*.py` loaded with `trust_remote_code`). For an exported graph
  it is the digest of the folder's bytes, and the runtime with its version is in `pooling`. The device is not
  part of it: the same fp32 weights on a GPU and on a CPU give the same vectors up to float rounding, and
  export (on CPU) must find the fine-tuned vectors eval computed on a GPU;
- `pooling`: the module stack (pooling mode, normalisation layers, their configs), the Matryoshka width the
  model is loaded with (`truncate_dim`), its prompts and default prompt, and the normalisation of the output;
- `prefix`, `max_length`, `truncation` (which side is cut: the tokenizer's `truncation_side`);
and each text is looked up by the sha256 of its exact string. A changed model or length is a new key, so it
re-encodes; the stage config hashes are untouched by the cache. A shard whose bytes do not match its name,
that cannot be read or whose shapes disagree, and a key folder whose `meta.json` disagrees with its key, are
ignored (and logged): a cache that does not match is never used.

The batch size is deliberately not in the key: it decides only how texts are padded together, which moves
results in the last float bits (about 1e-7), as does encoding only the texts a cache lacks. So prep's corpus
vectors serve eval whatever `prep.encodeBatchSize` and `evaluation.batchSize` are. A full hit returns exactly
the vectors the first pass computed.

Misses are counted by cause: `text` (the key is known, the text is not), a key component (no entry for this
key, and the closest existing entry differs in that component; each differing component is counted) or `cold`
(nothing cached yet). `EFT_EMBEDDING_CACHE=off` (or `0`, `false`, `no`) turns the cache off (every text is
encoded); `on`, `1`, `true`, `yes` or unset keeps it on, and anything else is an error.

Bounded: the cache holds at most `EFT_EMBEDDING_CACHE_MAX_BYTES` (default 8 GiB; a run of the pipeline needs
about three keys of corpus size x dimension x 4 bytes); after each write the least recently used keys (by their
`meta.json`'s modification time, touched on every read) are removed until it fits, never the key just used. A
key whose writes left more than `MAX_SHARDS` shards is merged into one, so reading it stays one pass. A write
that fails removes its temporary file, and temporary files older than an hour (a writer killed mid-write) are
swept.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import logging
import os
import shutil
import sys
import time
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from eft.errors import InvalidInput

log = logging.getLogger("eft.embedding_cache")

KEY_COMPONENTS = ("model", "pooling", "prefix", "max_length", "truncation")
CACHE_DIR = Path("_cache") / "embeddings"
META_FILE = "meta.json"
ENV_SWITCH = "EFT_EMBEDDING_CACHE"
ENV_MAX_BYTES = "EFT_EMBEDDING_CACHE_MAX_BYTES"
_SWITCH_OFF = ("off", "0", "false", "no")
_SWITCH_ON = ("", "on", "1", "true", "yes")
#: the distributions whose code turns a SentenceTransformer's weights into vectors (`code_identity`)
TORCH_LIBRARIES = ("torch", "transformers", "sentence-transformers", "tokenizers")
DEFAULT_MAX_BYTES = 8 << 30
#: a key with more shards than this after a write is merged into one shard
MAX_SHARDS = 16
#: seconds after which a temporary file is a dead writer's
STALE_TEMP_SECONDS = 3600


@dataclass(frozen=True)
class EncodeSettings:
    """Everything besides the text that decides a vector. `model` and `pooling` are digests (see
    `sentence_transformer_identity` and `files_identity`)."""

    model: str
    pooling: str
    prefix: str
    max_length: int
    truncation: str = "END"

    def components(self) -> dict:
        return asdict(self)

    def key(self) -> str:
        blob = json.dumps(self.components(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:32]


def text_digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def library_versions(distributions: Sequence[str]) -> dict[str, str]:
    """{distribution: installed version} ("absent" where it is not installed)."""
    out = {}
    for dist in distributions:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


def _source_files(cls) -> list[Path]:
    """The Python files holding `cls`'s code: its module's file, and for code transformers loaded from a model
    (`transformers_modules.*`, `trust_remote_code`) every `.py` beside it, since that code imports its siblings."""
    path = getattr(sys.modules.get(cls.__module__), "__file__", None)
    if not path:
        return []
    path = Path(path)
    if cls.__module__.startswith("transformers_modules."):
        return sorted(path.parent.glob("*.py"))
    return [path]


def code_identity(model) -> str:
    """Digest of the code that computes `model`'s vectors, beyond its weights and configs: the installed
    versions of `TORCH_LIBRARIES`, and the bytes of the source files (`_source_files`) of every module class,
    at any depth, that none of those libraries defines (a model's `modeling_*.py` loaded with
    `trust_remote_code`, a custom sentence-transformers module). A model folder whose code changes while its
    weights stay (a new `revision` that fixes only code) is a new key; so is an upgraded library."""
    own = {lib.replace("-", "_") for lib in TORCH_LIBRARIES}
    h = hashlib.sha256(_sha(library_versions(TORCH_LIBRARIES)).encode())
    files: set[Path] = set()
    for module in model.modules():
        cls = type(module)
        if cls.__module__.split(".")[0] not in own:
            files.update(_source_files(cls))
    for path in sorted(files):
        try:
            h.update(path.name.encode() + b"\0" + path.read_bytes())
        except OSError as err:  # the code cannot be read: a key that matches nothing rather than a wrong hit
            h.update(f"unreadable {path}: {err} {time.time()}".encode())
    return h.hexdigest()


def sentence_transformer_identity(model) -> tuple[str, str]:
    """(`model`, `pooling`) digests of a SentenceTransformer as loaded.

    `model` hashes every tensor of the state dict (name, dtype, shape, bytes; bf16 and GPU tensors included),
    the tokenizer's serialisation (without its last call's truncation and padding, which are not the model's:
    every encode rewrites them) and padding side, and the transformer config (without paths and version
    strings) and the code that runs them (`code_identity`); `pooling` hashes the module stack with each
    module's config (sequence length left out: it is its own key component), the `truncate_dim` the model cuts
    its vectors to, and its prompts with the default one. The truncation side is the `truncation` key component
    (`truncation_side`). Cost: one pass over the weights (~0.1 s for MiniLM, a few seconds for a 1B model).
    """
    import torch

    h = hashlib.sha256(code_identity(model).encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy())
    tok = getattr(model, "tokenizer", None)
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        state.pop("truncation", None)
        state.pop("padding", None)
        h.update(_sha(state).encode())
    elif tok is not None:
        h.update(json.dumps(sorted(tok.get_vocab().items())).encode())
    if tok is not None:
        h.update(f"padding_side={getattr(tok, 'padding_side', None)}".encode())
    modules = []
    for module in model:
        cfg = dict(module.get_config_dict()) if hasattr(module, "get_config_dict") else {}
        cfg.pop("max_seq_length", None)
        auto = getattr(module, "auto_model", None)
        if auto is not None and hasattr(auto, "config"):
            tcfg = {k: v for k, v in auto.config.to_dict().items()
                    if not k.startswith("_") and k not in ("transformers_version", "torch_dtype", "dtype")}
            h.update(_sha(tcfg).encode())
        modules.append([f"{type(module).__module__}.{type(module).__qualname__}", cfg])
    pooling = _sha({"modules": modules, "truncate_dim": getattr(model, "truncate_dim", None),
                    "prompts": getattr(model, "prompts", None) or {},
                    "default_prompt": getattr(model, "default_prompt_name", None), "normalized": True})
    return h.hexdigest(), pooling


def truncation_side(model) -> str:
    """The `truncation` key component of a model: "START" when its tokenizer cuts long texts at the left,
    else "END" (the default of every tokenizer)."""
    return "START" if getattr(getattr(model, "tokenizer", None), "truncation_side", "right") == "left" else "END"


def files_identity(folder: Path) -> str:
    """Digest of every file's name and bytes under `folder` (an exported ONNX model: graph, external weights,
    tokenizer, metadata)."""
    h = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


class EmbeddingCache:
    """Vectors by (settings key, text digest) on disk; `root=None` is a disabled cache (always encodes)."""

    def __init__(self, root: Path | None, max_bytes: int | None = None):
        self.root = Path(root) if root is not None else None
        self.max_bytes = DEFAULT_MAX_BYTES if max_bytes is None else int(max_bytes)
        self.hits = 0
        self.misses: Counter[str] = Counter()
        #: texts actually encoded, by caller label ("base/passage", "finetuned/query", ...)
        self.encoded: Counter[str] = Counter()
        self.reused: Counter[str] = Counter()
        self.ignored: list[str] = []

    @classmethod
    def for_workdir(cls, workdir: Path) -> "EmbeddingCache":
        """The workdir's shared cache, or a disabled one when `EFT_EMBEDDING_CACHE` is `off`/`0`/`false`/`no`;
        its size bound from `EFT_EMBEDDING_CACHE_MAX_BYTES` (bytes; default 8 GiB).

        Raises `InvalidInput` when the switch is none of those words nor `on`/`1`/`true`/`yes`, or the bound is
        not a whole, non-negative number of bytes."""
        switch = os.environ.get(ENV_SWITCH, "").strip().lower()
        if switch not in _SWITCH_OFF + _SWITCH_ON:
            raise InvalidInput(f"{ENV_SWITCH} must be one of {', '.join(_SWITCH_ON[1:] + _SWITCH_OFF)} (or unset), "
                               f"got {os.environ[ENV_SWITCH]!r}")
        raw = os.environ.get(ENV_MAX_BYTES, "").strip()
        try:
            max_bytes = int(raw) if raw else None
        except ValueError:
            max_bytes = -1
        if max_bytes is not None and max_bytes < 0:
            raise InvalidInput(f"{ENV_MAX_BYTES} must be a whole, non-negative number of bytes (e.g. 8589934592 "
                               f"for 8 GiB), got {raw!r}")
        if switch in _SWITCH_OFF:
            return cls(None)
        return cls(Path(workdir) / CACHE_DIR, max_bytes)

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def stats(self) -> dict:
        """Counts for a stage summary: hits, misses by cause, texts encoded and reused by label."""
        return {"enabled": self.enabled, "hits": self.hits, "misses": dict(self.misses),
                "encoded": dict(self.encoded), "reused": dict(self.reused),
                **({"ignored": self.ignored[:5]} if self.ignored else {})}

    # ------------------------------------------------------------------ reading
    def _ignore(self, what: str, why: str) -> None:
        log.warning("embedding cache: ignoring %s (%s)", what, why)
        self.ignored.append(f"{what}: {why}")

    def _entry_valid(self, folder: Path, settings: EncodeSettings) -> bool:
        meta = folder / META_FILE
        try:
            stored = json.loads(meta.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return False
        except (OSError, ValueError) as err:
            self._ignore(str(meta), f"unreadable: {err}")
            return False
        if stored != settings.components():
            self._ignore(str(folder), "meta.json does not match its key")
            return False
        return True

    def _load(self, folder: Path) -> dict[bytes, np.ndarray]:
        rows: dict[bytes, np.ndarray] = {}
        dim = None
        for shard in sorted(folder.glob("*.npz")):
            try:
                blob = shard.read_bytes()
            except FileNotFoundError:  # merged into another shard by a concurrent writer
                continue
            except OSError as err:  # a read error, a folder under a shard's name: not a cache entry
                self._ignore(str(shard), f"unreadable: {err}")
                continue
            try:
                if hashlib.sha256(blob).hexdigest()[:32] != shard.stem:
                    raise ValueError("content does not match its name")
                with np.load(io.BytesIO(blob), allow_pickle=False) as z:
                    ids, emb = z["ids"], z["emb"]
                if ids.ndim != 2 or ids.shape[1] != 32 or emb.ndim != 2 or len(ids) != len(emb) \
                        or emb.dtype != np.float32 or (dim is not None and emb.shape[1] != dim):
                    raise ValueError(f"bad shapes ids {ids.shape} emb {emb.shape} {emb.dtype}")
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
                self._ignore(str(shard), str(err) or type(err).__name__)
                continue
            dim = emb.shape[1]
            for i, row in zip(ids, emb):
                rows[i.tobytes()] = row
        return rows

    def _closest_differences(self, settings: EncodeSettings) -> list[str]:
        """Components in which the nearest existing entry differs from `settings` (empty: nothing cached)."""
        best: list[str] | None = None
        want = settings.components()
        for meta in self.root.glob(f"*/{META_FILE}"):
            try:
                have = json.loads(meta.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            diff = [c for c in KEY_COMPONENTS if have.get(c) != want[c]]
            if diff and (best is None or len(diff) < len(best)):
                best = diff
        return best or []

    # ------------------------------------------------------------------ writing
    @staticmethod
    def _write_atomic(path: Path, data: bytes) -> None:
        """`data` at `path` via a temporary file and a rename; the temporary file is removed if that fails."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _write_shard(self, folder: Path, digests: list[bytes], emb: np.ndarray) -> Path:
        buf = io.BytesIO()
        ids = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(digests), 32)
        np.savez(buf, ids=ids, emb=np.ascontiguousarray(emb, dtype=np.float32))
        blob = buf.getvalue()
        path = folder / f"{hashlib.sha256(blob).hexdigest()[:32]}.npz"
        self._write_atomic(path, blob)
        return path

    def _store(self, folder: Path, settings: EncodeSettings, digests: list[bytes], emb: np.ndarray) -> None:
        """Write the new rows as a shard (merging the key's shards into one beyond `MAX_SHARDS`), then keep
        the cache within its bound."""
        try:
            folder.mkdir(parents=True, exist_ok=True)
            meta = folder / META_FILE
            if not meta.exists():
                self._write_atomic(meta, json.dumps(settings.components(), sort_keys=True).encode())
            self._write_shard(folder, digests, emb)
            shards = list(folder.glob("*.npz"))
            if len(shards) > MAX_SHARDS:
                rows = self._load(folder)  # every shard there now, a concurrent writer's too
                merged = self._write_shard(folder, list(rows), np.stack(list(rows.values())))
                for shard in shards:
                    if shard != merged:
                        shard.unlink(missing_ok=True)
        except OSError as err:  # a full or read-only volume costs speed, never a result
            log.warning("embedding cache: could not store %d vectors in %s (%s)", len(digests), folder, err)
        try:
            self._prune(folder)
        except OSError as err:
            log.warning("embedding cache: could not prune %s (%s)", self.root, err)

    def _prune(self, keep: Path) -> None:
        """Remove the least recently used keys until the cache fits `max_bytes` (never `keep`), and temporary
        files left by writers that died."""
        stale = time.time() - STALE_TEMP_SECONDS
        keys = []
        for folder in (p for p in self.root.iterdir() if p.is_dir()):
            size = 0
            for f in folder.iterdir():
                try:
                    st = f.stat()
                    if f.name.startswith(".") and st.st_mtime < stale:
                        f.unlink(missing_ok=True)
                        continue
                    size += st.st_size
                except FileNotFoundError:
                    continue
            try:
                used = (folder / META_FILE).stat().st_mtime
            except FileNotFoundError:
                used = 0.0
            keys.append((folder == keep, used, size, folder))
        total = sum(k[2] for k in keys)
        for is_kept, _, size, folder in sorted(keys, key=lambda k: (k[0], k[1])):
            if total <= self.max_bytes or is_kept:
                break
            shutil.rmtree(folder, ignore_errors=True)
            total -= size
            log.info("embedding cache: removed %s (%d bytes, least recently used) to stay within %d bytes",
                     folder.name, size, self.max_bytes)

    # ------------------------------------------------------------------ the one entry point
    def encode(self, settings: EncodeSettings, texts: Sequence[str], compute: Callable[[list[str]], np.ndarray],
               label: str = "") -> np.ndarray:
        """float32 [len(texts), dim] embeddings: cached rows where the key and text match, `compute(missing)`
        for the rest (each distinct missing text once, in first-seen order), stored for the next caller.

        `compute` must produce exactly what `settings` describes (the callers in `eft.embedding` and
        `eft.export` build both from the same model and arguments).
        """
        texts = list(texts)
        digests = [text_digest(t) for t in texts]
        cached: dict[bytes, np.ndarray] = {}
        folder = None
        if self.enabled:
            folder = self.root / settings.key()
            if folder.is_dir() and self._entry_valid(folder, settings):
                cached = self._load(folder)
                try:
                    os.utime(folder / META_FILE)  # recently used: the last to be pruned
                except OSError:
                    pass
            elif folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)
        missing: dict[bytes, str] = {}
        for d, t in zip(digests, texts):
            if d not in cached and d not in missing:
                missing[d] = t
        n_hit = sum(1 for d in digests if d in cached)
        if self.enabled:
            self.hits += n_hit
            if missing:
                causes = ["text"] if cached or (folder is not None and folder.is_dir()) else (
                    self._closest_differences(settings) or ["cold"])
                for cause in causes:
                    self.misses[cause] += len(missing)
        self.reused[label] += n_hit
        fresh: dict[bytes, np.ndarray] = {}
        if missing:
            new = np.asarray(compute(list(missing.values())), dtype=np.float32)
            if new.shape[0] != len(missing):
                raise ValueError(f"encoder returned {new.shape[0]} rows for {len(missing)} texts")
            self.encoded[label] += len(missing)
            fresh = dict(zip(missing, new))
            if self.enabled:
                self._store(folder, settings, list(missing), new)
        if not texts:
            return np.asarray(compute([]), dtype=np.float32)
        rows = [cached[d] if d in cached else fresh[d] for d in digests]
        return np.stack(rows).astype(np.float32, copy=False)
