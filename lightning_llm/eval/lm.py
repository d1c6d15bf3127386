"""The model interface evaluation tasks call (as lm-evaluation-harness's `LM`), with one adapter per family.

- `loglikelihood([(context, continuation), ...])`: log P(continuation | context) for each request.
- `loglikelihood_rolling([text, ...], stride)`: log P(text), over sliding windows when the text is longer
  than the model's context.
- `generate_until([prompt, ...], settings, seed)`: continuations, cut at eos and at the stop strings.

GPT scores a continuation causally after `<s> context`; T5 encodes `context </s>` and scores the continuation
with its decoder; BERT gives a pseudo-log-likelihood: each continuation token masked in turn and predicted
from everything else (`<s> context continuation </s>`). Requests are scored in padded batches, longest first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, NamedTuple, TypeVar

import torch
from torch import nn
from tqdm.auto import tqdm

from lightning_llm.data.tokenizer import Tokenizer
from lightning_llm.finetune.base import TASK_HEAD
from lightning_llm.objectives import SequenceClassification
from lightning_llm.objectives.mlm import MASK_TOKEN
from lightning_llm.objectives.sft import pad

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

    def sampling(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p}


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
    """A model and its tokenizer behind the evaluation interface; subclasses handle one family each."""

    family: ClassVar[str]
    min_context: ClassVar[int] = 0  # context tokens a scored continuation needs (a decoder: one)

    def __init__(self, model: nn.Module, tokenizer: Tokenizer, batch_size: int = 16, progress: bool = False) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.progress = batch_size, progress
        self.device = next(model.parameters()).device
        # the context left once a fine-tuning prefix (prompt tuning) takes its virtual tokens
        self.block_size = model.config.block_size - getattr(getattr(model, "prefix", None), "length", 0)

    # -- the interface ---------------------------------------------------------------------------
    def loglikelihood(self, requests: Sequence[tuple[str, str]], desc: str = "loglikelihood") -> list[LogLikelihood]:
        """log P(continuation | context) per (context, continuation) request."""
        return self.score([self.fit(*self.encode_pair(c, x)) for c, x in requests], desc)

    def loglikelihood_rolling(
        self, texts: Sequence[str], stride: int | None = None, desc: str = "rolling"
    ) -> list[LogLikelihood]:
        """log P(text) per text, in windows of `stride` new tokens (default and most: the model's context)."""
        stride = self.effective_stride(stride)
        windows = [rolling_windows(ids, self.prefix_ids, self.max_tokens, stride) for ids in self.encode_all(texts)]
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
        self, prompts: Sequence[list[int]], settings: GenerationSettings, seed: int, desc: str = "generate"
    ) -> list[list[int]]:
        """New token ids after each prompt (ids), up to eos (excluded). Prompts of one length share a batch."""
        self.check_generation()
        generator = torch.Generator(device=self.device).manual_seed(seed)
        rows = [self.frame_prompt(list(p)) for p in prompts]

        def run(batch: list[list[int]]) -> list[list[int]]:
            new = self.generate_batch(torch.tensor(batch, device=self.device), settings, generator).tolist()
            return [ids[: ids.index(self.tokenizer.eos_id)] if self.tokenizer.eos_id in ids else ids for ids in new]

        return self.in_batches(rows, run, desc, equal_length=True)

    def classify(self, prompts: Sequence[str], num_classes: int, desc: str = "classify") -> list[int]:
        """The class index the model's fine-tuned classification head (`task_head`) predicts for each prompt."""
        head = getattr(self.model, TASK_HEAD, None)
        if head is None or self.family not in SequenceClassification.model_families:
            raise NotApplicable(f"use_task_head: the {self.family} model has no classification head (task_head)")
        if head.out_features != num_classes:
            raise NotApplicable(f"use_task_head: the head has {head.out_features} classes, the task {num_classes}")
        objective = SequenceClassification()
        objective.bind_tokenizer(self.tokenizer)
        objective.family, objective.model = self.family, self.model

        def run(batch: list[list[int]]) -> list[int]:
            inputs = objective.collate([{"prompt_ids": ids, "label": 0} for ids in batch])
            out = objective.forward(self.model, {k: v.to(self.device) for k, v in inputs.items()})
            return out.logits.argmax(-1).tolist()

        return self.in_batches(self.encode_all(prompts), run, desc)

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
        return self.prefix_ids + context_ids, whole[len(context_ids) :]

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
        for batch in tqdm(batches, desc=desc, disable=not self.progress or len(batches) < 2, leave=False):
            for i, result in zip(batch, run([items[i] for i in batch]), strict=True):
                results[i] = result
        return results

    # -- what each family defines ------------------------------------------------------------------
    @property
    def prefix_ids(self) -> list[int]:
        """Ids that open every scored sequence (a decoder's <s>)."""
        return []

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
        self, ids: torch.Tensor, settings: GenerationSettings, generator: torch.Generator
    ) -> torch.Tensor:
        """New tokens (batch, new) after equal-length framed prompts (batch, time)."""
        raise NotImplementedError


