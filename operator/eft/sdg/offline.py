"""The offline generator: natural-language pseudo-questions derived from the documents themselves, no LLM.

It is honest about being weaker than the `llm` generator: it only asks what the document structure and a few
sentence patterns can phrase, so it teaches the model the corpus's topics and vocabulary, not the variety of
real users' questions. Earlier keyword-bag pseudo-queries (rare terms of a sentence) raised the synthetic test
score while *lowering* retrieval for questions written by people, so every query here is phrased as a question
a person could ask:

1. **heading questions** (`conceptual`/`procedural`, complexity 2): a section heading turned into a question
   ("Creating a Database" -> "how do I create a database", "Partial Indexes" -> "what are partial indexes");
   positives are the section's chunks (at most `hops.max`).
2. **sentence questions** (complexity 3): definitional and instructional sentences turned into questions
   ("A partial index is an index built over a subset..." -> "what is a partial index"; "To remove a table,
   use ..." -> "how do I remove a table"; "You can use X to Y" -> "how can I Y").
3. **comparison questions** (`comparative`, complexity 4, 2 hops): two sibling sections of one document
   ("what is the difference between unique indexes and partial indexes"), both sections' first chunks positive.

`quality_score` is the mean normalised IDF of the question's content words scaled to 0-10, so generic questions
("what is the introduction") score low and `sdg.qualityThreshold` filters them as it filters weak LLM questions.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections import Counter, defaultdict

from eft.api.spec import SdgSpec
from eft.progress import Progress
from eft.records import Chunk, QuestionRecord

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


def _terms(text: str) -> list[str]:
    return [w for w in _WORD.findall(text) if w.lower() not in STOPWORDS and len(w) > 2]


def _question_id(*parts: str) -> str:
    return "q" + hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:15]


class _Idf:
    """Term specificity: IDF of each word over the chunks (unknown words count as the rarest)."""

    def __init__(self, chunks: list[Chunk]):
        df: Counter[str] = Counter()
        for c in chunks:
            df.update({t.lower() for t in _terms(c.text)})
        n = max(1, len(chunks))
        self.idf = {t: math.log((n + 1) / (d + 0.5)) for t, d in df.items()}
        self.max = math.log((n + 1) / 0.5)

    def __call__(self, term: str) -> float:
        return self.idf.get(term.lower(), self.max)

    def quality(self, terms: list[str]) -> float:
        if not terms:
            return 0.0
        return round(10.0 * min(1.0, sum(self(t) for t in terms) / len(terms) / (0.6 * self.max)), 2)


# ----------------------------------------------------------------------------- phrasing
#: Gerund -> base verb for headings like "Creating a Database"; unknown gerunds use the suffix rules below.
_GERUNDS = {
    "adding": "add", "using": "use", "creating": "create", "populating": "populate", "modifying": "modify",
    "removing": "remove", "combining": "combine", "examining": "examine", "handling": "handle",
    "controlling": "control", "getting": "get", "running": "run", "setting": "set", "accessing": "access",
    "ordering": "order", "parsing": "parse", "ranking": "rank", "highlighting": "highlight", "testing": "test",
    "building": "build", "writing": "write", "changing": "change", "managing": "manage", "configuring": "configure",
    "installing": "install", "starting": "start", "stopping": "stop", "updating": "update", "deleting": "delete",
    "inserting": "insert", "defining": "define", "storing": "store", "loading": "load", "querying": "query",
    "searching": "search", "indexing": "index", "joining": "join", "grouping": "group", "limiting": "limit",
    "renaming": "rename", "dropping": "drop", "granting": "grant", "revoking": "revoke", "connecting": "connect",
    "debugging": "debug", "monitoring": "monitor", "tuning": "tune", "restoring": "restore", "upgrading": "upgrade",
    "migrating": "migrate", "replicating": "replicate", "partitioning": "partition", "analyzing": "analyze",
    "vacuuming": "vacuum", "locking": "lock", "choosing": "choose", "making": "make", "taking": "take",
    "avoiding": "avoid", "comparing": "compare", "converting": "convert", "computing": "compute",
    "filtering": "filter", "sorting": "sort", "reading": "read", "deploying": "deploy", "scaling": "scale",
    "troubleshooting": "troubleshoot", "authenticating": "authenticate", "encrypting": "encrypt",
    "exporting": "export", "importing": "import", "calling": "call", "declaring": "declare", "enabling": "enable",
    "disabling": "disable", "specifying": "specify", "implementing": "implement", "writing": "write",
}
_GENERIC_HEADINGS = frozenset({
    "introduction", "overview", "summary", "description", "notes", "note", "examples", "example", "synopsis",
    "parameters", "see also", "compatibility", "outputs", "output", "details", "background", "conclusion",
    "general", "basics", "concepts", "contents", "table of contents", "index", "faq", "appendix", "references",
})
_DEF_SENTENCE = re.compile(
    r"^((?:An?\s+|The\s+)?[A-Za-z][\w\-]*(?:\s+[\w\-]+){0,4}?)\s+(is|are)\s+(?:an?|the|used|a\s+way|one)\b", re.I)
_TO_SENTENCE = re.compile(r"^To\s+([a-z][^,]{8,90}),\s", re.I)
_USED_TO_SENTENCE = re.compile(r"^(?:An?|The)?\s*([A-Za-z][\w\-]*(?:\s+[\w\-]+){0,4}?)\s+(?:is|are|can be)\s+used\s+to\s+"
                               r"([a-z][^.;:]{8,90})", re.I)
_IF_SENTENCE = re.compile(r"^If\s+you\s+(?:want|need|wish)\s+to\s+([a-z][^,]{8,90}),", re.I)
_LETS_SENTENCE = re.compile(r"^(?:An?|The)?\s*([A-Za-z][\w\-]*(?:\s+[\w\-]+){0,3}?)\s+(?:allows?|lets?|enables?)\s+"
                            r"(?:you|users?|one)\s+to\s+([a-z][^.;:]{8,90})", re.I)
_CAN_SENTENCE = re.compile(r"\b(?:you|one|users?)\s+can\s+(?:use\s+\S+(?:\s+\S+){0,3}?\s+to\s+)?([a-z][^.;:]{10,90})",
                           re.I)


def _base_verb(gerund: str) -> str | None:
    g = gerund.lower()
    if g in _GERUNDS:
        return _GERUNDS[g]
    if not g.endswith("ing") or len(g) < 6:
        return None
    stem = g[:-3]
    if len(stem) > 2 and stem[-1] == stem[-2] and stem[-1] not in "lsz":
        return stem[:-1]
    return None  # unsure how to restore the verb (e.g. a dropped "e"): do not guess


def heading_question(heading: str, rng: random.Random) -> tuple[str, str] | None:
    """(question, query_type) for a heading, or None for generic headings."""
    text = re.sub(r"\s+", " ", heading).strip().rstrip(".:")
    low = text.lower()
    if not text or low in _GENERIC_HEADINGS or len(_terms(text)) == 0:
        return None
    words = text.split(" ")
    verb = _base_verb(words[0]) if words[0].lower().endswith("ing") else None
    if verb:
        rest = " ".join(words[1:]).lower()
        return rng.choice([f"how do I {verb} {rest}", f"how to {verb} {rest}", f"how can I {verb} {rest}"]).strip(), \
            "procedural"
    if low.startswith(("how ", "what ", "why ", "when ", "which ", "where ")):
        return low.rstrip("?"), "conceptual"
    plural = low.endswith("s") and not low.endswith(("ss", "us", "is"))
    be = "are" if plural else "is"
    question = rng.choice([f"what {be} {low}", f"how do {low} work" if plural else f"how does {low} work",
                           f"explain {low}", low])
    return question, ("keyword" if question == low else "conceptual")


def sentence_question(sentence: str) -> tuple[str, str] | None:
    """A question a definitional or instructional sentence answers, or None."""
    s = sentence.strip()
    m = _TO_SENTENCE.match(s) or _IF_SENTENCE.match(s)
    if m:
        return f"how do I {m.group(1).strip()}", "procedural"
    m = _USED_TO_SENTENCE.match(s)
    if m and m.group(1).split()[0].lower() not in ("it", "this", "that", "these", "those", "there", "which"):
        return f"what is {m.group(1).strip().lower()} used for", "conceptual"
    m = _LETS_SENTENCE.match(s)
    if m and m.group(1).split()[0].lower() not in ("it", "this", "that", "these", "those", "there", "which"):
        return f"how can I {m.group(2).strip()}", "procedural"
    m = _DEF_SENTENCE.match(s)
    if m and len(m.group(1).split()) <= 6 and m.group(1).lower() not in STOPWORDS | {"it", "this", "that", "there"}:
        subject = m.group(1).strip()
        if subject.split()[0].lower() not in ("it", "this", "that", "these", "those", "there", "which", "each"):
            return f"what {m.group(2).lower()} {subject[0].lower() + subject[1:]}", "conceptual"
    m = _CAN_SENTENCE.search(s)
    if m:
        action = re.sub(r"\s+", " ", m.group(1)).strip().rstrip(",")
        if len(action.split()) >= 3:
            return f"how can I {action}", "procedural"
    return None


def _sentences(body: str) -> list[str]:
    out = []
    for para in body.split("\n"):
        out.extend(s.strip() for s in _SENTENCE.split(para) if 5 <= len(s.split()) <= 60)
    return out


def generate_offline_questions(chunks: list[Chunk], spec: SdgSpec, progress: Progress) -> tuple[list[QuestionRecord], dict]:
    rng = random.Random(spec.seed)
    idf = _Idf(chunks)
    chosen = list(chunks)
    if spec.max_chunks and spec.max_chunks < len(chosen):
        chosen = rng.sample(chosen, spec.max_chunks)
        chosen.sort(key=lambda c: (c.doc_id, c.position))
    by_section: dict[tuple[str, tuple[str, ...]], list[Chunk]] = defaultdict(list)
    for c in chunks:
        by_section[(c.doc_id, tuple(c.headings))].append(c)
    siblings: dict[tuple[str, tuple[str, ...]], list[tuple[str, ...]]] = defaultdict(list)
    for doc_id, headings in by_section:
        if len(headings) >= 2:
            siblings[(doc_id, headings[:-1])].append(headings)

    records: dict[str, QuestionRecord] = {}
    stats = Counter()
    max_hops = spec.hops.max
    allow_multi = max_hops >= 2 and spec.multi_hop_fraction > 0
    allow_single = spec.hops.min <= 1

    def add(question: str, segment_ids: list[str], qtype: str, rtype: str, complexity: int, answer: str) -> None:
        complexity = min(max(complexity, spec.complexity.min), spec.complexity.max)
        hops = len(segment_ids)
        if hops < spec.hops.min or hops > spec.hops.max:
            return
        score = idf.quality(_terms(question))
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
            question_complexity=complexity, segment_ids=segment_ids, hop_count=hops,
            quality_score=score, generator="offline",
        )

    seen_sections: set[tuple[str, tuple[str, ...]]] = set()
    compared: set[tuple] = set()
    with progress.task("pseudo-questions generated", total=len(chosen)) as task:
        for chunk in chosen:
            body = chunk.text.split("\n", 1)[1] if "\n" in chunk.text else chunk.text
            wanted = spec.questions_per_chunk
            key = (chunk.doc_id, tuple(chunk.headings))
            section = by_section[key]
            if key not in seen_sections and chunk.headings:
                seen_sections.add(key)
                made = heading_question(chunk.headings[-1], rng)
                if made:
                    positives = [c.id for c in section[: max(1, min(max_hops, 2))]]
                    if not allow_multi or not allow_single:
                        positives = positives[:1] if allow_single else positives
                    add(made[0], positives, made[1], "lookup", 2, body)
                    wanted -= 1
            sentences = _sentences(body)
            rng.shuffle(sentences)
            for sentence in sentences:
                if wanted <= 0 or not allow_single:
                    break
                made = sentence_question(sentence)
                if made is None:
                    continue
                add(made[0], [chunk.id], made[1], "inference" if made[1] == "conceptual" else "lookup", 3, sentence)
                wanted -= 1
            if allow_multi and len(chunk.headings) >= 2 and rng.random() < spec.multi_hop_fraction:
                parent = (chunk.doc_id, tuple(chunk.headings[:-1]))
                others = [h for h in siblings.get(parent, []) if h != tuple(chunk.headings)]
                if others:
                    other = rng.choice(others)
                    pair = tuple(sorted([tuple(chunk.headings), other]))
                    a, b = chunk.headings[-1].lower(), other[-1].lower()
                    if pair not in compared and a not in _GENERIC_HEADINGS and b not in _GENERIC_HEADINGS:
                        compared.add(pair)
                        add(f"what is the difference between {a} and {b}",
                            [section[0].id, by_section[(chunk.doc_id, other)][0].id],
                            "comparative", "comparison", 4, "")
            task.advance()
    out = list(records.values())
    stats["kept"] = len(out)
    stats["chunks_used"] = len(chosen)
    stats["multi_hop"] = sum(1 for r in out if r.hop_count > 1)
    return out, dict(stats)
