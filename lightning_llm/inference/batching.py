"""Continuous batching for the server: every sequence being generated is one row of one KV cache, and each step
is one forward of all rows' last tokens (a decoder's cache holds each row's keys and values, left-padded to a
common length).

Requests that arrive while others generate join at the next step: their prompts are read in one forward of their
own (left-padded) and their cache rows are padded on the left to join the batch's. A row leaves as soon as it ends
(end of sequence, a stop string, `max_tokens`) or its client goes away, and the columns no remaining row uses are
cut, so the cache never grows past the longest live sequence. An idle engine waits `max_wait_s` after a first
request for others to start with it.

Threads: the scheduler is a task on the server's asyncio loop; the forwards run on one worker thread (so the loop
keeps answering while the model computes), which owns the rows and the cache. Neither starts a process.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from lightning_llm.inference.session import cut
from lightning_llm.log import get_logger
from lightning_llm.models import LanguageModel
from lightning_llm.models.cache import KVCache
from lightning_llm.models.generation import left_pad_positions, sample_next_token
from lightning_llm.tokenizers import Tokenizer

log = get_logger(__name__)


@dataclass
class Sampling:
    """How one sequence is decoded (temperature 0 = greedy)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


@dataclass
class Event:
    """What a sequence's reader receives after a step: its new text, and why it ended once it has."""

    index: int  # the sequence's place in its request (OpenAI's choice index)
    text: str
    finish_reason: str | None = None  # stop | length | error
    error: str | None = None


def held_back(text: str, stops: list[str]) -> int:
    """Characters at the end of `text` not to show yet: the start of a stop string, or an unfinished character
    (byte-fallback tokens decode to U+FFFD until the character's last byte arrives)."""
    n = 1 if text.endswith("\ufffd") else 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), n, -1):
            if text.endswith(stop[:k]):
                n = k
                break
    return n


class Sequence:
    """One generation: its framed prompt, its settings and random generator, the tokens and text so far, and the
    queue its request reads events from (shared by the sequences of one request)."""

    def __init__(self, prompt_ids: list[int], sampling: Sampling, queue: asyncio.Queue, index: int = 0) -> None:
        self.prompt_ids, self.sampling, self.queue, self.index = prompt_ids, sampling, queue, index
        seed = sampling.seed if sampling.seed is not None else secrets.randbits(63)
        self.generator = torch.Generator().manual_seed(seed)
        self.new_ids: list[int] = []
        self.emitted = ""
        self.finish_reason: str | None = None
        self.cancelled = False  # set by the request when its client has gone: the engine drops the row

    def advance(self, token: int, tokenizer: Tokenizer) -> Event:
        """Take the next sampled token: the text it adds (held back while it may begin a stop string), or the
        end (eos is not part of the output; a stop string ends it and is cut with what follows)."""
        stops = [s for s in self.sampling.stop if s]
        if token == tokenizer.eos_id:
            return self.finish("stop", cut(tokenizer.decode(self.new_ids), stops))
        self.new_ids.append(token)
        text = tokenizer.decode(self.new_ids)
        shown = cut(text, stops)
        if shown != text:
            return self.finish("stop", shown)
        if len(self.new_ids) >= self.sampling.max_tokens:
            return self.finish("length", text)
        ready = text[: len(text) - held_back(text, stops)]
        if not ready.startswith(self.emitted):  # a decoder rewrote earlier text: wait for the final one
            return Event(self.index, "")
        delta, self.emitted = ready[len(self.emitted) :], ready
        return Event(self.index, delta)

    def finish(self, reason: str, text: str) -> Event:
        self.finish_reason = reason
        delta = text[len(self.emitted) :] if text.startswith(self.emitted) else ""
        self.emitted = text
        return Event(self.index, delta, reason)


