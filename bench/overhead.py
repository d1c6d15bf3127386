"""Part 2: Lightning's per-step overhead against a bare PyTorch loop doing the same work.

Both sides train the default experiment's model on the same datamodule's batches with the same optimizer
param groups, gradient clipping (1.0) and step-wise LR schedule. A step's time is the wall time between two
consecutive batch starts, so data loading, hooks, logging and callbacks are all inside it.

Two designs, both in one run:

- rounds: `trainer.fit` for N steps, a bare loop for N steps, ... (order rotated every round); the first
  steps of every round are dropped. Catches everything, background threads included, but a busy CPU can
  slow one round more than the next.
- interleaved: inside one `trainer.fit`, a callback runs one bare-loop step of a twin model (deep copy,
  own optimizer and schedule) at every batch start and times Lightning's own cycle around it, so the two
  alternate step by step and share whatever else the CPU is doing.
"""

from __future__ import annotations

import copy
import gc
import logging
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from bench.common import (
    ROOT,
    Row,
    Sample,
    Stamp,
    build_model,
    compose_config,
    paired_ratio,
    quiet_enough,
    select_times,
    span,
    stamp,
)
from lightning_llm.training.module import LanguageModelModule
from lightning_llm.training.optim import parameter_groups

# Kept from conf/callbacks/default.yaml: both checkpoint callbacks (their per-step hooks run; with validation off
# and fit ending mid-epoch they save nothing), lr_monitor, throughput and rich_progress_bar (drawn as on a
# terminal, into /dev/null). Dropped: sample, which only generates text once fit has ended.
DROPPED_CALLBACKS = ("sample",)
SKIP_FIRST = 2  # step times dropped at the start of every round (optimizer state creation, first hooks)


def intervals(stamps: list[Stamp], skip: int = SKIP_FIRST) -> list[Sample]:
    """The samples between consecutive stamps, without the first `skip`."""
    return [span(a, b) for a, b in zip(stamps, stamps[1:], strict=False)][skip:]


def quiet() -> None:
    """Silence Lightning's per-fit info lines and warnings that do not apply here."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", module="torchmetrics")


class BareLoop:
    """What Lightning does per step, by hand: next batch, objective forward, backward, clip, AdamW, LR, zero_grad."""

    def __init__(
        self, module: LanguageModelModule, model: nn.Module, loader: Callable[[], Any], steps: int, clip: float
    ) -> None:
        self.model, self.objective, self.loader = model, module.objective, loader
        self.optimizer = module.optimizer_factory(parameter_groups(model))
        factory = module.scheduler_factory
        self.scheduler = factory(self.optimizer, total_steps=steps) if factory is not None else None
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.clip = clip
        self._batches: Iterator[dict[str, torch.Tensor]] = iter(())

    def _next_batch(self) -> dict[str, torch.Tensor]:
        try:
            return next(self._batches)
        except StopIteration:
            self._batches = iter(self.loader())
            return next(self._batches)

    def step(self) -> None:
        self.model.train()
        batch = self._next_batch()
        with torch.enable_grad():
            loss = self.objective.forward(self.model, batch).loss
            loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)


class StepTimer(pl.Callback):
    """Records the wall clock at every `on_train_batch_start`."""

    def __init__(self) -> None:
        self.stamps: list[Stamp] = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        self.stamps.append(stamp())


class InterleavedBare(pl.Callback):
    """At every batch start, one bare-loop step; Lightning's cycle is the time from one such step's end to the
    next one's start."""

    def __init__(self, bare: BareLoop) -> None:
        self.bare = bare
        self.enter: list[Stamp] = []
        self.exit: list[Stamp] = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        self.enter.append(stamp())
        self.bare.step()
        self.exit.append(stamp())

    def samples(self, skip: int = SKIP_FIRST) -> tuple[list[Sample], list[Sample]]:
        """(Lightning cycles, bare steps), paired step by step."""
        lightning = [span(a, b) for a, b in zip(self.exit, self.enter[1:], strict=False)]
        bare = [span(a, b) for a, b in zip(self.enter, self.exit, strict=True)][: len(lightning)]
        return lightning[skip:], bare[skip:]


