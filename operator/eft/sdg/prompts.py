"""Prompts of the `llm` question generator (generation and judge), in the spirit of NVIDIA's
embedding fine-tuning SDG recipe: questions a real user of the documentation would type into a search box,
answerable from the given passages, labelled with query type, reasoning type, complexity and the passages
they need; then an LLM judge that scores each question on five criteria.

Both prompts ask for one JSON object. The parser in `eft.sdg.answers` does not rely on the endpoint honouring
`response_format`: it also accepts JSON in a ```json fence or after some leading prose.

`PROMPT_VERSION` is part of every generation unit's resume key: change it whenever a prompt changes, so
that a re-run does not reuse answers to an older prompt.
"""

from __future__ import annotations

import json
from typing import Sequence, get_args

from eft.records import Chunk, QueryType, ReasoningType

PROMPT_VERSION = "1"

QUERY_TYPES: tuple[str, ...] = get_args(QueryType)
REASONING_TYPES: tuple[str, ...] = get_args(ReasoningType)

COMPLEXITY_SCALE = """\
1 = a single fact stated in one sentence (a name, a default value, a flag)
2 = a fact that needs the surrounding sentence or two to be understood
3 = several facts from one passage combined, or a short procedure
4 = reasoning across facts: conditions, consequences, trade-offs, why something happens
5 = expert-level synthesis: combining several facts (often from several passages) into a non-obvious answer"""

QUERY_TYPE_GUIDE = """\
factual = what/which/when facts; procedural = how to do something, steps, commands, configuration;
conceptual = what something is or why it works the way it does; comparative = differences, choices between options;
troubleshooting = an error, a symptom or an unexpected behaviour and what to do about it;
keyword = a terse search-box query of a few keywords rather than a full sentence; other = anything else"""

REASONING_TYPE_GUIDE = """\
lookup = the answer is stated directly; inference = the answer follows from what is stated but is not written out;
synthesis = the answer combines several statements; comparison = the answer contrasts two or more things;
causal = the answer explains a cause or an effect; multi_step = the answer needs a chain of steps; other = anything else"""

GENERATION_SYSTEM_PROMPT = """\
You create evaluation and training data for a semantic search engine over a body of technical documentation.
Given numbered passages from the documentation, you write the questions that real users of that documentation \
would ask, each paired with its correct answer taken from the passages.

Rules for every question:
- It must be fully answerable from the passages listed in its "passages" field, and the answer must be \
correct according to them. Do not use outside knowledge for the answer.
- Write it the way a user who has NOT seen the passages would ask it: a natural question or search query about \
the product, the task or the problem. Paraphrase; never copy a sentence from a passage verbatim.
- It must make sense on its own. Never refer to "the passage", "the text", "the context", "the document", \
"the author" or "the above"; name the actual subject instead (the component, option, command, concept).
- Be specific enough that only the relevant part of the documentation answers it: avoid vague questions like \
"What does it do?" and avoid yes/no questions.
- Vary wording, query type and reasoning type across the questions; do not ask the same thing twice.
- Keep questions under 40 words and answers under 80 words.

Reply with one JSON object and nothing else (no markdown, no commentary)."""

GENERATION_OUTPUT_FORMAT = """\
{
  "questions": [
    {
      "question": "<the user's question>",
      "answer": "<the correct answer, from the passages>",
      "query_type": "<one of: %s>",
      "reasoning_type": "<one of: %s>",
      "complexity": <integer %d-%d>,
      "passages": [<numbers of every passage needed to answer, e.g. 1 or 1, 2>]
    }
  ]
}"""

JUDGE_SYSTEM_PROMPT = """\
You are a strict quality judge for synthetic search-engine training data. You receive numbered passages from \
technical documentation and a list of questions written about them, each with a proposed answer and the \
passages it claims to need. Score every question from 0 to 10 on each criterion:

- relevance: would a real user of this documentation plausibly ask this, and is it about the passages' subject \
(not trivia about the wording, not a question about "the passage" itself)?
- accuracy: is the proposed answer correct and complete according to the passages?
- context_support: is the question fully answerable from the passages it lists, without outside knowledge? \
If it claims several passages, does it really need all of them?
- clarity: is the question unambiguous, self-contained and well-formed?
- overall: your overall judgement of its value as training data for retrieval (not an average; a fatal flaw \
in any criterion means a low overall score).

Use the whole scale: 9-10 excellent, 7-8 good, 5-6 usable but flawed, 0-4 poor. Judge each question on its own.

Reply with one JSON object and nothing else (no markdown, no commentary)."""

