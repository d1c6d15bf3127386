"""The one path every run takes, as named stages (as torchtune's recipes):

    check -> load_pretrained -> setup_data -> setup_model -> setup_finetune -> setup_trainer -> fit -> evaluate
    -> report

Each stage fills part of one `RunResults`, written once at the end (or when the run fails or is interrupted).
Nothing touches the run folder before `check` has passed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from lightning_llm.checkpoints import (
    Pretrained,
    load_pretrained,
    load_weights,
    read_training_checkpoint,
)
from lightning_llm.conf import where_things_go
from lightning_llm.data.examples import resolve_max_tokens
from lightning_llm.data.interface import LLMDataModule
from lightning_llm.data.mixture import realized_mixture
from lightning_llm.errors import ConfigError, EvalIncomplete, RunInterrupted, TrainingDiverged, user_error_in
from lightning_llm.eval import build_suite, evaluate
from lightning_llm.eval.forgetting import ForgettingProbe
from lightning_llm.finetune import FinetuneMethod, count_parameters
from lightning_llm.log import get_logger, process_rank, quiet_known_noise
from lightning_llm.models import LanguageModel
from lightning_llm.objectives import Objective
from lightning_llm.privacy import DifferentialPrivacy
from lightning_llm.recipe import metrics
from lightning_llm.recipe.build import instantiate_all, instantiate_model
from lightning_llm.recipe.checks import adopt_architecture, check_config
from lightning_llm.recipe.context import (
    Terminated,
    hydra_info,
    is_multirun,
    known_top_level_keys,
    resolved_config,
    set_num_threads,
    sigterm_raises,
    sigterm_to_lightning,
)
from lightning_llm.recipe.ddp import DDP_JOB_ENV, ddp_job_spec
from lightning_llm.recipe.metrics import eval_scalars, replicas_in_sync, scalars, sharded
from lightning_llm.recipe.outputs import RunFolder, RunRecord, error_line, prepare, previous_results, remove_if_empty
from lightning_llm.recipe.provenance import provenance
from lightning_llm.recipe.results import RunResults, earlier_parts, write_json_atomic
from lightning_llm.recipe.schema import validate_config
from lightning_llm.recipe.start_point import numbers_before_fit
from lightning_llm.recipe.tokenizer import choose_tokenizer, tokenizer_record
from lightning_llm.report import log_to_wandb, report_on_exit
from lightning_llm.training import watchdog
from lightning_llm.training.callbacks import SampleGeneration
from lightning_llm.training.compute import ComputeMonitor
from lightning_llm.training.post_training import load_teacher, prepare_objective
from lightning_llm.training.stability import LossSpikeMonitor

log = get_logger(__name__)


class TrainingRecipe:
    """One run of a composed config. `run()` calls the stages in order; tests and notebooks may call them too."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.output_dir = Path(cfg.paths.output_dir)
        self.results = RunResults(**hydra_info(), seed=cfg.seed, output_dir=str(self.output_dir))
        self.started = time.perf_counter()
        self.ckpt_path: str | None = None
        self.resume_step: int | None = None
        self.previous: dict[str, Any] = {}  # a resumed run's results.json as its last part wrote it
        self.folder: RunFolder | None = None  # rank 0: the run folder's lock, config part and log file
        self.pretrained: Pretrained | None = None
        self.teacher: Pretrained | None = None  # a distillation objective's teacher (objective.teacher)
        self.objective: Objective | None = None
        self.datamodule: LLMDataModule | None = None
        self.model: LanguageModel | None = None
        self.finetune: FinetuneMethod | None = None
        self.module: pl.LightningModule | None = None
        self.trainer: pl.Trainer | None = None
        self.probe: ForgettingProbe | None = None
        self.privacy: DifferentialPrivacy | None = None

    # -- stages ------------------------------------------------------------------------------------------
    def check(self) -> None:
        """Every key and type, the pretrained model's architecture (its config only), the config's
        compatibility rules and the eval suite; nothing is loaded or written."""
        cfg = self.cfg
        validate_config(cfg, known_top_level_keys())
        source = cfg.model.get("pretrained")
        if source:
            adopt_architecture(cfg, source, self.results.overrides)
        check_config(cfg)
        build_suite(cfg.get("eval"))
        if cfg.get("ckpt_path"):
            self.ckpt_path, key = str(cfg.ckpt_path), "ckpt_path"
        elif cfg.get("resume") == "auto":
            self.ckpt_path, key = self.last_checkpoint(), "resume=auto"
        if self.ckpt_path:  # a resume must be possible before anything is touched: read it now (weights_only)
            self.resume_step = int(read_training_checkpoint(self.ckpt_path, key)["global_step"])
            max_steps = int(cfg.trainer.get("max_steps", -1))
            if cfg.train and 0 < max_steps <= self.resume_step:
                raise ConfigError(
                    f"{key}: the checkpoint {self.ckpt_path} is at step {self.resume_step}, and "
                    f"trainer.max_steps={max_steps} leaves nothing to train: raise trainer.max_steps to train on"
                )
            self.previous = previous_results(self.output_dir)

    def last_checkpoint(self) -> str | None:
        """The checkpoint `resume=auto` continues from: the run folder's last.ckpt, if there is one."""
        path = self.output_dir / "checkpoints" / "last.ckpt"
        return str(path) if path.is_file() else None

    def load_pretrained(self) -> None:
        """The pretrained weights and tokenizer (`model.pretrained`), after the checks."""
        source = self.cfg.model.get("pretrained")
        if source:
            self.pretrained = load_pretrained(source)
        self.teacher = load_teacher(self.cfg.objective)

    def setup_data(self) -> None:
        """Seed, threads, the objective, the tokenizer (the pretrained one, a Hugging Face one, or trained on the
        data) and the datamodule, prepared (the model's vocabulary size comes from the tokenizer)."""
        cfg = self.cfg
        if self.folder is not None:  # a resumed part's provenance goes beside its config, the first part's stays
            record = provenance(self.output_dir, cfg.seed, self.results.overrides)
            where = self.folder.config_dir if self.ckpt_path else self.output_dir
            write_json_atomic(where / "provenance.json", record)
        self.results.threads = set_num_threads(cfg.get("num_threads"))
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        self.objective = instantiate(cfg.objective)
        tokenizer = choose_tokenizer(cfg, self.pretrained or self.teacher)  # a student from scratch: the teacher's
        batching = resolve_max_tokens(cfg.data, self.pretrained is not None)  # data.max_tokens=auto
        self.datamodule = instantiate(cfg.data, objective=self.objective, tokenizer=tokenizer, **batching)
        self.datamodule.prepare_data()  # writes the caches (the tokenizer, tokens)
        self.datamodule.setup("fit")  # reads them: the tokenizer, rows and statistics
        self.results.data = self.datamodule.stats
        self.results.tokenizer = tokenizer_record(cfg, self.pretrained or self.teacher, self.datamodule)
        if not self.results.tokenizer["kind"].startswith("trained"):
            self.results.choices["tokenizer"] = self.results.tokenizer["kind"]

    def setup_model(self) -> None:
        """The model group's model, and the objective configured once with it and the data's tokenizer, packing and
        labels (a task head attaches now); with pretrained weights it is built on the meta device and takes the
        checkpoint's tensors."""
        pretrained = self.pretrained
        with torch.device("meta") if pretrained is not None else contextlib.nullcontext():  # no random init
            model = instantiate_model(self.cfg.model, self.datamodule.tokenizer.vocab_size)
            self.objective.configure(self.datamodule.objective_context(model))
        if pretrained is not None:  # the model takes the checkpoint's tensors: the weights exist once
            load_weights(model, pretrained.state_dict, pretrained.source, assign=True)
            pretrained.state_dict = {}  # so a method that replaces layers (QLoRA) frees the originals as it goes
        self.model = model
        self.results.model = {
            "config": model.config.to_dict(),
            "family": model.family,
            "pretrained": self.pretrained.source if self.pretrained else None,
        }
        if self.pretrained is not None:  # the group option only lent its code: name the model that was loaded
            choice = self.results.choices.get("model")
            self.results.choices["model"] = f"{choice}: {model.family} from {self.pretrained.source}"

    def setup_finetune(self) -> None:
        """The fine-tuning method transforms the model; the data's blocks fit what context is left."""
        cfg = self.cfg
        self.finetune = instantiate(cfg.finetune)
        self.finetune.apply(self.model)
        self.datamodule.fit_context(self.model)
        self.results.parameters = count_parameters(self.model)
        forgetting = cfg.get("forgetting")
        if self.pretrained is not None and self.finetune.adapts_pretrained and forgetting and forgetting.enabled:
            self.probe = ForgettingProbe.for_run(
                self.model, self.datamodule.tokenizer, forgetting, self.datamodule.block_size,
                self.datamodule.rows_per_batch(forgetting.block_size or self.datamodule.block_size),
                cfg.paths.cache_dir, cfg.trainer.get("max_steps"),
            )  # fmt: skip

    def base_checkpoint(self) -> str | None:
        """Where a parameter-efficient checkpoint's base lives (a local path made absolute, or a hub id)."""
        if self.pretrained is None or not self.finetune.saves_trainable_only:
            return None
        source = Path(self.pretrained.source).expanduser()
        return str(source.resolve()) if source.exists() else self.pretrained.source

    def setup_privacy(self) -> None:
        """DP-SGD (privacy=dp): the noise planned for the training rows and steps (an unreachable target epsilon
        fails here, before training), the model hooked for per-sample gradients and checked on two rows, and
        Poisson-sampled batches from the datamodule."""
        if "_target_" not in (self.cfg.get("privacy") or {}):
            return
        self.privacy = instantiate(self.cfg.privacy)
        self.objective.per_row_loss = True  # each row's gradient its own: DP-SGD clips and bounds it
        datamodule = self.datamodule
        trainer = self.cfg.trainer
        replicas = int(trainer.get("devices", 1)) * int(trainer.get("num_nodes", 1))
        self.privacy.plan(datamodule.train_rows, datamodule.batch_size, int(trainer.max_steps), replicas)
        probe = datamodule.first_train_rows(2)
        self.privacy.attach(self.model, lambda model: self.objective.forward(model, probe).loss, len(probe["labels"]))
        datamodule.wrap_train_loader = self.privacy.wrap_loader

    def setup_trainer(self) -> None:
        """The LightningModule and the Trainer (strategy, precision, callbacks, loggers)."""
        cfg = self.cfg
        # objects go to the module's constructor directly: Hydra would try to merge them into the config
        make_module = instantiate(cfg.module, _partial_=True)
        self.module = make_module(
            model=self.model,
            objective=self.objective,
            finetune=self.finetune,
            base_checkpoint=self.base_checkpoint(),
            privacy=self.privacy,
        )
        callbacks, loggers = instantiate_all(cfg.get("callbacks")), instantiate_all(cfg.get("logger"))
        terminal = sys.stdout.isatty()
        if not terminal:  # a live bar writes control codes into log files: the text progress lines replace it
            callbacks = [cb for cb in callbacks if not isinstance(cb, ProgressBar)]
        if not loggers:  # logger=none: Lightning's learning-rate monitor refuses to run with nothing to log to
            callbacks = [cb for cb in callbacks if not isinstance(cb, LearningRateMonitor)]
        imported = self.pretrained is not None
        val_batches = metrics.resolve_val_batches(cfg.trainer, imported)
        self.trainer = instantiate(
            cfg.trainer,
            callbacks=callbacks,
            logger=loggers,
            limit_val_batches=val_batches,
            **({} if terminal else {"enable_progress_bar": False}),
            # DP-SGD deals the rows out to processes itself (Poisson batches per rank)
            **({"use_distributed_sampler": False} if self.privacy is not None else {}),
        )
        if is_multirun():  # DDP children of this job must run this job only (see recipe.ddp)
            os.environ[DDP_JOB_ENV] = ddp_job_spec(self.results.overrides, str(self.output_dir))
        for logger in self.trainer.loggers:
            if self.resume_step is not None and hasattr(logger, "resume_from"):
                logger.resume_from(self.resume_step)  # keep the curve before the checkpoint, drop what follows
            logger.log_hyperparams(resolved_config(cfg))

    def setup_objective(self) -> None:
        """What the objective runs beside the model: a distillation teacher, a preference objective's reference (or
        its log-probabilities, computed now on the training device)."""
        device = self.trainer.strategy.root_device
        done = prepare_objective(self.objective, self.model, self.finetune, self.datamodule, device, self.teacher)
        self.results.model.update(done)

    def fit(self) -> None:
        """Validate the untrained model (the curve's first point), train, and time it."""
        cfg, trainer, module = self.cfg, self.trainer, self.module
        if not cfg.train:
            return
        if not self.ckpt_path:  # the starting point: measured, or an earlier run's measurement of it
            source = self.pretrained.source if self.pretrained is not None else None
            val_start, before, cached = numbers_before_fit(cfg, trainer, module, self.datamodule, self.probe, source)
            self.results.val_start, self.results.start_point = val_start, cached or None
            self.results.forgetting = {"before": before} if before is not None else None
        else:  # the run's record continues: its first part measured the untrained model
            self.results.val_start = self.previous.get("val_start")
            self.results.forgetting = self.previous.get("forgetting")
            self.results.resumed = {"from_step": self.resume_step}
            if self.previous:  # resumed in its own folder (not from a checkpoint of another run)
                self.results.resumed["earlier"] = earlier_parts(self.previous)
        fit_started = time.perf_counter()
        with sigterm_to_lightning():
            trainer.fit(module, datamodule=self.datamodule, ckpt_path=self.ckpt_path)
        self.collect_monitors()
        fit_seconds = time.perf_counter() - fit_started
        self.results.fit_seconds = round(fit_seconds, 2)
        started = os.environ.get("LIGHTNING_LLM_STARTED")
        if started and module.first_step_at is not None:
            self.results.startup_seconds = round(module.first_step_at - float(started), 2)
        self.results.tokens_per_s = round((module.tokens_seen - module.tokens_at_fit_start) / fit_seconds, 1)
        if module.source_tokens is not None:
            self.results.data["mixture"] = realized_mixture(self.datamodule.sources, module.source_tokens)
        self.ckpt_path = None  # validate the weights fit ended with

    def collect_monitors(self) -> None:
        """What the compute and loss-spike callbacks measured, into the results (also for a failed run)."""
        for callback in self.trainer.callbacks if self.trainer is not None else []:
            if isinstance(callback, ComputeMonitor) and callback.compute:
                self.results.compute = callback.compute
            elif isinstance(callback, LossSpikeMonitor):
                self.results.stability = callback.summary()

    def evaluate(self) -> None:
        """Final validation (every rank; skipped when fit's last validation already saw these weights), then
        forgetting and the eval suite: on rank 0 for a replicated model, on every rank for a sharded one (its
        forward needs them all; rank 0 reports)."""
        cfg, trainer, model = self.cfg, self.trainer, self.model
        self.results.metrics = scalars(trainer.callback_metrics)
        if trainer.world_size > 1 and cfg.train:  # before validate(): its DDP wrap copies rank 0's weights to all
            self.results.replicas_in_sync = replicas_in_sync(trainer, model)
        if not (cfg.train and self.module.validated_at_step == trainer.global_step):  # else fit just measured it
            final = trainer.validate(self.module, datamodule=self.datamodule, ckpt_path=self.ckpt_path, verbose=False)
            self.results.metrics.update(scalars(final[0]) if final else {})  # none with limit_val_batches=0
        if not (trainer.is_global_zero or sharded(model)):
            return
        if self.probe is not None:
            after = self.probe.measure(model)
            self.results.forgetting = {**(self.results.forgetting or {}), "after": after}
            for logger in trainer.loggers:
                logger.log_metrics({f"forgetting/{k}": v for k, v in after.items()}, step=trainer.global_step)
        _, eval_tasks = build_suite(cfg.get("eval"))
        if eval_tasks:
            self.results.eval = evaluate(
                cfg.eval, model, self.datamodule.tokenizer, self.output_dir, cfg.seed, self.datamodule.train_texts
            )
            for logger in trainer.loggers:
                logger.log_metrics(eval_scalars(self.results.eval), step=trainer.global_step)

    def incomplete_eval(self) -> list[str]:
        """The requested eval tasks that could not run, when the suite says that fails the run."""
        evaluation = self.results.eval
        if not evaluation or evaluation.get("on_error") != "fail":
            return []
        return [name for name, result in evaluation["tasks"].items() if result["status"] == "error"]

    def report(self) -> None:
        """Fill the totals and write results.json (rank 0)."""
        trainer, results = self.trainer, self.results
        results.status = "partial" if self.incomplete_eval() else "completed"
        results.steps = trainer.global_step
        results.tokens = self.module.tokens_seen
        results.wall_seconds = round(time.perf_counter() - self.started, 2)
        results.samples = [s for cb in trainer.callbacks if isinstance(cb, SampleGeneration) for s in cb.samples]
        best = [cb.best_model_path for cb in trainer.checkpoint_callbacks if cb.monitor and cb.best_model_path]
        found = {"best": best[0] if best else None, "last": self.last_checkpoint()}
        results.checkpoints = {k: v for k, v in found.items() if v} or None
        results.privacy = self.privacy.summary() if self.privacy is not None else None
        if trainer.is_global_zero:
            results.write(self.output_dir)
            log_to_wandb(results.to_dict())
            print(f"outputs: {self.output_dir} (results.json, report.html, checkpoints/, csv/metrics.csv)")

    def stages(self) -> list[Callable[[], None]]:
        """What `run` calls after the checks, in order."""
        return [
            self.load_pretrained,
            self.setup_data,
            self.setup_model,
            self.setup_finetune,
            self.setup_privacy,
            self.setup_trainer,
            self.setup_objective,
            self.fit,
            self.evaluate,
            self.report,
        ]

    def run(self) -> RunResults:
        """The stages in order. A failure before the checks pass leaves no trace (an empty folder Hydra made is
        removed); after them, results.json says how the run ended (completed, diverged, interrupted, failed).
        The stall watchdog (callbacks.watchdog) watches from fit to the end of the run."""
        try:
            return self._run_stages()
        finally:
            watchdog.disarm()

    def _run_stages(self) -> RunResults:
        quiet_known_noise()
        if not sys.stderr.isatty():  # progress bars in a log file are control-code noise
            from datasets.utils import disable_progress_bars

            disable_progress_bars()
        try:
            self.check()
        except BaseException:
            remove_if_empty(self.output_dir)
            raise
        # rank 0 owns the folder; the other ranks of a DDP run (re-launched scripts) only train
        self.folder = prepare(self.cfg, self.output_dir, self.ckpt_path is not None) if process_rank() == 0 else None
        if self.folder is not None:
            log.info(where_things_go(self.output_dir, self.cfg.paths.cache_dir))
        resuming_here = self.folder is not None and self.ckpt_path and self.cfg.get("resume") == "auto"
        resumed_record = RunRecord.of(self.output_dir) if resuming_here else None
        try:
            with sigterm_raises():
                for stage in self.stages():
                    watchdog.progress()
                    stage()
        except BaseException as err:
            error = self.ended_by(err)
            if error is err:
                raise
            raise error from err
        finally:
            if self.folder is not None:  # rank 0: the run's report, however it ended
                try:
                    report_on_exit(self.output_dir, sys.exc_info()[1])
                    if resumed_record is not None and sys.exc_info()[1] is not None and not self.restored():
                        resumed_record.restore(self.folder.config_dir)
                finally:
                    self.folder.release()
        failed = self.incomplete_eval() if process_rank() == 0 else []  # rank 0 reports (a sharded eval runs on all)
        if failed:
            reasons = "; ".join(f"{n}: {self.results.eval['tasks'][n]['reason']}" for n in failed[:2])
            raise EvalIncomplete(
                f"{len(failed)} of {len(self.results.eval['tasks'])} eval tasks could not run ({reasons}): the "
                "rest are in results.json (status partial); eval.on_error=skip accepts that"
            )
        return self.results

    def restored(self) -> bool:
        """Whether fit restored the checkpoint this run resumes from."""
        return self.trainer is not None and self.trainer.global_step >= (self.resume_step or 0) > 0

    def ended_by(self, err: BaseException) -> BaseException:
        """Record how the run ended in results.json (rank 0) and return the error to raise."""
        trainer = self.trainer
        interrupted = isinstance(err, SIGTERMException | Terminated | KeyboardInterrupt) or (
            isinstance(err, SystemExit) and trainer is not None and trainer.interrupted
        )
        if interrupted:
            sigterm = isinstance(err, SIGTERMException | Terminated)  # SIGTERMException is a SystemExit
            signum = signal.SIGTERM if sigterm else signal.SIGINT
            last = self.last_checkpoint()
            where = f"the last checkpoint is {last}: continue with resume=auto" if last else "no checkpoint was written"
            step = trainer.global_step if trainer is not None else 0
            error: BaseException = RunInterrupted(
                f"stopped by {signal.Signals(signum).name} at step {step}; {where}", signum
            )
            self.results.status = "interrupted"
        else:
            error = err
            self.results.status = "diverged" if isinstance(user_error_in(err), TrainingDiverged) else "failed"
        self.results.error = error_line(error)
        if trainer is not None:
            self.results.steps = trainer.global_step
            self.results.checkpoints = {"last": self.last_checkpoint()} if self.last_checkpoint() else None
        self.results.wall_seconds = round(time.perf_counter() - self.started, 2)
        self.collect_monitors()
        if process_rank() == 0 and (trainer is None or trainer.is_global_zero):
            self.results.write(self.output_dir)
        return error


__all__ = ["TrainingRecipe"]