def pad_left(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """`t` with zeros before its entries along `dim` (a cache's time axis) up to `width`."""
    missing = width - t.size(dim)
    if missing == 0:
        return t
    pad = [0, 0] * (t.dim() - 1 - dim) + [missing, 0]
    return F.pad(t, pad)


class BatchingEngine:
    """Generates for many requests at once over one KV cache (see the module's docstring)."""

    def __init__(
        self, model: LanguageModel, tokenizer: Tokenizer, max_batch_size: int = 8, max_wait_s: float = 0.01
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_batch_size, self.max_wait_s = max_batch_size, max_wait_s
        self.device = next(model.parameters()).device
        self.pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else 0
        self.waiting: deque[Sequence] = deque()
        self.rows: list[Sequence] = []  # the worker's: one per cache row
        self.cache: KVCache | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lightning-llm-forward")
        self.wakeup: asyncio.Event | None = None
        self.steps = 0
        self.largest_batch = 0  # the most rows one step has decoded

    # -- the asyncio side ------------------------------------------------------------------------------
    def submit(self, sequences: list[Sequence]) -> None:
        """Queue sequences to generate (their events arrive on their queue)."""
        self.waiting.extend(sequences)
        if self.wakeup is not None:
            self.wakeup.set()

    @property
    def busy(self) -> int:
        """Sequences generating or waiting for a row."""
        return len(self.rows) + sum(not s.cancelled for s in self.waiting)

    async def run(self) -> None:
        """The scheduler: admit waiting sequences into free rows, run one step on the worker, hand out events."""
        loop = asyncio.get_running_loop()
        self.wakeup = asyncio.Event()
        while True:
            if not self.rows:
                if not self.waiting:
                    self.wakeup.clear()
                    await self.wakeup.wait()
                await self._gather(loop)
            admitted = self._admit()
            if not admitted and not self.rows:
                continue
            try:
                events = await loop.run_in_executor(self.executor, self.step, admitted)
            except Exception as err:  # a bug or an exhausted device: fail these requests, keep serving
                log.exception("a generation step failed")
                why = f"{type(err).__name__}: {err}"
                events = [(s, Event(s.index, "", "error", why)) for s in self.rows + admitted]
                self.rows, self.cache = [], None
            for sequence, event in events:
                sequence.queue.put_nowait(event)

    async def _gather(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait up to max_wait_s for a fuller first batch."""
        deadline = loop.time() + self.max_wait_s
        while len(self.waiting) < self.max_batch_size and (left := deadline - loop.time()) > 0:
            self.wakeup.clear()
            try:
                await asyncio.wait_for(self.wakeup.wait(), left)
            except TimeoutError:
                return

    def _admit(self) -> list[Sequence]:
        admitted: list[Sequence] = []
        while self.waiting and len(self.rows) + len(admitted) < self.max_batch_size:
            sequence = self.waiting.popleft()
            if not sequence.cancelled:
                admitted.append(sequence)
        return admitted

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)

    # -- the worker thread -----------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, admitted: list[Sequence]) -> list[tuple[Sequence, Event]]:
        """Drop rows whose clients left, decode one token for every row and for the newly admitted prompts, and
        drop the rows that ended. Returns each sequence's event."""
        self._drop([i for i, s in enumerate(self.rows) if s.cancelled])
        if not self.rows and not admitted:  # every row's client left
            return []
        logits = [self._decode()] if self.rows else []
        if self.model.prefix_length:  # a prefix opens each row: read prompts alone (no padding inside a row)
            logits += [self._prefill([s]) for s in admitted]
        elif admitted:
            logits.append(self._prefill(admitted))
        self.steps += 1
        self.largest_batch = max(self.largest_batch, len(self.rows))
        events = []
        for sequence, row in zip(self.rows, torch.cat(logits), strict=True):
            s = sequence.sampling
            token = sample_next_token(row[None].float(), s.temperature, s.top_k, s.top_p, sequence.generator)
            events.append((sequence, sequence.advance(int(token), self.tokenizer)))
        self._drop([i for i, s in enumerate(self.rows) if s.finish_reason])
        return events

    def _decode(self) -> torch.Tensor:
        """Next-token logits of every row after its last token."""
        ids = torch.tensor([[s.new_ids[-1]] for s in self.rows], device=self.device)
        if self.cache.mask is None:  # no row is padded: positions follow the cache
            return self.model(ids, None, self.cache, None)[:, -1]
        positions = torch.tensor([[len(s.prompt_ids) + len(s.new_ids) - 1] for s in self.rows], device=self.device)
        return self.model(ids, torch.ones_like(ids), self.cache, positions)[:, -1]

    def _prefill(self, sequences: list[Sequence]) -> torch.Tensor:
        """Read the prompts in one left-padded forward of their own, then join their rows to the batch."""
        width = max(len(s.prompt_ids) for s in sequences)
        ids = torch.tensor([[self.pad_id] * (width - len(s.prompt_ids)) + s.prompt_ids for s in sequences])
        cache = KVCache()
        if all(len(s.prompt_ids) == width for s in sequences):
            logits = self.model(ids.to(self.device), None, cache, None)[:, -1]
        else:
            mask = torch.tensor([[0] * (width - len(s.prompt_ids)) + [1] * len(s.prompt_ids) for s in sequences])
            mask = mask.to(self.device)
            logits = self.model(ids.to(self.device), mask, cache, left_pad_positions(mask))[:, -1]
        self._merge(cache, len(sequences))
        self.rows += sequences
        return logits

    def _merge(self, new: KVCache, new_rows: int) -> None:
        """Append `new`'s rows to the batch's cache (of self.rows), padding the shorter on the left."""
        old = self.cache
        if old is None:
            self.cache = new
            return
        width = max(old.length, new.length)
        for index, layer in new.self_attention.items():
            mine = old.layer(index)
            mine.keys = torch.cat((pad_left(mine.keys, width, 2), pad_left(layer.keys, width, 2)))
            mine.values = torch.cat((pad_left(mine.values, width, 2), pad_left(layer.values, width, 2)))
        if old.mask is not None or new.mask is not None or old.length != new.length:
            masks = [
                c.mask if c.mask is not None else torch.ones(rows, c.length, dtype=torch.long, device=self.device)
                for c, rows in ((old, len(self.rows)), (new, new_rows))
            ]
            old.mask = torch.cat([pad_left(m, width, 1) for m in masks])
        old.length = width

    def _drop(self, indices: list[int]) -> None:
        """Remove rows, then the leading cache columns no remaining row uses."""
        if not indices:
            return
        keep = [i for i in range(len(self.rows)) if i not in set(indices)]
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache = None
            return
        cache, index = self.cache, torch.tensor(keep, device=self.device)
        first = 0
        if cache.mask is not None:
            cache.mask = cache.mask[index]
            first = int(cache.mask.any(0).long().argmax())  # the first column a row still uses
            cache.mask = cache.mask[:, first:]
            if bool(cache.mask.all()):
                cache.mask = None
        for layer in cache.self_attention.values():
            layer.keys, layer.values = layer.keys[index, :, first:], layer.values[index, :, first:]
        cache.length -= first


async def read_events(queue: asyncio.Queue, sequences: list[Sequence]) -> AsyncIterator[Event]:
    """The events of a request's sequences, in the order they come, until every one has ended; a reader that
    stops early (its client left) cancels the sequences still generating."""
    left = len(sequences)
    try:
        while left:
            event = await queue.get()
            left -= event.finish_reason is not None
            yield event
    finally:
        for sequence in sequences:
            sequence.cancelled = sequence.cancelled or sequence.finish_reason is None