class GPTEvalLM(EvalLM):
    """Decoder-only: the continuation's tokens are predicted left to right after `<s> context`."""

    family = "gpt"
    min_context = 1

    @property
    def prefix_ids(self) -> list[int]:
        """<s>, or the end-of-text token for tokenizers without one (GPT-2's, as the harness does)."""
        tok = self.tokenizer
        first = tok.bos_id if tok.bos_id is not None else tok.eos_id
        if first is None:
            raise NotApplicable("the tokenizer has neither a bos nor an eos token to start a sequence with")
        return [first]

    @property
    def max_tokens(self) -> int:
        return self.block_size + 1  # the last token is only a target

    def score_batch(self, pairs: list[Pair]) -> list[LogLikelihood]:
        # right padding: causal attention never lets a real token see the pads after it
        logits = self.model(pad([(c + x)[:-1] for c, x in pairs], self.tokenizer.pad_id).to(self.device))
        return [continuation_score(logits[i, len(c) - 1 : len(c) - 1 + len(x)], x) for i, (c, x) in enumerate(pairs)]

    def frame_prompt(self, ids: list[int]) -> list[int]:
        return [*self.prefix_ids, *ids][-self.block_size :]

    def generate_batch(
        self, ids: torch.Tensor, settings: GenerationSettings, generator: torch.Generator
    ) -> torch.Tensor:
        out = self.model.generate(
            ids, settings.max_new_tokens, eos_id=self.tokenizer.eos_id, generator=generator, **settings.sampling()
        )
        return out[:, ids.size(1) :]


class T5EvalLM(EvalLM):
    """Encoder-decoder: `context </s>` is encoded, the decoder (started with <pad>) scores the continuation."""

    family = "t5"

    @property
    def max_tokens(self) -> int:
        return self.block_size

    def encode_pair(self, context: str, continuation: str) -> Pair:
        """Context and continuation are encoded apart (they go to different stacks), as the harness does."""
        return self.tokenizer.encode(context), self.tokenizer.encode(continuation)

    def fit(self, context: list[int], continuation: list[int]) -> Pair:
        if len(continuation) > self.block_size:
            raise ValueError(f"a continuation of {len(continuation)} tokens exceeds the decoder's {self.block_size}")
        return context[-(self.block_size - 1) :], continuation

    def score_batch(self, pairs: list[Pair]) -> list[LogLikelihood]:
        tok = self.tokenizer
        encoder_rows = [c[-(self.block_size - 1) :] + [tok.eos_id] for c, _ in pairs]
        encoder_ids = pad(encoder_rows, tok.pad_id).to(self.device)
        mask = lengths_mask(encoder_rows, encoder_ids.size(1), self.device)
        decoder_ids = pad([[tok.pad_id, *x[:-1]] for _, x in pairs], tok.pad_id).to(self.device)
        logits = self.model(encoder_ids, decoder_ids, mask)
        return [continuation_score(logits[i, : len(x)], x) for i, (_, x) in enumerate(pairs)]

    def frame_prompt(self, ids: list[int]) -> list[int]:
        return [*ids[-(self.block_size - 1) :], self.tokenizer.eos_id]

    def generate_batch(
        self, ids: torch.Tensor, settings: GenerationSettings, generator: torch.Generator
    ) -> torch.Tensor:
        tok = self.tokenizer
        return self.model.generate(
            ids,
            settings.max_new_tokens,
            decoder_start_id=tok.pad_id,
            eos_id=tok.eos_id,
            generator=generator,
            **settings.sampling(),
        )


class BERTEvalLM(EvalLM):
    """Masked LM: pseudo-log-likelihood (Salazar et al., 2020), one masked copy per continuation token."""

    family = "bert"

    @property
    def max_tokens(self) -> int:
        return self.block_size - 2  # <s> ... </s>

    def check_generation(self) -> None:
        raise NotApplicable("BERT is an encoder (masked LM): it does not generate text")

    def score(self, pairs: list[Pair], desc: str) -> list[LogLikelihood]:
        """Expand each pair into one masked row per continuation token, score the rows, sum them per pair."""
        self.mask_id  # noqa: B018 (fail before any work when the tokenizer has no mask token)
        rows = [(c, x, j) for c, x in pairs for j in range(len(x))]
        scores = iter(self.in_batches(rows, self.score_batch, desc, length=lambda r: len(r[0]) + len(r[1])))
        return [total([next(scores) for _ in x]) for _, x in pairs]

    @cached_property
    def mask_id(self) -> int:
        """The id of the mask token: ours (<mask>) or BERT's own ([MASK])."""
        for token in (MASK_TOKEN, "[MASK]"):
            i = self.tokenizer.token_to_id(token)
            if i is not None and i != self.tokenizer.unk_id:
                return i
        raise NotApplicable(f"the tokenizer has no {MASK_TOKEN} token for pseudo-log-likelihood scoring")

    def score_batch(self, rows: list[tuple[list[int], list[int], int]]) -> list[LogLikelihood]:
        tok, mask_id = self.tokenizer, self.mask_id
        inputs = [[tok.bos_id, *c, *x[:j], mask_id, *x[j + 1 :], tok.eos_id] for c, x, j in rows]
        ids = pad(inputs, tok.pad_id).to(self.device)
        hidden = self.model.encode(ids, lengths_mask(inputs, ids.size(1), self.device))
        positions = torch.tensor([1 + len(c) + j for c, _, j in rows], device=self.device)
        logits = self.model.mlm_logits(hidden[torch.arange(len(rows), device=self.device), positions])
        return [continuation_score(logits[i : i + 1], [x[j]]) for i, (_, x, j) in enumerate(rows)]


ADAPTERS: dict[str, type[EvalLM]] = {cls.family: cls for cls in (GPTEvalLM, T5EvalLM, BERTEvalLM)}


def eval_lm(model: nn.Module, tokenizer: Tokenizer, family: str, batch_size: int, progress: bool) -> EvalLM:
    """The adapter for a model family."""
    if family not in ADAPTERS:
        raise ValueError(f"no evaluation adapter for model family {family!r}: known are {sorted(ADAPTERS)}")
    return ADAPTERS[family](model, tokenizer, batch_size, progress)
