"""The offline generator: pseudo-queries derived from the documents themselves, no LLM.

It is honest about being weaker than the `llm` generator: it teaches the model the corpus's vocabulary and which
passages belong to which topics, not how real users phrase questions. Three kinds of pseudo-query per chunk:

1. **title queries** (`query_type: keyword`, complexity 2): the section heading (with its parent when the heading
   alone is generic), for sections of at most two chunks; positives are the section's chunks.
2. **key-phrase queries** (`keyword`/`conceptual`, complexity 3): a sentence of the chunk reduced to its most
   specific terms (highest IDF over the corpus) in their original order, leaving out the words of the heading so
   the query cannot be answered by matching the title alone. Phrased as a question when the sentence defines or
   describes something.
3. **two-hop queries** (`synthesis`, complexity 4, hop_count 2): key phrases of two neighbouring chunks of the same
   document joined, with both chunks as positives.

`quality_score` is the mean normalised IDF of the query's terms scaled to 0-10 (generic queries score low), so
`sdg.qualityThreshold` filters vague pseudo-queries the same way it filters weak LLM questions.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections import Counter, defaultdict

from eft.api.spec import SdgSpec
from eft.progress import Progress
from eft.sdg.records import Chunk, QuestionRecord

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_\-']*[A-Za-z0-9]|[A-Za-z]")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
STOPWORDS = frozenset("""
a about above after again against all also an and any are as at be because been before being below between both
but by can could did do does doing down during each either else etc few for from further had has have having he
her here hers him his how however i if in into is it its itself just may might more most must my no nor not now
of off on once only or other our out over own same shall she should so some such than that the their them then
there these they this those through thus to too under until up use used uses using very via was we were what when
where whether which while who whom why will with within without would you your e.g i.e see example examples
following note one two first second new way ways
""".split())
_DEFINITION = re.compile(r"\b(is|are|means|refers to|allows|provides|returns|specifies|controls|determines)\b")


def _terms(text: str) -> list[str]:
    return [w for w in _WORD.findall(text) if w.lower() not in STOPWORDS and len(w) > 2]


def _question_id(*parts: str) -> str:
    return "q" + hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:15]


_CODE_LIKE = re.compile(r"[_\-]|[A-Z]{2,}|\d")


class _Idf:
    """Term specificity: IDF over the chunks, favouring topical terms (heading vocabulary, identifiers) over
    words that are rare only by accident (seen once, adverbs)."""

    def __init__(self, chunks: list[Chunk]):
        df: Counter[str] = Counter()
        heading_vocab: set[str] = set()
        for c in chunks:
            df.update({t.lower() for t in _terms(c.text)})
            heading_vocab.update(t.lower() for h in c.headings for t in _terms(h))
        n = max(1, len(chunks))
        self.df = df
        self.heading_vocab = heading_vocab
        self.idf = {t: math.log((n + 1) / (d + 0.5)) for t, d in df.items()}
        self.max = math.log((n + 1) / 0.5)

    def __call__(self, term: str) -> float:
        return self.idf.get(term.lower(), self.max)

    def weight(self, term: str) -> float:
        low = term.lower()
        w = self(term)
        code_like = bool(_CODE_LIKE.search(term))
        if low in self.heading_vocab:
            w *= 1.6
        if code_like:
            w *= 1.3
        if self.df.get(low, 0) < 2 and not code_like:
            w *= 0.4
        if low.endswith("ly") or low.endswith("'s") or low.endswith("'d"):
            w *= 0.3
        return w

    def quality(self, terms: list[str]) -> float:
        if not terms:
            return 0.0
        return round(10.0 * min(1.0, sum(self(t) for t in terms) / len(terms) / (0.6 * self.max)), 2)


def _key_phrase(text: str, idf: _Idf, exclude: set[str], rng: random.Random, max_terms: int) -> list[str]:
    terms = [t for t in _terms(text) if t.lower() not in exclude]
    seen: set[str] = set()
    uniq = [t for t in terms if not (t.lower() in seen or seen.add(t.lower()))]
    if len(uniq) < 2:
        return []
    ranked = sorted(uniq, key=lambda t: -idf.weight(t))[: rng.randint(min(3, max_terms), max_terms)]
    keep = {t.lower() for t in ranked}
    return [t for t in uniq if t.lower() in keep]


def _sentences(body: str) -> list[str]:
    out = []
    for para in body.split("\n"):
        out.extend(s.strip() for s in _SENTENCE.split(para) if 6 <= len(s.split()) <= 60)
    return out


def _as_question(sentence: str, phrase: list[str], rng: random.Random) -> tuple[str, str]:
    words = " ".join(phrase)
    if _DEFINITION.search(sentence) and rng.random() < 0.5:
        return rng.choice([f"what {words}", f"how does {words} work", f"{words} explained"]), "conceptual"
    return words, "keyword"


def generate_offline_questions(chunks: list[Chunk], spec: SdgSpec, progress: Progress) -> tuple[list[QuestionRecord], dict]:
    rng = random.Random(spec.seed)
    idf = _Idf(chunks)
    chosen = list(chunks)
    if spec.max_chunks and spec.max_chunks < len(chosen):
        chosen = rng.sample(chosen, spec.max_chunks)
        chosen.sort(key=lambda c: (c.doc_id, c.position))
    by_section: dict[tuple[str, tuple[str, ...]], list[Chunk]] = defaultdict(list)
    by_doc: dict[str, list[Chunk]] = defaultdict(list)
    for c in chunks:
        by_section[(c.doc_id, tuple(c.headings))].append(c)
        by_doc[c.doc_id].append(c)
    for lst in by_doc.values():
        lst.sort(key=lambda c: c.position)

    records: dict[str, QuestionRecord] = {}
    stats = Counter()
    allow_multi = spec.hops.max >= 2 and spec.multi_hop_fraction > 0
    allow_single = spec.hops.min <= 1

    def add(question: str, segment_ids: list[str], qtype: str, rtype: str, complexity: int, terms: list[str],
            answer: str) -> None:
        complexity = min(max(complexity, spec.complexity.min), spec.complexity.max)
        score = idf.quality(terms)
        stats["generated"] += 1
        if score < spec.quality_threshold:
            stats["dropped_below_threshold"] += 1
            return
        qid = _question_id(question, *segment_ids)
        if qid in records:
            stats["duplicates"] += 1
            return
        records[qid] = QuestionRecord(
            question_id=qid, question=question, answer=answer[:500], query_type=qtype, reasoning_type=rtype,
            question_complexity=complexity, segment_ids=segment_ids, hop_count=len(segment_ids),
            quality_score=score, generator="offline",
        )

    seen_sections: set[tuple[str, tuple[str, ...]]] = set()
    with progress.task("pseudo-queries generated", total=len(chosen)) as task:
        for chunk in chosen:
            body = chunk.text.split("\n", 1)[1] if "\n" in chunk.text else chunk.text
            heading_words = {t.lower() for h in chunk.headings for t in _terms(h)}
            wanted = spec.questions_per_chunk
            key = (chunk.doc_id, tuple(chunk.headings))
            section = by_section[key]
            if allow_single and key not in seen_sections and len(section) <= min(2, spec.hops.max) and chunk.headings:
                seen_sections.add(key)
                title = chunk.headings[-1]
                if len(_terms(title)) < 2 and len(chunk.headings) > 1:
                    title = f"{title} {chunk.headings[-2]}"
                add(title.lower(), [c.id for c in section], "keyword", "lookup", 2, _terms(title), body)
                wanted -= 1
            sentences = _sentences(body)
            rng.shuffle(sentences)
            for sentence in sentences:
                if wanted <= 0 or not allow_single:
                    break
                phrase = _key_phrase(sentence, idf, heading_words, rng, max_terms=6)
                if len(phrase) < 3:
                    continue
                question, qtype = _as_question(sentence, phrase, rng)
                add(question, [chunk.id], qtype, "lookup" if qtype == "keyword" else "inference", 3, phrase, sentence)
                wanted -= 1
            if allow_multi and rng.random() < spec.multi_hop_fraction:
                doc = by_doc[chunk.doc_id]
                nxt = next((c for c in doc if c.position == chunk.position + 1), None)
                if nxt is not None:
                    exclude = heading_words | {t.lower() for h in nxt.headings for t in _terms(h)}
                    a = _key_phrase(body, idf, exclude, rng, max_terms=3)
                    b = _key_phrase(nxt.text.split("\n", 1)[-1], idf, exclude, rng, max_terms=3)
                    if len(a) >= 2 and len(b) >= 2:
                        add(f"{' '.join(a)} and {' '.join(b)}", [chunk.id, nxt.id], "keyword", "synthesis", 4,
                            a + b, "")
            task.advance()
    out = list(records.values())
    stats["kept"] = len(out)
    stats["chunks_used"] = len(chosen)
    stats["multi_hop"] = sum(1 for r in out if r.hop_count > 1)
    return out, dict(stats)
