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
from eft.seeding import keyed_order, keyed_rng

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


# ----------------------------------------------------------------------------- prose, not code
_CODE_CHARS = re.compile(r"[()\[\]{}<>=$;|\\`~@#%^*+\"]")
_CAMEL = re.compile(r"[a-z][A-Z][a-z]")
_PRONOUNS = frozenset("it this these those them above below following former latter".split())
_DOC_NUMBERING = re.compile(r"^(?:chapter|section|part|appendix)\s+[\w.]+\s*", re.I)


def is_identifier(token: str) -> bool:
    """A token that reads as code rather than prose: code punctuation, snake_case, dotted or slashed names,
    options (`--force`), CamelCase class names, ALLCAPS names with digits or underscores, file names."""
    t = token.strip(",.;:!?'\u2019\u201c\u201d\"()[]")
    if not t:
        return False
    return bool(_CODE_CHARS.search(t) or "_" in t or "/" in t or t.startswith("-") or "." in t
                or _CAMEL.search(t) or (any(ch.isdigit() for ch in t) and any(ch.isalpha() for ch in t)))


def is_prose_phrase(text: str) -> bool:
    """A phrase made of words only (no identifiers, commands, paths or code punctuation)."""
    words = text.split()
    return bool(words) and not any(is_identifier(w) for w in words) and not _CODE_CHARS.search(text)


def is_prose_sentence(sentence: str) -> bool:
    """A sentence of running text: starts with a capital, ends like a sentence, 6-60 words, at most one
    identifier-like token in ten, and mostly letters (not a command line, a table row or a code line)."""
    s = sentence.strip()
    words = s.split()
    if not 6 <= len(words) <= 60 or not s[0].isupper() or s[-1] not in ".:!?" or " | " in s:
        return False
    if sum(is_identifier(w) for w in words) * 10 > len(words):
        return False
    letters = sum(ch.isalpha() or ch.isspace() or ch in ",.;:'\"()-\u2019" for ch in s)
    return letters >= 0.95 * len(s)


def soft_lower(phrase: str) -> str:
    """Lower-case only words written in title case ("Creating a Database" -> "creating a database"); acronyms and
    mixed-case names keep their case ("PATH", "PostgreSQL")."""
    words = phrase.split()
    if words and words[0] in ("A", "An", "The"):
        words[0] = words[0].lower()
    return " ".join(w.lower() if w[:1].isupper() and w[1:].islower() else w for w in words)


