"""A failing evaluation task: a user's mistake (one of our errors) is its one line in the results, a bug (any other
exception) keeps its whole traceback, in the log and in the task's result, and `eval.on_error=raise` re-raises it
with the traceback."""

from __future__ import annotations

import json
import logging
import string
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from lightning_llm.errors import ConfigError
from lightning_llm.eval import evaluate
from lightning_llm.eval.tasks import Task
from lightning_llm.models import GPT
from lightning_llm.tokenizers import CharTokenizer

TOKENIZER = CharTokenizer(["<pad>", "<unk>", "<s>", "</s>", *sorted(set(string.printable))])
MISTAKE = "eval.tasks.mistake.path='missing.jsonl' does not exist: give a local file or a datasets name"


def _score_rows(rows: dict[str, float]) -> float:
    return rows["accuracy"]  # a bug of ours: the key is never there


@dataclass
class FailingTask(Task):
    """A task that fails as `failure` says: with a bug deep in its scoring, or with a user's mistake (wrapped in
    another exception, as a library between us and the task would)."""

    type: ClassVar[str] = "failing"
    failure: str = "bug"

    def run(self, lm, env) -> dict[str, Any]:
        if self.failure == "bug":
            return {"metrics": {"acc": _score_rows({})}}
        try:
            raise ConfigError(MISTAKE + "\nsecond line")
        except ConfigError as err:
            raise RuntimeError("the loader failed") from err


def _suite(tmp_path, on_error: str, **failures: str) -> dict[str, Any]:
    tasks = {name: {"_target_": f"{__name__}.FailingTask", "failure": how} for name, how in failures.items()}
    return {"tasks": tasks, "progress": False, "on_error": on_error, "cache_dir": str(tmp_path / "cache")}


def _model() -> GPT:
    return GPT(vocab_size=TOKENIZER.vocab_size, block_size=16, n_layer=1, n_head=1, n_embd=8)


def test_a_bug_keeps_its_traceback_and_a_mistake_is_one_line(tmp_path, caplog):
    suite = _suite(tmp_path, "fail", broken="bug", mistake="mistake")
    with caplog.at_level(logging.ERROR, logger="lightning_llm"):
        out = evaluate(suite, _model(), TOKENIZER, tmp_path, seed=0)
    bug, mistake = out["tasks"]["broken"], out["tasks"]["mistake"]
    assert bug["status"] == mistake["status"] == "error"
    assert bug["reason"] == "KeyError: 'accuracy'"
    assert "Traceback (most recent call last)" in bug["traceback"] and "in _score_rows" in bug["traceback"]
    assert 'return rows["accuracy"]' in bug["traceback"]
    assert mistake == {"task": "mistake", "type": "failing", "status": "error", "reason": f"ConfigError: {MISTAKE}"}
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "eval task broken failed with a bug" in logged and "in _score_rows" in logged
    assert "mistake" not in logged, "a user's mistake is its line in the results, not a logged traceback"
    assert json.loads(json.dumps(out))["tasks"]["broken"]["traceback"] == bug["traceback"]  # as results.json holds it


def test_on_error_raise_re_raises_a_bug_with_its_traceback(tmp_path):
    with pytest.raises(KeyError, match="accuracy") as raised:
        evaluate(_suite(tmp_path, "raise", broken="bug"), _model(), TOKENIZER, tmp_path, seed=0)
    assert "_score_rows" in [entry.name for entry in raised.traceback]
    with pytest.raises(RuntimeError, match="the loader failed") as raised:
        evaluate(_suite(tmp_path, "raise", mistake="mistake"), _model(), TOKENIZER, tmp_path, seed=0)
    assert isinstance(raised.value.__cause__, ConfigError), "the user's error stays findable (user_error_in)"
