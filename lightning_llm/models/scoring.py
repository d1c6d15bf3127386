"""The model interface evaluation tasks call (as lm-evaluation-harness's `LM`); each family's score.py adapts it.

- `loglikelihood([(context, continuation), ...])`: log P(continuation | context) for each request.
- `loglikelihood_rolling([text, ...], stride)`: log P(text), over sliding windows when the text is longer
  than the model's context.
- `generate_until([prompt, ...], settings, seed)`: continuations, cut at eos and at the stop strings.

How a family scores a continuation (causally, with an encoder-decoder, or as a pseudo-log-likelihood) lives in
that family's score.py. Requests are scored in padded batches, longest first.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, TypeVar

import torch
from torch import nn
from tqdm.auto import tqdm

from lightning_llm.tokenizers import Tokenizer

T = TypeVar("T")
R = TypeVar("R")
Pair = tuple[list[int], list[int]]  # (context ids, continuation ids)


class NotApplicable(Exception):
    """A task that cannot run on this model; the message is the one-line reason."""


class LogLikelihood(NamedTuple):
    """The score of one continuation."""

    logprob: float  # sum of the continuation tokens' log-probabilities (nats)
    n_tokens: int  # continuation tokens scored
    is_greedy: bool  # whether every continuation token was the model's top choice


@dataclass
class GenerationSettings:
    """Decoding settings of a generation task (temperature 0 = greedy)."""

    max_new_tokens: int = 32
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    until: list[str] = field(default_factory=list)  # stop strings: the output is cut before the first one
    repetition_penalty: float = 1.0  # > 1 discourages repeating tokens (transformers' definition)

    def sampling(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "repetition_penalty": self.repetition_penalty,
        }


def rolling_windows(tokens: list[int], prefix: list[int], max_tokens: int, stride: int) -> list[Pair]:
    """Cut `prefix + tokens` into (context, continuation) windows of at most `max_tokens` ids that score every
    token of `tokens` exactly once: the first window as many as fit, each later one `stride` new tokens (the
    last: what is left) after as many preceding tokens as fit, as lm-evaluation-harness's rolling windows."""
    stream = prefix + tokens
    end = min(len(stream), max_tokens)
    pairs = [(stream[: len(prefix)], stream[len(prefix) : end])]
    while end < len(stream):
        new_end = min(len(stream), end + stride)
        pairs.append((stream[max(0, new_end - max_tokens) : end], stream[end:new_end]))
        end = new_end
    return pairs


def continuation_score(logits: torch.Tensor, targets: list[int]) -> LogLikelihood:
    """Score `targets` against the logits (len(targets), vocab) that predict them."""
    if not targets:
        return LogLikelihood(0.0, 0, True)
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    target = torch.tensor(targets, device=logits.device)
    picked = logprobs.gather(-1, target[:, None]).sum()
    return LogLikelihood(float(picked), len(targets), bool((logprobs.argmax(-1) == target).all()))


def total(parts: list[LogLikelihood]) -> LogLikelihood:
    """One score for a sequence scored in parts (windows, or one masked token at a time)."""
    return LogLikelihood(sum(p.logprob for p in parts), sum(p.n_tokens for p in parts), all(p.is_greedy for p in parts))


def lengths_mask(rows: list[list[int]], width: int, device: torch.device) -> torch.Tensor:
    """1 for the real tokens of right-padded rows, 0 for padding."""
    lengths = torch.tensor([len(r) for r in rows], device=device)
    return (torch.arange(width, device=device)[None, :] < lengths[:, None]).long()


