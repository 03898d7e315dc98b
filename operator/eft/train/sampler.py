"""A batch sampler that never puts a question's labelled positive into its batch as a negative.

With in-batch negatives (InfoNCE / MultipleNegativesRankingLoss) every passage of a batch is a negative for
every other query in it. sentence-transformers' no-duplicates sampler compares texts only, so it cannot see that
the positive (or a hard negative) of one example is a *labelled positive* of another question in the batch: a
multi-hop question unrolled into one example per positive, or two questions about the same chunk. Those pairs
teach the model to push a question away from its own answer. This sampler knows every example's question
positives (chunk ids) and builds each batch so that, for any two examples i != j in it:

- no passage of j (its positive or hard negatives) is a labelled positive of i's question;
- no passage appears twice, and no question text appears twice (what the no-duplicates sampler guaranteed).

Batches are filled greedily from a seeded shuffle (re-seeded per epoch); an example that conflicts with the
batch being filled waits for the next one, so nothing is dropped (the last batches may be smaller).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

try:
    from sentence_transformers.base.sampler import DefaultBatchSampler
except ImportError:  # sentence-transformers 5.x
    from sentence_transformers.sampler import DefaultBatchSampler


@dataclass(frozen=True)
class ExampleIds:
    """What one training row is about, by id: its question (normalised text), every labelled positive of that
    question, and the passages the row puts into a batch (its positive and hard negatives)."""

    question: str
    positives: frozenset[str]
    passages: tuple[str, ...]


def plan_batches(rows: list[ExampleIds], order: list[int], batch_size: int, drop_last: bool = False
                 ) -> list[list[int]]:
    """Batches of row indices (pure function of `rows` and `order`; see the module docstring)."""
    batches: list[list[int]] = []
    remaining = list(order)
    while remaining:
        batch: list[int] = []
        questions: set[str] = set()
        passages: set[str] = set()
        positives: set[str] = set()
        deferred: list[int] = []
        pos = 0
        for pos, idx in enumerate(remaining):
            if len(batch) == batch_size:
                break
            r = rows[idx]
            if (r.question in questions or not passages.isdisjoint(r.passages)
                    or not positives.isdisjoint(r.passages) or not passages.isdisjoint(r.positives)):
                deferred.append(idx)
                continue
            batch.append(idx)
            questions.add(r.question)
            passages.update(r.passages)
            positives.update(r.positives)
        else:
            pos = len(remaining)
        batches.append(batch)
        remaining = deferred + remaining[pos:]
    if drop_last:
        batches = [b for b in batches if len(b) == batch_size]
    return batches


def conflicts(rows: list[ExampleIds], batch: list[int]) -> int:
    """Ordered pairs (i, j) of one batch where a passage of j is a labelled positive of i's question."""
    return sum(1 for i in batch for j in batch if i != j and not rows[i].positives.isdisjoint(rows[j].passages))


class PositiveAwareBatchSampler(DefaultBatchSampler):
    """`SentenceTransformerTrainingArguments(batch_sampler=functools.partial(PositiveAwareBatchSampler, rows=...))`;
    `rows[i]` describes dataset row i."""

    def __init__(self, dataset, batch_size: int, drop_last: bool, valid_label_columns=None, generator=None,
                 seed: int = 0, rows: list[ExampleIds] | None = None):
        super().__init__(dataset, batch_size=batch_size, drop_last=drop_last,
                         valid_label_columns=valid_label_columns, generator=generator, seed=seed)
        if rows is None or len(rows) != len(dataset):
            raise ValueError(f"PositiveAwareBatchSampler needs one ExampleIds per dataset row "
                             f"({len(dataset)} rows, {0 if rows is None else len(rows)} given)")
        self.rows = rows
        self._planned: tuple[int, list[list[int]]] | None = None

    def _plan(self) -> list[list[int]]:
        import torch

        epoch = getattr(self, "epoch", 0)
        if self._planned is None or self._planned[0] != epoch:
            g = torch.Generator()
            g.manual_seed(int(self.seed or 0) + epoch)
            order = torch.randperm(len(self.rows), generator=g).tolist()
            self._planned = (epoch, plan_batches(self.rows, order, self.batch_size, self.drop_last))
        return self._planned[1]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._plan()

    def __len__(self) -> int:
        return len(self._plan())