JUDGE_OUTPUT_FORMAT = """\
{
  "evaluations": [
    {"index": <question index>, "relevance": <0-10>, "accuracy": <0-10>, "context_support": <0-10>,
     "clarity": <0-10>, "overall": <0-10>, "reason": "<one short sentence>"}
  ]
}"""


def format_passages(chunks: Sequence[Chunk]) -> str:
    """Numbered passages (1-based), each with its source file and heading path."""
    parts = []
    for i, c in enumerate(chunks, start=1):
        attrs = f'id="{i}" source="{_attr(c.source)}"'
        if c.headings:
            attrs += f' section="{_attr(c.title)}"'
        parts.append(f"<passage {attrs}>\n{c.text.strip()}\n</passage>")
    return "\n\n".join(parts)


def _attr(s: str) -> str:
    return s.replace('"', "'").replace("\n", " ")


def generation_messages(chunks: Sequence[Chunk], n_questions: int, complexities: Sequence[int],
                        complexity_range: tuple[int, int]) -> list[dict]:
    """Chat messages asking for `n_questions` questions over `chunks` (one chunk: single-hop; 2-3: multi-hop)."""
    lo, hi = complexity_range
    n = len(chunks)
    if n == 1:
        task = (f"Write exactly {n_questions} question{'s' if n_questions != 1 else ''} about passage 1. "
                'Every question has "passages": [1].')
    else:
        numbers = ", ".join(str(i) for i in range(1, n + 1))
        task = (f"The {n} passages ({numbers}) are related parts of the same documentation. "
                f"Write exactly {n_questions} multi-hop question{'s' if n_questions != 1 else ''}: each question must "
                f"need facts from at least two of the passages to be answered completely (for example: how two "
                f"settings interact, a procedure whose steps are spread over the passages, a comparison, a cause "
                f"in one passage and its effect in another). List in \"passages\" exactly the passages whose facts "
                f"the answer uses. A question that one passage alone answers is not acceptable here.")
    targets = ", ".join(str(c) for c in complexities)
    user = (
        f"Documentation passages:\n\n{format_passages(chunks)}\n\n"
        f"Task: {task}\n\n"
        f"Complexity must be between {lo} and {hi} on this scale:\n{COMPLEXITY_SCALE}\n"
        f"Aim for these complexities, one per question: {targets}.\n\n"
        f"Query types:\n{QUERY_TYPE_GUIDE}\n\nReasoning types:\n{REASONING_TYPE_GUIDE}\n\n"
        f"Answer with this JSON structure:\n"
        + GENERATION_OUTPUT_FORMAT % (", ".join(QUERY_TYPES), ", ".join(REASONING_TYPES), lo, hi)
    )
    return [{"role": "system", "content": GENERATION_SYSTEM_PROMPT}, {"role": "user", "content": user}]


def judge_messages(chunks: Sequence[Chunk], questions: Sequence[dict]) -> list[dict]:
    """Chat messages asking the judge to score `questions` (dicts with question, answer, passages)."""
    items = [
        {"index": i, "question": q["question"], "answer": q.get("answer", ""), "passages": q.get("passages", [])}
        for i, q in enumerate(questions, start=1)
    ]
    user = (
        f"Documentation passages:\n\n{format_passages(chunks)}\n\n"
        f"Questions to judge:\n<questions>\n{json.dumps(items, ensure_ascii=False, indent=1)}\n</questions>\n\n"
        f"Score every question (indices 1 to {len(items)}). Answer with this JSON structure:\n"
        + JUDGE_OUTPUT_FORMAT
    )
    return [{"role": "system", "content": JUDGE_SYSTEM_PROMPT}, {"role": "user", "content": user}]
