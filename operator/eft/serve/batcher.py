"""Dynamic batching across concurrent requests, over one or more lanes.

Requests put their tokenised inputs in the queue; a single worker takes up to `max_batch` of them, one input from
each waiting request in turn (so a request of thousands of texts does not hold back a one-text request that came
after it for longer than one batch), sorts them by length, cuts them into sub-batches of similar length (bounded
padding and token count), and runs each sub-batch in an executor thread, so inference never blocks the event loop.
While calls run, new requests queue up and form the next batch. When the model is idle the first input goes at once,
unless other requests are already being read and tokenised: then the worker waits for them, at most `max_wait`. That
keeps batch-1 latency at the model's own speed and fills batches under load.

Lanes: a backend may offer `lanes` > 1 model calls at once (`run_lane`; onnxruntime on CPU runs one
single-threaded call per core, see `eft.serve.backends.OnnxBackend`). Then the worker cuts what it takes into at
least as many calls as there are free lanes, gives each call a lane, and takes the next batch as soon as a lane
is free. A lone input that finds every lane idle runs on `run_batch` instead (all cores on one call, occupying
every lane), so a single request is as fast as the backend can make it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from eft.export.artifact import Batch


@dataclass
class _Request:
    out: np.ndarray
    remaining: int
    future: asyncio.Future


@dataclass(order=True)
class _Item:
    length: int
    seq: list[int] = field(compare=False)
    request: _Request = field(compare=False)
    index: int = field(compare=False)


def group_by_length(items: Sequence[_Item], max_batch: int, max_tokens: int) -> list[list[_Item]]:
    """Sorted items cut into groups: at most `max_batch` items, `max_tokens` padded tokens, and no item more than
    twice (plus 8 tokens) as long as the group's shortest, so little compute goes to padding."""
    groups: list[list[_Item]] = []
    current: list[_Item] = []
    for it in sorted(items):
        if current:
            first = current[0].length
            if (len(current) >= max_batch or (len(current) + 1) * it.length > max_tokens
                    or it.length > 2 * first + 8):
                groups.append(current)
                current = []
        current.append(it)
    if current:
        groups.append(current)
    return groups


def split_for_lanes(groups: Sequence[list[_Item]], lanes: int) -> list[list[_Item]]:
    """`groups` cut further until there are at least `lanes` of them or none has two items left: the group with
    the most padded tokens (items x longest) is halved, keeping length order. So `lanes` idle model lanes all
    get work from one batch."""
    out = [list(g) for g in groups if g]
    while len(out) < lanes:
        splittable = [i for i, g in enumerate(out) if len(g) > 1]
        if not splittable:
            break
        i = max(splittable, key=lambda k: len(out[k]) * out[k][-1].length)
        half = (len(out[i]) + 1) // 2
        out[i:i + 1] = [out[i][:half], out[i][half:]]
    return out


def batch_token_budget(max_batch: int, max_tokens: int | None = None) -> int:
    """Padded tokens per model call (sequences x longest length): `max_tokens` when given (a backend's own
    budget, e.g. `CPU_BATCH_TOKENS`), else max(128 x `max_batch`, 8192)."""
    return int(max_tokens or max(max_batch * 128, 8192))