class EvalLM:
    """A model and its tokenizer behind the evaluation interface; each family's score.py subclasses it."""

    min_context: ClassVar[int] = 0  # context tokens a scored continuation needs (a decoder: one)

    def __init__(self, model: nn.Module, tokenizer: Tokenizer, batch_size: int = 16, progress: bool = False) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.family = model.family
        self.batch_size, self.progress = batch_size, progress
        self.device = next(model.parameters()).device
        self.block_size = model.context_length  # what is left once a prefix (prompt tuning) takes its tokens

    # -- the interface ---------------------------------------------------------------------------
    def loglikelihood(self, requests: Sequence[tuple[str, str]], desc: str = "loglikelihood") -> list[LogLikelihood]:
        """log P(continuation | context) per (context, continuation) request."""
        return self.score([self.fit(*self.encode_pair(c, x)) for c, x in requests], desc)

    def loglikelihood_rolling(
        self, texts: Sequence[str], stride: int | None = None, desc: str = "rolling"
    ) -> list[LogLikelihood]:
        """log P(text) per text, in windows of `stride` new tokens (default and most: the model's context)."""
        stride = self.effective_stride(stride)
        windows = [rolling_windows(ids, self.rolling_prefix, self.max_tokens, stride) for ids in self.encode_all(texts)]
        scores = iter(self.score([pair for pairs in windows for pair in pairs], desc))
        return [total([next(scores) for _ in pairs]) for pairs in windows]

    def generate_until(
        self, prompts: Sequence[str], settings: GenerationSettings, seed: int, desc: str = "generate"
    ) -> list[str]:
        """Decoded continuations of `prompts`, each cut before the first stop string of `settings.until`."""
        texts = [
            self.tokenizer.decode(ids) for ids in self.generate_ids(self.encode_all(prompts), settings, seed, desc)
        ]
        return [min((t.split(stop)[0] for stop in settings.until if stop), key=len, default=t) for t in texts]

    def generate_ids(
        self,
        prompts: Sequence[list[int]],
        settings: GenerationSettings,
        seed: int,
        desc: str = "generate",
        **hooks: Any,
    ) -> list[list[int]]:
        """New token ids after each prompt (ids), up to eos (excluded). Prompts share left-padded batches."""
        self.check_generation()
        generator = torch.Generator(device=self.device).manual_seed(seed)
        rows = [self.frame_prompt(list(p)) for p in prompts]
        pad = self.tokenizer.pad_id if self.tokenizer.pad_id is not None else 0

        def run(batch: list[list[int]]) -> list[list[int]]:
            width = max(map(len, batch))
            ids = torch.tensor([[pad] * (width - len(r)) + r for r in batch], device=self.device)
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in batch], device=self.device)
            new = self.generate_batch(ids, mask, settings, generator, **hooks).tolist()
            return [ids[: ids.index(self.tokenizer.eos_id)] if self.tokenizer.eos_id in ids else ids for ids in new]

        return self.in_batches(rows, run, desc)

    # -- shared machinery --------------------------------------------------------------------------
    def encode_all(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer.encode_batch(list(texts)) if texts else []

    def encode_pair(self, context: str, continuation: str) -> Pair:
        """Token ids of a request as lm-evaluation-harness splits them: trailing spaces of the context move to
        the continuation; the continuation's ids are the tail of the joint encoding."""
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        context_ids = self.tokenizer.encode(context)
        whole = self.tokenizer.encode(context + continuation)
        return (self.prefix_ids + context_ids) or self.rolling_prefix, whole[len(context_ids) :]

    def fit(self, context: list[int], continuation: list[int]) -> Pair:
        """Drop the oldest context tokens so the pair fits the model in one pass."""
        room = self.max_tokens - len(continuation)
        if room < self.min_context:
            raise ValueError(
                f"a continuation of {len(continuation)} tokens does not fit the model's context of {self.block_size}"
            )
        return context[len(context) - room :] if len(context) > room else context, continuation

    def effective_stride(self, stride: int | None) -> int:
        """New tokens per rolling window: `stride`, at most what fits beside the minimum context."""
        most = self.max_tokens - self.min_context
        return min(stride, most) if stride else most

    def score(self, pairs: list[Pair], desc: str) -> list[LogLikelihood]:
        """Score (context ids, continuation ids) pairs that fit the model, in batches."""
        return self.in_batches(pairs, self.score_batch, desc, length=lambda p: len(p[0]) + len(p[1]))

    def in_batches(
        self,
        items: list[T],
        run: Callable[[list[T]], list[R]],
        desc: str,
        length: Callable[[T], int] = len,
        equal_length: bool = False,
    ) -> list[R]:
        """`run` over batches of `items` (longest first, so padding is small), results in the items' order."""
        order = sorted(range(len(items)), key=lambda i: -length(items[i]))
        batches: list[list[int]] = []
        for i in order:
            last = batches[-1] if batches else None
            if (
                last
                and len(last) < self.batch_size
                and (not equal_length or length(items[last[0]]) == length(items[i]))
            ):
                last.append(i)
            else:
                batches.append([i])
        results: list[Any] = [None] * len(items)
        quiet = not self.progress or len(batches) < 2 or not sys.stderr.isatty()
        for batch in tqdm(batches, desc=desc, disable=quiet, leave=False):
            for i, result in zip(batch, run([items[i] for i in batch]), strict=True):
                results[i] = result
        return results

    # -- what each family defines ------------------------------------------------------------------
    @property
    def prefix_ids(self) -> list[int]:
        """Ids that open every scored sequence (a decoder's <s> when its tokenizer adds one)."""
        return []

    @property
    def rolling_prefix(self) -> list[int]:
        """The context of a text's first token (and of an empty context): `prefix_ids` unless a family says."""
        return self.prefix_ids

    def describe(self) -> dict[str, Any]:
        """How sequences are framed, for the results (what a score depends on beyond the model)."""
        return {"prefix_ids": self.prefix_ids, "rolling_prefix": self.rolling_prefix, "max_tokens": self.max_tokens}

    @property
    def max_tokens(self) -> int:
        """The longest context + continuation one pass scores."""
        raise NotImplementedError

    def check_generation(self) -> None:
        """Raise NotApplicable when this family cannot generate text."""

    def score_batch(self, pairs: list[Pair]) -> list[LogLikelihood]:
        raise NotImplementedError

    def frame_prompt(self, ids: list[int]) -> list[int]:
        """A generation prompt as the model reads it."""
        raise NotImplementedError

    def generate_batch(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        settings: GenerationSettings,
        generator: torch.Generator,
        **hooks: Any,
    ) -> torch.Tensor:
        """New tokens (batch, new) after left-padded framed prompts (batch, time) and their mask (1 = real);
        `hooks` (on_token, should_stop) go to the decoding loop."""
        raise NotImplementedError