class OverheadBench:
    """The default experiment's data, model and module, and the ways to train it."""

    def __init__(self, workdir: Path) -> None:
        # the cache `make train` fills (tokenizer, tokenized corpus), wherever this is run from
        cache = os.environ.get("LIGHTNING_LLM_CACHE") or ROOT / ".cache/lightning-llm"
        self.cfg = cfg = compose_config(
            [
                f"paths.output_dir={workdir}",
                f"paths.cache_dir={cache}",
                "trainer.limit_val_batches=0",  # validation off
                "trainer.enable_model_summary=false",
                *(f"~callbacks.{name}" for name in DROPPED_CALLBACKS),
            ]
        )
        pl.seed_everything(cfg.seed, verbose=False)
        objective = instantiate(cfg.objective)
        tokenizer = OmegaConf.to_container(cfg.tokenizer, resolve=True)
        self.datamodule = instantiate(cfg.data, objective=objective, tokenizer=tokenizer)
        self.datamodule.prepare_data()  # cached after the first run of `make train` or of this benchmark
        self.datamodule.setup("fit")
        model = build_model(cfg.model, vocab_size=self.datamodule.tokenizer.vocab_size)
        objective.configure(self.datamodule.objective_context(model))  # as the recipe's setup_model does
        self.module: LanguageModelModule = instantiate(cfg.module, model=model, objective=objective)
        self.twin = copy.deepcopy(model)  # the interleaved bare loop's own model (tied weights stay tied)
        self.clip = float(cfg.trainer.gradient_clip_val)  # 1.0 in conf/trainer/default.yaml
        self.tokens_per_step = self.datamodule.batch_size * self.datamodule.block_size
        self._devnull = open(os.devnull, "w")  # noqa: SIM115 - the progress bar's console, for the process' life

    def callbacks(self) -> list[pl.Callback]:
        """The configured callbacks (minus DROPPED_CALLBACKS); the progress bar draws as on a terminal, unseen."""
        out = []
        for name, c in self.cfg.callbacks.items():
            if name == "rich_progress_bar":
                out.append(instantiate(c, console_kwargs={"file": self._devnull, "force_terminal": True}))
            else:
                out.append(instantiate(c))
        return out

    def fit(self, steps: int, timer: pl.Callback, full: bool = True) -> None:
        """`trainer.fit` for `steps` steps with `timer`; configured callbacks and CSV logger, or (full=False) none."""
        if full:
            loggers = [instantiate(c) for c in self.cfg.logger.values()]
            extra: dict[str, Any] = {"callbacks": [*self.callbacks(), timer], "logger": loggers}
        else:
            extra = {"callbacks": [timer], "logger": False, "enable_progress_bar": False, "enable_checkpointing": False}
        trainer: pl.Trainer = instantiate(self.cfg.trainer, max_steps=steps, **extra)
        trainer.fit(self.module, datamodule=self.datamodule)
        if trainer.global_step != steps:
            raise RuntimeError(f"Lightning ran {trainer.global_step} steps, not {steps}")

    def lightning(self, steps: int, full: bool = True) -> list[Sample]:
        """Steps of one fit."""
        timer = StepTimer()
        self.fit(steps, timer, full)
        return intervals(timer.stamps)

    def bare(self, steps: int) -> list[Sample]:
        """Steps of the bare loop on the module's own model."""
        loop = BareLoop(self.module, self.module.model, self.datamodule.train_dataloader, steps, self.clip)
        stamps = []
        for _ in range(steps):
            stamps.append(stamp())
            loop.step()
        return intervals(stamps)

    def interleaved(self, steps: int) -> tuple[list[Sample], list[Sample]]:
        """(Lightning, bare) steps of one fit with a bare step of the twin model at every batch start."""
        timer = InterleavedBare(BareLoop(self.module, self.twin, self.datamodule.train_dataloader, steps, self.clip))
        self.fit(steps, timer, full=True)
        return timer.samples()

    def close(self) -> None:
        self._devnull.close()


