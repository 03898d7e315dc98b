"""Chunking sections to a token budget measured with the base model's tokenizer.

Chunks follow the document structure: a chunk never spans two sections; blocks (paragraphs, list items, code) are
packed whole while they fit; an oversized block is split at sentence (or line) boundaries, and as a last resort at
token boundaries. Greedy packing leaves whatever is left over in the last piece; when that is under `min_tokens`,
trailing blocks (or sentences) of the piece before it move into it (`_rebalance_tail`), and a section's remainder
that still cannot reach `min_tokens` is kept as it is: only a whole section too small to join a neighbour is
dropped, never a piece of a longer one. Each chunk's text starts with its heading path, so a passage read alone (by
the retriever or by an LLM) says what it is about. Chunk ids are content-derived (sha1 of the normalised text), so
re-chunking unchanged documents gives the same ids; exact duplicates (boilerplate repeated across pages) are
dropped.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Callable, Iterable

from eft.corpus.documents import Section, parse_document
from eft.corpus.decoding import UndecodableDocument
from eft.corpus.reader import read_text
from eft.records import Chunk

log = logging.getLogger("eft.corpus")

_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+(?=[A-Z0-9(\"'`])")

TokenCounter = Callable[[list[str]], list[int]]


def tokenizer_counter(tokenizer) -> TokenCounter:
    """Token counts (no special tokens) of many texts in one fast-tokenizer call."""

    def count(texts: list[str]) -> list[int]:
        if not texts:
            return []
        enc = tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"]
        return [len(ids) for ids in enc]

    return count


def chunk_id(text: str) -> str:
    norm = re.sub(r"\s+", " ", text).strip().lower()
    return hashlib.sha1(norm.encode("utf-8")).hexdigest()[:16]


def heading_line(headings: list[str]) -> str:
    return " > ".join(headings)


def _packed_size(group: list[tuple[str, int]]) -> int:
    """Tokens of (part, tokens) pairs packed together, one joiner token each."""
    return sum(n + 1 for _, n in group)


def _rebalance_tail(groups: list[list[tuple[str, int]]], budget: int, min_tokens: int) -> None:
    """Even out greedy packing's remainder, in place: while the last group of (part, tokens) pairs is under
    `min_tokens`, move the last part of the group before it to the front of the last, as long as the last stays
    within `budget` and the one before keeps at least `min_tokens` (each part counts its tokens + 1 joiner)."""
    if len(groups) < 2:
        return
    prev, last = groups[-2], groups[-1]
    while _packed_size(last) < min_tokens and len(prev) > 1:
        moved = prev[-1][1] + 1
        if _packed_size(last) + moved > budget or _packed_size(prev) - moved < min_tokens:
            break
        last.insert(0, prev.pop())


def _split_oversized(block: str, budget: int, count: TokenCounter, tokenizer=None, min_tokens: int = 0) -> list[str]:
    """Split one block over `budget` tokens at sentence/line boundaries, then at token boundaries; a last piece
    under `min_tokens` takes sentences from the piece before it where both stay in bounds."""
    pieces = block.split("\n") if "\n" in block else _SENTENCE_END.split(block)
    if len(pieces) == 1:
        if tokenizer is None:  # word fallback
            words = block.split()
            step = max(1, len(words) * budget // max(1, count([block])[0]))
            return [" ".join(words[i:i + step]) for i in range(0, len(words), step)]
        return _split_at_tokens(block, budget, count, tokenizer)
    packs: list[list[tuple[str, int]]] = []  # sentences packed to the budget; a split sentence's pieces alone
    sizes = count(pieces)
    cur: list[tuple[str, int]] = []
    cur_size = 0
    joiner = "\n" if "\n" in block else " "
    for piece, size in zip(pieces, sizes):
        if size > budget:
            if cur:
                packs.append(cur)
                cur, cur_size = [], 0
            packs.extend([(part, 0)] for part in _split_oversized(piece, budget, count, tokenizer, min_tokens))
            continue
        if cur and cur_size + size + 1 > budget:
            packs.append(cur)
            cur, cur_size = [], 0
        cur.append((piece, size))
        cur_size += size + 1
    if cur:
        packs.append(cur)
    if min_tokens and len(packs) > 1 and all(n for _, n in packs[-2] + packs[-1]):  # both of whole sentences
        _rebalance_tail(packs, budget, min_tokens)
    return [joiner.join(part for part, _ in pack) for pack in packs if pack]


def _split_at_tokens(block: str, budget: int, count: TokenCounter, tokenizer) -> list[str]:
    """Cut the original text (not decoded word pieces) at token offsets, preferring word boundaries, so every
    piece re-tokenizes to at most `budget` tokens."""
    offsets = tokenizer(block, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    out: list[str] = []
    start = 0
    while start < len(offsets):
        end = min(len(offsets), start + budget)
        if end < len(offsets):
            cut = end
            while cut > start + 1 and offsets[cut][0] == offsets[cut - 1][1]:  # inside a word: back off
                cut -= 1
            end = cut if cut > start + 1 else end
        while True:
            piece = block[offsets[start][0]:offsets[end - 1][1]].strip()
            if end - start <= 1 or count([piece])[0] <= budget:
                break
            end -= 1
        if piece:
            out.append(piece)
        start = end
    return out


def chunk_sections(sections: list[Section], max_tokens: int, min_tokens: int, count: TokenCounter,
                   overlap_tokens: int = 0, tokenizer=None) -> list[tuple[list[str], str, int]]:
    """(headings, text, tokens) per chunk; text includes the heading line."""
    chunks: list[tuple[list[str], str, int]] = []
    for section in sections:
        head = heading_line(section.headings)
        head_tokens = count([head])[0] + 2 if head else 0
        # A long heading path keeps its innermost headings (cut if still too long): at most half the budget.
        outer = 1
        while head_tokens > max_tokens // 2 and outer < len(section.headings):
            head = heading_line(section.headings[outer:])
            head_tokens = count([head])[0] + 2
            outer += 1
        if head_tokens > max_tokens // 2:
            head = _split_oversized(head, max_tokens // 2 - 2, count, tokenizer)[0]
            head_tokens = count([head])[0] + 2
        budget = max_tokens - head_tokens
        blocks: list[str] = []
        for block, size in zip(section.blocks, count(section.blocks)):
            blocks.extend(_split_oversized(block, budget, count, tokenizer, min_tokens) if size > budget
                          else [block])
        sizes = count(blocks)
        groups: list[list[tuple[str, int]]] = []  # (block, tokens) per chunk of the section
        carried_blocks: list[int] = [0]  # per group: leading blocks repeated from the previous group (overlap)
        cur: list[tuple[str, int]] = []
        cur_size = 0
        for block, size in zip(blocks, sizes):
            if cur and cur_size + size + 1 > budget:
                groups.append(cur)
                # Overlap: carry the last blocks of the previous chunk while within the overlap budget.
                # The carried blocks and the next block must still fit the budget together.
                carry: list[tuple[str, int]] = []
                carried = 0
                for prev, prev_size in reversed(cur):
                    if carried + prev_size > overlap_tokens or carried + prev_size + 1 + size + 1 > budget:
                        break
                    carry.insert(0, (prev, prev_size))
                    carried += prev_size + 1
                cur, cur_size = carry, carried
                carried_blocks.append(len(carry))
            cur.append((block, size))
            cur_size += size + 1
        if cur:
            groups.append(cur)
        if len(groups) > 1 and _packed_size(groups[-1]) < min_tokens:
            n_carried = carried_blocks[len(groups) - 1]  # the previous group already holds these
            if _packed_size(groups[-2]) + _packed_size(groups[-1][n_carried:]) <= budget:
                # A small tail is merged into the previous chunk of the section when that still fits...
                groups[-2] = groups[-2] + groups.pop()[n_carried:]
            elif not n_carried:
                # ...else it takes blocks from the previous chunk (never across an overlap's repeated blocks).
                _rebalance_tail(groups, budget, min_tokens)
        for group in groups:
            body = "\n".join(block for block, _ in group)
            text = f"{head}\n{body}" if head else body
            # a piece of a longer section is kept even when it stays under min_tokens: it is content
            chunks.append((section.headings, text, _packed_size(group) + head_tokens, len(groups) > 1))
    # Tiny sections (a heading and a line) join the next chunk of the same document when they fit.
    merged: list[tuple[list[str], str, int, bool]] = []
    for headings, text, tokens, keep in chunks:
        if merged and merged[-1][2] < min_tokens and merged[-1][2] + tokens <= max_tokens:
            prev = merged.pop()
            merged.append((prev[0], prev[1] + "\n" + text, prev[2] + tokens, keep or prev[3]))
        else:
            merged.append((headings, text, tokens, keep))
    return [(headings, text, tokens) for headings, text, tokens, keep in merged
            if tokens >= min_tokens or keep or len(merged) == 1]


def chunk_documents(files: Iterable[Path], root: Path, max_tokens: int, min_tokens: int, tokenizer,
                    overlap_tokens: int = 0, on_document: Callable[[], None] | None = None) -> tuple[list[Chunk], dict]:
    """Read, parse and chunk every file; returns the unique chunks and counts for the stage summary.
    A file that cannot be decoded is logged by name, listed in `stats["undecodable"]` and skipped."""
    tokenizer.model_max_length = 10**9  # we only count tokens here; silence the over-length warning
    count = tokenizer_counter(tokenizer)
    seen: set[str] = set()
    out: list[Chunk] = []
    stats = {"documents": 0, "documents_empty": 0, "chunks_total": 0, "duplicates_dropped": 0,
             "undecodable": []}
    for path in files:
        rel = path.relative_to(root).as_posix()
        try:
            text = read_text(path)
        except UndecodableDocument as err:
            log.warning("%s: cannot be decoded as text (%s); skipped", rel, err.reason)
            stats["undecodable"].append(rel)
            if on_document:
                on_document()
            continue
        sections = parse_document(path, text)
        stats["documents"] += 1
        pieces = chunk_sections(sections, max_tokens, min_tokens, count, overlap_tokens, tokenizer)
        if not pieces:
            stats["documents_empty"] += 1
        doc_id = hashlib.sha1(rel.encode()).hexdigest()[:12]
        position = 0
        for headings, text, tokens in pieces:
            stats["chunks_total"] += 1
            cid = chunk_id(text)
            if cid in seen:
                stats["duplicates_dropped"] += 1
                continue
            seen.add(cid)
            out.append(Chunk(id=cid, text=text, source=rel, headings=headings, doc_id=doc_id,
                             position=position, tokens=tokens))
            position += 1
        if on_document:
            on_document()
    stats["chunks"] = len(out)
    return out, stats
