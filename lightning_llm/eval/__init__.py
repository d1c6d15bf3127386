"""Evaluation: the `eval` config group (conf/eval/), run after training or on a checkpoint.

`evaluate(cfg.eval, model, tokenizer, family, output_dir, seed, train_texts)` runs a suite's tasks through a
small model interface (lm.py: log-likelihoods, rolling log-likelihoods, generation, one adapter per family)
and returns per-task results plus a summary; `build_suite(cfg.eval)` validates a suite without running it.
"""

from lightning_llm.eval.lm import EvalLM, GenerationSettings, LogLikelihood, NotApplicable, eval_lm
from lightning_llm.eval.suite import build_suite, evaluate

__all__ = ["EvalLM", "GenerationSettings", "LogLikelihood", "NotApplicable", "build_suite", "eval_lm", "evaluate"]