class DynamicBatcher:
    """Batches token sequences from concurrent requests into model calls.

    `run_batch(pad(seqs))` must return float32 `[len(seqs), dimension]`, one row per sequence in order;
    `max_batch` bounds sequences per call, `max_tokens` padded tokens per call (sequences x longest length;
    default `max(128 x max_batch, 8192)`), `max_wait_ms` (milliseconds) how long an idle worker waits for
    requests already arriving. `run_lane` (same contract) with `lanes` > 1: up to `lanes` calls of it run at
    once, one per lane (module docstring). `rows_per_call` caps sequences per call below `max_batch` (a graph
    whose vectors depend on their batch runs one per call) while the worker still takes `max_batch` at a time.
    `on_batch(sequences, tokens, seconds)` is called after each model call.
    """

    def __init__(self, run_batch: Callable[[Batch], np.ndarray], pad: Callable[[list[list[int]]], Batch],
                 dimension: int, max_batch: int = 64, max_wait_ms: float = 5.0, max_tokens: int | None = None,
                 on_batch: Callable[[int, int, float], None] | None = None,
                 run_lane: Callable[[Batch], np.ndarray] | None = None, lanes: int = 1,
                 rows_per_call: int | None = None):
        self.run_batch = run_batch
        self.pad = pad
        self.dimension = dimension
        self.max_batch = max(1, int(max_batch))
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000.0
        self.max_tokens = batch_token_budget(self.max_batch, max_tokens)
        self.rows_per_call = max(1, min(int(rows_per_call or self.max_batch), self.max_batch))
        self.on_batch = on_batch
        self.run_lane = run_lane
        self.lanes = max(1, int(lanes)) if run_lane is not None else 1
        self.executor = ThreadPoolExecutor(max_workers=self.lanes, thread_name_prefix="eft-infer")
        #: one deque of inputs per waiting request, taken from in turn (`_take`)
        self._queue: deque[deque[_Item]] = deque()
        self._queued = 0  # inputs in all of them
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._arriving = 0  # requests accepted and being read/tokenised, not yet queued
        self._free = self.lanes  # lanes without a model call
        self._lane_freed: asyncio.Event | None = None
        self._calls: set[asyncio.Task] = set()

    # -------------------------------------------------------------- request side
    def arriving(self) -> None:
        """A request started (its inputs will be queued soon): an idle worker may wait for it briefly."""
        self._arriving += 1

    def arrived(self) -> None:
        self._arriving = max(0, self._arriving - 1)
        if self._wake is not None:
            self._wake.set()

    @property
    def queue_depth(self) -> int:
        return self._queued

    async def embed(self, seqs: Sequence[list[int]]) -> np.ndarray:
        """Embeddings of tokenised inputs, batched with other requests': float32 `[len(seqs), dimension]`, row i
        for seqs[i] (token ids, unpadded)."""
        self._ensure_worker()
        loop = asyncio.get_running_loop()
        req = _Request(np.empty((len(seqs), self.dimension), dtype=np.float32), len(seqs), loop.create_future())
        if len(seqs):
            self._queue.append(deque(_Item(len(s), s, req, i) for i, s in enumerate(seqs)))
            self._queued += len(seqs)
        else:
            req.future.set_result(req.out)
        self._wake.set()
        return await req.future

    # -------------------------------------------------------------- worker side
    def _ensure_worker(self) -> None:
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._lane_freed = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._worker(), name="eft-batcher")

    def _take(self, n: int) -> list[_Item]:
        """Up to `n` queued inputs, one from each waiting request in turn (round robin, in arrival order)."""
        out: list[_Item] = []
        while len(out) < n and self._queue:
            items = self._queue.popleft()
            out.append(items.popleft())
            if items:
                self._queue.append(items)
        self._queued -= len(out)
        return out

    async def _collect(self) -> list[_Item]:
        while not self._queue:
            self._wake.clear()
            await self._wake.wait()
        if self._queued < self.max_batch and self._arriving > 0 and self.max_wait > 0:
            deadline = time.monotonic() + self.max_wait
            while self._queued < self.max_batch and self._arriving > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), left)
                except asyncio.TimeoutError:
                    break
        return self._take(self.max_batch)

    async def _lanes_free(self, n: int) -> None:
        while self._free < n:
            self._lane_freed.clear()
            await self._lane_freed.wait()

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._lanes_free(1)
            items = await self._collect()
            # a lone input with every lane idle gets all cores (run_batch); anything else is spread over lanes
            whole = self.lanes == 1 or (len(items) == 1 and self._free == self.lanes)
            groups = group_by_length(items, self.rows_per_call, self.max_tokens)
            if not whole:
                groups = split_for_lanes(groups, self._free)
            for group in groups:
                need = self.lanes if whole else 1
                await self._lanes_free(need)
                self._free -= need
                call = loop.create_task(self._call(group, self.run_batch if whole else self.run_lane, need))
                self._calls.add(call)
                call.add_done_callback(self._calls.discard)

    async def _call(self, group: list[_Item], run: Callable[[Batch], np.ndarray], lanes: int) -> None:
        live = [it for it in group if not it.request.future.done()]
        try:
            if not live:
                return
            started = time.perf_counter()
            emb = await asyncio.get_running_loop().run_in_executor(
                self.executor, lambda: run(self.pad([it.seq for it in live])))
            if getattr(emb, "shape", None) != (len(live), self.dimension):
                raise RuntimeError(f"the model returned an array of shape {getattr(emb, 'shape', type(emb))} for "
                                   f"{len(live)} inputs; expected ({len(live)}, {self.dimension})")
            if self.on_batch is not None:
                self.on_batch(len(live), sum(it.length for it in live), time.perf_counter() - started)
            for row, it in zip(emb, live):
                req = it.request
                if req.future.done():
                    continue
                req.out[it.index] = row
                req.remaining -= 1
                if req.remaining == 0:
                    req.future.set_result(req.out)
        except Exception as err:  # noqa: BLE001 - a failed call fails its own requests, never hangs them
            for it in live:
                if not it.request.future.done():
                    it.request.future.set_exception(err)
        finally:
            self._free += lanes
            self._lane_freed.set()

    async def close(self) -> None:
        for task in [self._task, *self._calls]:
            if task is None:
                continue
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        self.executor.shutdown(wait=False, cancel_futures=True)
