"""Catastrophic forgetting: the base objective's validation loss, measured before and after fine-tuning."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate

from lightning_llm.conf import load_option
from lightning_llm.data.datamodule import TextDataModule
from lightning_llm.log import count_batches, get_logger
from lightning_llm.models import LanguageModel, family_of
from lightning_llm.tokenizers import Tokenizer

log = get_logger(__name__)

#: forgetting.batches=auto sizes the probe to the run: one window per PROBE_STEPS_PER_WINDOW training steps, at least
#: two (a paired change: before and after score the same windows), at most AUTO_PROBE_BATCHES full batches
PROBE_STEPS_PER_WINDOW = 10
AUTO_PROBE_BATCHES = 2


def probe_batches(value: int | str, max_steps: int | None, rows: int) -> tuple[int, int]:
    """(batches, rows per batch) of the probe for forgetting.batches=`value`, at most `rows` rows per batch: auto is
    sized to a run of `max_steps` steps (bounded by epochs, -1 or None: the full AUTO_PROBE_BATCHES), a number is
    that many batches of `rows`."""
    if value != "auto":
        return int(value), rows
    windows = AUTO_PROBE_BATCHES * rows
    if max_steps is not None and max_steps > 0:
        windows = min(windows, max(2, math.ceil(max_steps / PROBE_STEPS_PER_WINDOW)))
    return math.ceil(windows / rows), min(rows, windows)


class ForgettingProbe:
    """Validation batches of the model family's pretraining objective on a corpus, tokenized with the model's
    tokenizer and cut into blocks of the run's size (not the model's full context, which can be 8192 tokens);
    `measure(model)` gives the mean loss and perplexity over them."""

    def __init__(
        self,
        model: LanguageModel,
        tokenizer: Tokenizer,
        path: str,
        block_size: int,
        batch_size: int,
        max_batches: int,
        cache_dir: str | Path,
    ) -> None:
        self.objective = instantiate(load_option("objective", family_of(model).base_objective))
        data = TextDataModule(
            self.objective, tokenizer, path=path, block_size=block_size, batch_size=batch_size, cache_dir=str(cache_dir)
        )
        data.prepare_data()
        data.setup("validate")
        self.objective.configure(data.objective_context(model))
        self.batches = list(data.val_dataloader())[:max_batches]
        self.block_size = block_size
        self.seconds = 0.0

    @classmethod
    def for_run(
        cls,
        model: LanguageModel,
        tokenizer: Tokenizer,
        settings: Mapping[str, Any],
        data_block_size: int,
        rows: int,
        cache_dir: str | Path,
        max_steps: int | None,
    ) -> ForgettingProbe:
        """The probe a run's `forgetting` settings ask for, its blocks at most the run's and the model's context
        (a supervised run's block is the model's whole context), at most `rows` rows per batch, sized to a run of
        `max_steps` steps under forgetting.batches=auto; said in one log line."""
        block = min(settings.get("block_size") or data_block_size, data_block_size, model.context_length)
        batches, rows = probe_batches(settings["batches"], max_steps, rows)
        log.info(
            "forgetting probe: the base objective's loss on %s before and after, %s of %d x %d tokens "
            "(forgetting.batches, auto: one window per %d training steps, at least 2, at most %d batches; "
            "data.max_tokens; forgetting.block_size)",
            settings["path"], count_batches(batches), rows, block, PROBE_STEPS_PER_WINDOW,
            AUTO_PROBE_BATCHES,
        )  # fmt: skip
        return cls(model, tokenizer, settings["path"], block, rows, batches, cache_dir)

    @torch.no_grad()
    def measure(self, model: LanguageModel) -> dict[str, float]:
        started = time.perf_counter()
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        losses = [
            self.objective.forward(model, {k: v.to(device) for k, v in batch.items()}).loss.item()
            for batch in self.batches
        ]
        model.train(was_training)
        loss = sum(losses) / len(losses)
        seconds = time.perf_counter() - started
        self.seconds += seconds
        log.info("forgetting probe: %s of %d tokens in %.1f s", count_batches(len(losses)), self.block_size, seconds)
        return {"loss": round(loss, 4), "perplexity": round(math.exp(loss), 3), "seconds": round(seconds, 2)}
