"""The dynamic batcher's lanes, without a model: calls spread over free lanes, a lone request gets the whole
model, no call overlaps a whole-model call, every request gets its own rows, and a failing call (an exception, or
rows of the wrong shape) fails only its own requests, never leaving them waiting."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from eft.export.artifact import Batch
from eft.serve.batcher import DynamicBatcher, _Item, split_for_lanes

DIM = 3


def _pad(seqs):
    width = max(len(s) for s in seqs)
    ids = np.zeros((len(seqs), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return Batch(ids, mask)


class Recorder:
    """Fake model calls: row = (first token, sequence length, 0); records which function ran, how many ran at
    once, and whether a lane call ever overlapped a whole-model call."""

    def __init__(self, seconds: float = 0.02, fail_on: int | None = None):
        self.seconds, self.fail_on = seconds, fail_on
        self.lock = threading.Lock()
        self.running = {"whole": 0, "lane": 0}
        self.most_at_once = 0
        self.overlap = False
        self.calls: list[tuple[str, int]] = []

    def _run(self, kind: str, batch: Batch) -> np.ndarray:
        with self.lock:
            self.running[kind] += 1
            self.most_at_once = max(self.most_at_once, sum(self.running.values()))
            self.overlap |= self.running["whole"] > 0 and sum(self.running.values()) > 1
            self.calls.append((kind, len(batch.input_ids)))
        try:
            time.sleep(self.seconds)
            if self.fail_on is not None and self.fail_on in batch.input_ids[:, 0]:
                raise RuntimeError("model call failed")
            lengths = batch.attention_mask.sum(1)
            return np.stack([batch.input_ids[:, 0], lengths, np.zeros_like(lengths)], 1).astype(np.float32)
        finally:
            with self.lock:
                self.running[kind] -= 1

    def whole(self, batch):
        return self._run("whole", batch)

    def lane(self, batch):
        return self._run("lane", batch)


def _batcher(rec: Recorder, lanes: int, **kw) -> DynamicBatcher:
    return DynamicBatcher(rec.whole, _pad, DIM, max_batch=kw.pop("max_batch", 64), max_wait_ms=0,
                          run_lane=rec.lane, lanes=lanes, **kw)


def _check_rows(seqs, rows):
    assert rows.shape == (len(seqs), DIM)
    assert rows[:, 0].tolist() == [s[0] for s in seqs] and rows[:, 1].tolist() == [len(s) for s in seqs]


def test_split_for_lanes_halves_the_largest_groups_keeping_length_order():
    items = [_Item(n, [n] * n, None, i) for i, n in enumerate([4, 5, 6, 7, 8])]
    groups = split_for_lanes([items], 2)
    assert [[it.length for it in g] for g in groups] == [[4, 5, 6], [7, 8]]
    groups = split_for_lanes([items[:1], items[1:]], 3)  # the four-item group is the one cut
    assert [[it.length for it in g] for g in groups] == [[4], [5, 6], [7, 8]]
    assert split_for_lanes([items[:1]], 4) == [items[:1]]  # one item cannot be cut
    assert split_for_lanes([items], 1) == [items]


def test_concurrent_requests_are_spread_over_the_lanes():
    rec = Recorder()

    async def main():
        b = _batcher(rec, lanes=2)
        seqs = [[100 + i] * (1 + i % 5) for i in range(16)]
        rows = await asyncio.gather(*[b.embed([s]) for s in seqs])
        await b.close()
        return seqs, rows

    seqs, rows = asyncio.run(main())
    for s, r in zip(seqs, rows):
        _check_rows([s], r)
    lane_calls = [n for kind, n in rec.calls if kind == "lane"]
    assert rec.most_at_once == 2 and not rec.overlap
    assert sum(lane_calls) + sum(n for kind, n in rec.calls if kind == "whole") == 16
    assert len(lane_calls) >= 2


def test_a_lone_request_gets_the_whole_model_and_lanes_wait_for_it():
    rec = Recorder(seconds=0.05)

    async def main():
        b = _batcher(rec, lanes=2)
        first = asyncio.ensure_future(b.embed([[7, 7]]))
        await asyncio.sleep(0.01)  # the lone request is running on the whole model
        later = [[200 + i] for i in range(6)]
        rows = await asyncio.gather(first, *[b.embed([s]) for s in later])
        await b.close()
        return later, rows

    later, rows = asyncio.run(main())
    _check_rows([[7, 7]], rows[0])
    for s, r in zip(later, rows[1:]):
        _check_rows([s], r)
    assert rec.calls[0] == ("whole", 1)
    assert any(kind == "lane" for kind, _ in rec.calls[1:])
    assert not rec.overlap and rec.most_at_once <= 2


def test_one_lane_runs_every_call_on_the_whole_model():
    rec = Recorder()

    async def main():
        b = DynamicBatcher(rec.whole, _pad, DIM, max_wait_ms=0)  # no run_lane: one lane
        rows = await asyncio.gather(*[b.embed([[1 + i], [50 + i, 1]]) for i in range(5)])
        await b.close()
        return rows

    for i, r in enumerate(asyncio.run(main())):
        _check_rows([[1 + i], [50 + i, 1]], r)
    assert {kind for kind, _ in rec.calls} == {"whole"} and rec.most_at_once == 1


def test_a_failing_call_fails_only_its_own_requests():
    rec = Recorder(fail_on=666)

    async def main():
        b = _batcher(rec, lanes=2, max_batch=1)  # one input per call
        results = await asyncio.gather(b.embed([[666]]), b.embed([[5]]), b.embed([[6, 6]]), return_exceptions=True)
        after = await b.embed([[9]])  # the batcher keeps serving
        await b.close()
        return results, after

    (bad, ok5, ok6), after = asyncio.run(main())
    assert isinstance(bad, RuntimeError)
    _check_rows([[5]], ok5)
    _check_rows([[6, 6]], ok6)
    _check_rows([[9]], after)


@pytest.mark.parametrize("wrong", ["wider", "fewer"])
def test_a_call_returning_the_wrong_shape_fails_its_requests_instead_of_hanging_them(wrong):
    def broken(batch):
        rows = np.ones((len(batch.input_ids), DIM), dtype=np.float32)
        return np.ones((len(rows), DIM + 4), np.float32) if wrong == "wider" else rows[:-1]

    async def main():
        b = DynamicBatcher(broken, _pad, DIM, max_wait_ms=0)
        with pytest.raises(RuntimeError, match=rf"expected \(2, {DIM}\)"):
            await asyncio.wait_for(b.embed([[1], [2, 2]]), 5)
        assert b._free == b.lanes  # the lane is free again
        await b.close()

    asyncio.run(main())


@pytest.mark.parametrize("lanes", [2, 4])
def test_a_multi_text_request_is_split_over_idle_lanes(lanes):
    rec = Recorder()

    async def main():
        b = _batcher(rec, lanes=lanes)
        seqs = [[10 + i] * 3 for i in range(8)]
        rows = await b.embed(seqs)
        await b.close()
        return seqs, rows

    seqs, rows = asyncio.run(main())
    _check_rows(seqs, rows)
    assert [kind for kind, _ in rec.calls] == ["lane"] * lanes
    assert rec.most_at_once == lanes



def test_a_small_request_behind_a_large_one_waits_one_batch_not_the_whole_request():
    """Requests are taken from in turn: a one-text request queued behind a 400-text request goes in the next batch
    the worker takes, not after all 400 texts (100 calls of 4)."""
    rec = Recorder(seconds=0.005)
    calls_when_small_done: list[int] = []

    async def main():
        b = _batcher(rec, lanes=2, max_batch=16, max_tokens=64)  # batches of 16 texts, calls of 4 x 16 tokens
        big_seqs = [[1000 + i] * 16 for i in range(400)]

        async def small():
            await asyncio.sleep(0.02)  # the large request is queued and running by now
            rows = await b.embed([[7] * 16])
            calls_when_small_done.append(len(rec.calls))
            return rows

        rows = await asyncio.gather(b.embed(big_seqs), small())
        await b.close()
        return big_seqs, rows

    big_seqs, (big_rows, small_rows) = asyncio.run(main())
    _check_rows(big_seqs, big_rows)
    _check_rows([[7] * 16], small_rows)
    # at most the batch being dispatched when it arrived and the next one (4 calls each), plus the calls
    # that ran before it arrived; first in, first out it would wait for the large request's ~100 calls
    assert len(rec.calls) >= 100 and calls_when_small_done[0] <= 30, calls_when_small_done
