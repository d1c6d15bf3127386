"""Run an evaluation suite (the `eval` config group) on a model and summarise it."""

from __future__ import annotations

import copy
import time
import traceback
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from lightning_llm.errors import ConfigError, unknown_key, user_error_in
from lightning_llm.eval.tasks import EvalEnv, PromptTask, Task, build_task
from lightning_llm.finetune.quantize import SCHEMES, quantize_model
from lightning_llm.log import get_logger
from lightning_llm.models import LanguageModel, family_of
from lightning_llm.models.scoring import EvalLM, NotApplicable
from lightning_llm.tokenizers import Tokenizer

log = get_logger(__name__)

ON_ERROR = ("fail", "skip", "raise")
SUMMARY_DEFINITION = (
    "mean over the tasks with a random_baseline of (score - baseline) / (1 - baseline) on the task's primary "
    "metric (llm-foundry's eval gauntlet, equal weights); 0 = chance, 1 = perfect"
)


@dataclass
class SuiteConfig:
    """The suite-wide keys of conf/eval/*.yaml (see conf/eval/none.yaml)."""

    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    num_fewshot: int | None = None
    limit: int | None = None
    batch_size: int = 16
    seed: int | None = None
    progress: bool = True
    on_error: str = "fail"  # fail: the run ends `partial`, exit 4; skip: accepted; raise: stop at the first
    quantize: str = "none"  # evaluate a copy with the blocks' weights in int8, nf4 or fp4 (bitsandbytes)
    cache_dir: str = ".cache/lightning-llm"


def build_suite(cfg_eval: DictConfig | dict[str, Any] | None) -> tuple[SuiteConfig, list[Task]]:
    """Validate an `eval` config and build its tasks (no data or model work), so mistakes fail fast."""
    raw = OmegaConf.to_container(cfg_eval, resolve=True) if isinstance(cfg_eval, DictConfig) else dict(cfg_eval or {})
    known = {f.name for f in fields(SuiteConfig)}
    for key in raw:
        if key not in known:
            raise unknown_key(f"eval.{key}", known, "the eval suite (conf/eval/none.yaml)")
    suite = SuiteConfig(**raw)
    if suite.quantize not in SCHEMES:
        raise ConfigError(f"eval.quantize={suite.quantize!r} is unknown: use one of {', '.join(SCHEMES)}")
    if suite.on_error not in ON_ERROR:
        raise ConfigError(f"eval.on_error={suite.on_error!r} is unknown: use one of {', '.join(ON_ERROR)}")
    tasks = []
    for name, task_raw in (suite.tasks or {}).items():
        if not isinstance(task_raw, dict):
            raise ConfigError(f"eval.tasks.{name} must be a mapping (a task YAML from conf/eval/tasks/)")
        task = build_task(name, task_raw)
        if suite.num_fewshot is not None and isinstance(task, PromptTask):
            task.num_fewshot = suite.num_fewshot
        if suite.limit is not None:
            task.limit = min(suite.limit, task.limit or suite.limit)
        tasks.append(task)
    return suite, tasks


def run_task(task: Task, lm, env: EvalEnv, strict: bool) -> dict[str, Any]:
    """One task's result: its scores and description, or status skipped/error with a one-line reason. A user's
    mistake (one of our errors) is that line alone; any other exception is a bug, whose traceback is logged and
    kept in the result. `strict` (eval.on_error=raise) re-raises either, traceback and all."""
    started = time.perf_counter()
    header = {"task": task.name, "type": task.type}
    try:
        result = {**header, "status": "ok", **task.run(lm, env), **task.describe()}
    except NotApplicable as reason:
        return {**header, "status": "skipped", "reason": str(reason)}
    except Exception as err:
        if strict:
            raise
        user_error = user_error_in(err)  # a user's mistake, also when wrapped: the one line it was raised with
        shown = user_error or err
        line = str(shown).splitlines()[0] if str(shown) else ""
        failed = {**header, "status": "error", "reason": f"{type(shown).__name__}: {line}"}
        if user_error is None:
            failed["traceback"] = traceback.format_exc()
            log.error("eval task %s failed with a bug, not a setting:\n%s", task.name, failed["traceback"].rstrip())
        return failed
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def summarize(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each task's primary score (and its baseline-normalised value), the gauntlet average and the statuses."""
    scores: dict[str, dict[str, Any]] = {}
    for name, result in results.items():
        metric = result.get("primary_metric")
        if result["status"] != "ok" or metric is None:
            continue
        entry: dict[str, Any] = {"metric": metric, "value": result["metrics"][metric]}
        baseline = result.get("random_baseline")
        if baseline is not None:
            entry.update(baseline=baseline, normalized=round((entry["value"] - baseline) / (1 - baseline), 6))
        scores[name] = entry
    normalized = {name: e["normalized"] for name, e in scores.items() if "normalized" in e}
    return {
        "average": round(sum(normalized.values()) / len(normalized), 6) if normalized else None,
        "averaged_tasks": sorted(normalized),
        "definition": SUMMARY_DEFINITION,
        "scores": scores,
        "status": {s: sorted(n for n, r in results.items() if r["status"] == s) for s in ("ok", "skipped", "error")},
    }


def eval_lm(model: LanguageModel, tokenizer: Tokenizer, batch_size: int = 16, progress: bool = False) -> EvalLM:
    """The evaluation interface for a model: its family's scorer."""
    return family_of(model).scorer(model, tokenizer, batch_size, progress)


def evaluate(
    cfg_eval: DictConfig | dict[str, Any],
    model: LanguageModel,
    tokenizer: Tokenizer,
    output_dir: Path,
    seed: int,
    train_texts: list[str] | None = None,
) -> dict[str, Any]:
    """Run every task of the suite `cfg_eval` on `model`.

    Returns a JSON-able dict: `tasks` (per task: status, metrics, n_samples, num_fewshot, prompt format and an
    example, metric definitions, seconds) and `summary`. Human-evaluation exports are written to `output_dir`.
    `train_texts` (the training documents) feed the memorization task.
    """
    suite, tasks = build_suite(cfg_eval)
    env = EvalEnv(
        seed=seed if suite.seed is None else suite.seed,
        output_dir=Path(output_dir),
        cache_dir=suite.cache_dir,
        train_texts=train_texts,
    )
    if suite.quantize != "none":  # a quantized copy: the trained model stays as it is
        model = quantize_model(copy.deepcopy(model), suite.quantize)
    lm = eval_lm(model, tokenizer, suite.batch_size, suite.progress)
    was_training = model.training
    model.eval()
    results: dict[str, dict[str, Any]] = {}
    try:
        with torch.inference_mode():
            for task in tasks:
                results[task.name] = result = run_task(task, lm, env, suite.on_error == "raise")
                if suite.progress:
                    log.info("eval %s: %s", task.name, _one_line(result))
    finally:
        model.train(was_training)
    return {
        "seed": env.seed,
        "on_error": suite.on_error,
        "quantize": suite.quantize,
        "family": model.family,
        "framing": lm.describe(),
        "tasks": results,
        "summary": summarize(results),
    }


def _one_line(result: dict[str, Any]) -> str:
    if result["status"] != "ok":
        return f"{result['status']} ({result['reason']})"
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in result["metrics"].items())
    return f"{metrics or 'done'} on {result['n_samples']} samples"
