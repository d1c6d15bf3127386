"""Evaluation: the `eval` config group (conf/eval/), run after training or on a checkpoint.

`evaluate(cfg.eval, model, tokenizer, output_dir, seed, train_texts)` runs a suite's tasks through the model's
family scorer (log-likelihoods, rolling log-likelihoods, generation) and returns per-task results plus a
summary; `build_suite(cfg.eval)` validates a suite without running it.
"""

from lightning_llm.eval.suite import build_suite, eval_lm, evaluate
from lightning_llm.models.scoring import EvalLM, GenerationSettings, LogLikelihood, NotApplicable

__all__ = ["EvalLM", "GenerationSettings", "LogLikelihood", "NotApplicable", "build_suite", "eval_lm", "evaluate"]