# ----------------------------------------------------------------------------- phrasing
_GENERIC_HEADINGS = frozenset({
    "introduction", "overview", "summary", "description", "notes", "note", "examples", "example", "synopsis",
    "parameters", "see also", "compatibility", "outputs", "output", "details", "background", "conclusion",
    "general", "basics", "concepts", "contents", "table of contents", "index", "faq", "appendix", "references",
    "name", "options", "arguments", "usage", "configuration", "discussion", "bugs", "author", "authors",
    "reporting bugs", "files", "environment", "return value", "exit status", "history", "miscellaneous",
    "tip", "tips", "warning", "caution", "important", "hint", "todo",
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
_SUBJ = r"((?:An?\s+|The\s+)?[A-Za-z][\w\-]*(?:\s+[\w\-]+){0,2}?)"
_NOT_A_SUBJECT = frozenset("if when while because although since unless as once so then and or but for that which who "
                           "there what where how why".split())
_RELATIVE = frozenset({"which", "who", "that", "whose"})
_PARTICIPLE_START = re.compile(r"^(\w+(ing|ed)|set|used|given|run|called|specified|enabled|disabled)\b", re.I)
_MODAL_SENTENCE = re.compile(rf"^{_SUBJ}\s+(can|cannot|can't|should|must|will)\s+(?:not\s+|never\s+|also\s+|only\s+)?"
                             r"([a-z][^.;:]{8,80})[.;:]?$", re.I)
_VERB3_SENTENCE = re.compile(rf"^{_SUBJ}\s+(?:does\s+not\s+|doesn't\s+|also\s+|only\s+)?"
                             r"(supports?|allows?|provides?|requires?|uses?|needs?|works?|stores?|creates?|keeps?)\s+"
                             r"([a-z][^.;:]{6,80})[.;:]?$", re.I)
_POSSIBLE_SENTENCE = re.compile(r"^It\s+is\s+(?:not\s+|also\s+)?(possible|safe|recommended|necessary)\s+to\s+"
                                r"([a-z][^.;:]{8,80})", re.I)
_NEED_SENTENCE = re.compile(r"^You\s+(?:will\s+)?(must|need\s+to|should|have\s+to)\s+(?:not\s+|also\s+|always\s+)?"
                            r"([a-z][^.;:]{8,80})", re.I)
_CONDITION_SENTENCE = re.compile(r"^(If|When)\s+([a-z][^,]{10,80}),\s", re.I)
_COMPARISON_CUE = re.compile(r"\b(unlike|whereas|instead of|rather than|compared|differ\w*|versus|vs\.?|"
                             r"in contrast|similar to|as opposed to|than)\b", re.I)


class Vocabulary:
    """Word frequencies of the corpus, used to restore a verb from its gerund without a word list tied to one
    manual: "creating" -> "create" because "create" occurs in the documents, "running" -> "run", "ordering" ->
    "order"."""

    def __init__(self, chunks: list[Chunk]):
        self.counts: Counter[str] = Counter()
        self.after_to: Counter[str] = Counter()
        for c in chunks:
            words = _WORD.findall(c.text)
            self.counts.update(w.lower() for w in words)
            self.after_to.update(b for a, b in zip(words, words[1:]) if a.lower() == "to" and b.islower())

    def is_verb(self, word: str) -> bool:
        """A word the documents often use after "to" ("to write", "to configure"): an imperative heading's verb."""
        w = word.lower()
        return self.after_to[w] >= 3 and self.after_to[w] >= 0.15 * self.counts[w]

    def base_verb(self, gerund: str) -> str | None:
        g = gerund.lower()
        if not g.endswith("ing") or len(g) < 5:
            return None
        stem = g[:-3]
        candidates = [stem, stem + "e"]
        if len(stem) > 2 and stem[-1] == stem[-2]:
            candidates.append(stem[:-1])
        found = [(self.counts[c], c) for c in candidates if self.counts[c] > 0]
        return max(found)[1] if found else None


def heading_question(heading: str, rng: random.Random, vocab: Vocabulary | None = None) -> tuple[str, str] | None:
    """(question, query_type) for a heading, or None for generic headings and headings that are code (an option,
    a function, a path: real users ask about tasks and concepts, not bare identifiers)."""
    text = _DOC_NUMBERING.sub("", re.sub(r"\s+", " ", heading).strip()).strip().rstrip(".:")
    low = text.lower()
    if (not text or low in _GENERIC_HEADINGS or len(_terms(text)) == 0 or not is_prose_phrase(text)
            or ":" in text):
        return None
    words = text.split(" ")
    if len(words) == 1 and (text.islower() or text.isupper()):
        return None  # a lone lower-case or upper-case word heading is a name from the reference (an option, a keyword)
    if re.match(r"(how|what|why|when|which|where|who)\b", low) or (
            text.endswith("?") and re.match(r"(can|should|is|are|do|does)\b", low)):
        return soft_lower(text).rstrip("?"), "conceptual"
    if {w.lower() for w in words[1:]} & _FINITE_VERBS or re.search(r"n['\u2019]t\b", low):
        return None  # a heading that is a statement ("XML should not be used for ...") is not a topic
    vocab = vocab or Vocabulary([])
    if len(words) > 1 and vocab.is_verb(words[0]):
        return f"how do I {words[0].lower()} {first_person(soft_lower(' '.join(words[1:])))}", "procedural"
    verb = vocab.base_verb(words[0]) if words[0].lower().endswith("ing") else None
    if verb and len(words) > 1:
        rest = soft_lower(" ".join(words[1:]))
        return rng.choice([f"how do I {verb} {rest}", f"how can I {verb} {rest}"]).strip(), "procedural"
    if words[0].lower().endswith("ing"):
        return None  # a gerund we cannot turn back into a verb: do not guess
    subject = soft_lower(text)
    plural = low.endswith("s") and not low.endswith(("ss", "us", "is"))
    templates = [f"what {'are' if plural else 'is'} {subject}"]
    if len(words) <= 2:
        templates.append(f"how do {subject} work" if plural else f"how does {subject} work")
    return rng.choice(templates), "conceptual"


_FINITE_VERBS = frozenset("is are was were should must can could will would does do did has have may might".split())
_SECOND_PERSON = {"you": "I", "your": "my", "yours": "mine", "yourself": "myself", "you're": "I'm"}


def first_person(action: str) -> str:
    """An instruction's action as the asker would say it: "set your password" -> "set my password"; trailing
    asides (", for example") and spaces before punctuation dropped."""
    action = re.sub(r"\s*,?\s*(for example|for instance|e\.g|i\.e|etc)\.?$", "", action.strip())
    action = re.sub(r"\s+([,;:])", r"\1", action).rstrip(",;: ")
    return " ".join(_SECOND_PERSON.get(w.lower(), w) for w in action.split())


def _noun_subject_ok(subject: str) -> bool:
    """A sentence subject fit to open a question: no conjunction first, no verb inside."""
    words = [w.lower() for w in subject.split()]
    return (bool(words) and words[0] not in _NOT_A_SUBJECT and not set(words) & (_FINITE_VERBS | _RELATIVE)
            and not _PARTICIPLE_START.match(subject) and _subject_ok(subject))


def _subject_ok(subject: str) -> bool:
    words = subject.split()
    if len(subject) >= 88 or " use to " in f" {subject} ":
        return False  # cut off by the pattern's length limit, or a code name was dropped from "use X to"
    bare = {re.sub(r"['\u2019](s|re|ll|d)$", "", w.lower()) for w in words}
    return (bool(words) and words[0].lower() not in _PRONOUNS | {"each", "every", "all", "some", "any"}
            and is_prose_phrase(subject) and not (bare & _PRONOUNS))


def sentence_question(sentence: str) -> tuple[str, str] | None:
    """A question a definitional or instructional prose sentence answers, or None (also for sentences that are
    code, and for phrases that lean on the context: "how can I accommodate this")."""
    s = sentence.strip()
    m = _TO_SENTENCE.match(s) or _IF_SENTENCE.match(s)
    if m:
        action = m.group(1).strip()
        return (f"how do I {first_person(action)}", "procedural") if _subject_ok(action) else None
    m = _USED_TO_SENTENCE.match(s)
    if m and _noun_subject_ok(m.group(1)):
        return f"what is {soft_lower(m.group(1).strip())} used for", "conceptual"
    m = _LETS_SENTENCE.match(s)
    if m and _subject_ok(m.group(1)) and _subject_ok(m.group(2)):
        return f"how can I {first_person(m.group(2).strip())}", "procedural"
    m = _DEF_SENTENCE.match(s)
    if m and len(m.group(1).split()) <= 6 and m.group(1).lower() not in STOPWORDS and _noun_subject_ok(m.group(1)):
        return f"what {m.group(2).lower()} {soft_lower(m.group(1).strip())}", "conceptual"
    m = _CAN_SENTENCE.search(s)
    if m:
        action = re.sub(r"\s+", " ", m.group(1)).strip().rstrip(",")
        if len(action.split()) >= 3 and _subject_ok(action):
            return f"how can I {first_person(action)}", "procedural"
    return yes_no_question(s)


def yes_no_question(s: str) -> tuple[str, str] | None:
    """Questions people ask of a capability, a requirement or a condition, from plain English shapes:
    "X can/cannot Y" -> "can X Y"; "X supports Y" -> "does X support Y"; "It is possible to Y" -> "is it possible
    to Y"; "You must Y" -> "do I need to Y"; "If Y, ..." -> "what happens if Y"."""
    m = _POSSIBLE_SENTENCE.match(s)
    if m and _subject_ok(m.group(2)):
        return f"is it {m.group(1).lower()} to {first_person(m.group(2).strip())}", "factual"
    m = _NEED_SENTENCE.match(s)
    if m and _subject_ok(m.group(2)):
        return f"do I need to {first_person(m.group(2).strip())}", "factual"
    m = _CONDITION_SENTENCE.match(s)
    if (m and _subject_ok(m.group(2)) and len(m.group(2).split()) >= 3
            and not _PARTICIPLE_START.match(m.group(2))
            and not re.match(r"you\s+(want|need|wish|like|prefer|believe|think|are\s+not\s+sure)\b", m.group(2), re.I)
            and m.group(2).split()[-1].lower() not in ("you", "it", "that", "so")):
        return f"what happens {m.group(1).lower()} {first_person(m.group(2).strip())}", "conceptual"
    m = _MODAL_SENTENCE.match(s)
    if m and _noun_subject_ok(m.group(1)) and _subject_ok(m.group(3)) and m.group(1).split()[0].lower() != "you":
        modal = {"cannot": "can", "can't": "can", "will": "will"}.get(m.group(2).lower(), m.group(2).lower())
        return f"{modal} {soft_lower(m.group(1).strip())} {first_person(m.group(3).strip())}", "factual"
    m = _VERB3_SENTENCE.match(s)
    if m and _noun_subject_ok(m.group(1)) and _subject_ok(m.group(3)) and m.group(1).split()[0].lower() != "you":
        verb = m.group(2).lower()
        plural = not verb.endswith("s")
        if plural and not m.group(1).lower().endswith("s"):
            return None  # "X support Y" with a singular X is not a sentence we can read
        base = verb if plural else (verb[:-1] if not verb.endswith("ses") else verb[:-1])
        return (f"{'do' if plural else 'does'} {soft_lower(m.group(1).strip())} {base} "
                f"{first_person(m.group(3).strip())}", "factual")
    return None


def compares(texts: list[str], a: str, b: str) -> bool:
    """True when a sentence of `texts` names both `a` and `b` with a comparison cue ("unlike", "rather than",
    "whereas", ...): only then is "what is the difference between a and b" a question the documents answer."""
    for text in texts:
        for sentence in _SENTENCE.split(text.replace("\n", " ")):
            low = sentence.lower()
            if a.lower() in low and b.lower() in low and _COMPARISON_CUE.search(sentence):
                return True
    return False


def _sentences(body: str) -> list[str]:
    """The prose sentences of a chunk body (code lines, commands and table rows left out)."""
    out = []
    for para in body.split("\n"):
        out.extend(s.strip() for s in _SENTENCE.split(para) if is_prose_sentence(s))
    return out


def generate_offline_questions(chunks: list[Chunk], spec: SdgSpec, progress: Progress) -> tuple[list[QuestionRecord], dict]:
    """(questions, counters) for `chunks`. Seeded per chunk (`eft.seeding`): with `sdg.maxChunks` the chunks
    are the first in the order of their own seeded hash, and each chunk's draws (template, sentence order,
    multi-hop) come from a generator of its own. Adding or editing a document therefore leaves the other
    documents' questions as they were, except where corpus-wide statistics move them: term IDF moving a score
    across `sdg.qualityThreshold`, word counts deciding whether a heading's "-ing" word is a verb
    (`Vocabulary`), a `sdg.maxChunks` budget that the new document's chunks take a share of, and
    `sdg.roundTripTopK`, which ranks against the whole corpus (`bench/sdg_stability.py` measures the sum)."""
    idf = _Idf(chunks)
    vocab = Vocabulary(chunks)
    chosen = list(chunks)
    if spec.max_chunks and spec.max_chunks < len(chosen):
        chosen = keyed_order(chosen, spec.seed, key=lambda c: c.id)[: spec.max_chunks]
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
            rng = keyed_rng(spec.seed, "offline", [chunk.id])  # this chunk's draws alone: stable under corpus edits
            body = chunk.text.split("\n", 1)[1] if "\n" in chunk.text else chunk.text
            wanted = spec.questions_per_chunk
            key = (chunk.doc_id, tuple(chunk.headings))
            section = by_section[key]
            if key not in seen_sections and chunk.headings:
                seen_sections.add(key)
                made = heading_question(chunk.headings[-1], rng, vocab)
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
                rng.shuffle(others)
                for other in others:
                    # per document: another document with the same two headings asks its own comparison
                    pair = (chunk.doc_id, *sorted([tuple(chunk.headings), other]))
                    a, b = soft_lower(chunk.headings[-1]), soft_lower(other[-1])
                    if (pair in compared or a.lower() in _GENERIC_HEADINGS or b.lower() in _GENERIC_HEADINGS
                            or not is_prose_phrase(a) or not is_prose_phrase(b)):
                        continue
                    if not compares([c.text for c in section + by_section[(chunk.doc_id, other)]], a, b):
                        stats["comparisons_not_supported"] += 1
                        continue
                    compared.add(pair)
                    add(f"what is the difference between {a} and {b}",
                        [section[0].id, by_section[(chunk.doc_id, other)][0].id],
                        "comparative", "comparison", 4, "")
                    break
            task.advance()
    out = list(records.values())
    stats["kept"] = len(out)
    stats["chunks_used"] = len(chosen)
    stats["multi_hop"] = sum(1 for r in out if r.hop_count > 1)
    return out, dict(stats)