def round_ratio(rounds: list[list[Sample]], reference: list[list[Sample]], quiet_only: bool) -> float:
    """Median over rounds of the ratio of the round medians. With `quiet_only`, of quiet samples only, over the
    rounds where both sides have at least 3 (all rounds and samples when there are none)."""
    ratios = []
    for samples, ref in zip(rounds, reference, strict=True):
        a, b = select_times(samples, True), select_times(ref, True)
        if quiet_only and sum(s.quiet for s in samples) >= 3 and sum(s.quiet for s in ref) >= 3:
            ratios.append(statistics.median(a) / statistics.median(b))
    if not ratios:
        pairs = zip(rounds, reference, strict=True)
        ratios = [statistics.median(s.seconds for s in x) / statistics.median(s.seconds for s in y) for x, y in pairs]
    return statistics.median(ratios)


def measure(steps: int, rounds: int, budget_s: float = float("inf")) -> tuple[list[Row], dict[str, str]]:
    """Alternate rounds of the four variants (order rotated each round). While time is left within `budget_s`,
    up to `rounds` more rounds run when a busy CPU left under 3/4 of the steps quiet; past it, no new round starts
    once one is done. Returns rows and facts to report."""
    deadline = time.perf_counter() + budget_s
    wanted = 0.75 * rounds * (steps - 1 - SKIP_FIRST)  # quiet steps per variant that make extra rounds unneeded
    done = 0
    quiet()
    with tempfile.TemporaryDirectory(prefix="bench-lightning-") as tmp:
        bench = OverheadBench(Path(tmp))
        names = ["bare", "full", "minimal", "interleaved"]
        times: dict[str, list[Sample]] = {name: [] for name in [*names, "interleaved bare"]}
        per_round: dict[str, list[list[Sample]]] = {name: [] for name in names}
        for r in range(2 * rounds):
            late = time.perf_counter() > deadline
            if (r >= 1 and late) or (r >= rounds and min(sum(s.quiet for s in t) for t in times.values()) >= wanted):
                break
            done = r + 1
            for name in names[r % len(names) :] + names[: r % len(names)]:
                gc.collect()
                if name == "interleaved":
                    lightning, bare = bench.interleaved(steps)
                    times["interleaved"] += lightning
                    times["interleaved bare"] += bare
                    continue
                t = bench.bare(steps) if name == "bare" else bench.lightning(steps, full=name == "full")
                times[name] += t
                per_round[name].append(t)
        bench.close()
        kept = ", ".join(k for k in bench.cfg.callbacks)
        log_every = bench.cfg.trainer.log_every_n_steps
        tokens, clip = bench.tokens_per_step, bench.clip

    rounds_group, inter_group = "Lightning, rounds (default model)", "Lightning, step-interleaved (default model)"
    quiet_only = quiet_enough([Row("", "", times[name], 0) for name in ("bare", "full", "minimal")])
    rows = [
        Row(rounds_group, "bare PyTorch loop", times["bare"], tokens, reference=True),
        Row(
            rounds_group,
            "Trainer as configured",
            times["full"],
            tokens,
            note=f"{kept}; CSV logger",
            paired=round_ratio(per_round["full"], per_round["bare"], quiet_only),
        ),
        Row(
            rounds_group,
            "Trainer, minimal",
            times["minimal"],
            tokens,
            note="no callbacks, no logger",
            paired=round_ratio(per_round["minimal"], per_round["bare"], quiet_only),
        ),
        Row(inter_group, "bare step (twin model)", times["interleaved bare"], tokens, reference=True),
        Row(
            inter_group,
            "Trainer as configured",
            times["interleaved"],
            tokens,
            paired=paired_ratio(times["interleaved"], times["interleaved bare"]),
        ),
    ]
    facts = {
        "Lightning setup": (
            f"{done} rounds x {steps} steps per variant, first {SKIP_FIRST} step times of each round dropped; "
            f"log_every_n_steps={log_every}, gradient_clip_val={clip}, cosine LR stepped per step, validation off; "
            f"callbacks kept: {kept}; dropped: {', '.join(DROPPED_CALLBACKS)}"
        ),
    }
    if done != rounds:
        facts["Lightning rounds"] = f"{done} rounds instead of {rounds} (busy CPU; budget {budget_s:.0f} s)"
    return rows, facts
