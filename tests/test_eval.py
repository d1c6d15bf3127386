"""The evaluation suite (lightning_llm.eval, conf/eval/): metrics against known values, prompt formats, few-shot
sampling, scoring against a stub model whose log-probabilities are fixed, and every task type end to end on
tiny local files with tiny random GPT, BERT and T5 models."""

from __future__ import annotations

import csv
import json
import math
import re
import string
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from lightning_llm.errors import ConfigError
from lightning_llm.eval import GenerationSettings, build_suite, eval_lm, evaluate
from lightning_llm.eval.metrics import bleu, generation_metrics
from lightning_llm.eval.tasks import EvalEnv, build_task
from lightning_llm.models import BERT, GPT, T5
from lightning_llm.models.generation import generate_tokens
from lightning_llm.models.scoring import rolling_windows
from lightning_llm.tokenizers import CharTokenizer

CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"
FIXTURES = Path(__file__).parent / "fixtures" / "eval"
# `eval=<suite>` once conf/train.yaml lists the eval group in its defaults, `+eval=<suite>` before
EVAL = "eval" if re.search(r"^\s*- eval:", (CONFIG_DIR / "train.yaml").read_text(), re.MULTILINE) else "+eval"
TASKS = "lightning_llm.eval.tasks."
TOKENIZER = CharTokenizer(["<pad>", "<unk>", "<s>", "</s>", "<mask>", *sorted(set(string.printable))])
TINY = dict(vocab_size=TOKENIZER.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=32)


def task_yaml(name: str, **overrides) -> dict:
    """A task YAML of conf/eval/tasks/ as a dict, with overrides."""
    return {**OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "eval" / "tasks" / f"{name}.yaml")), **overrides}


def env(tmp_path: Path, seed: int = 1234, **kwargs) -> EvalEnv:
    return EvalEnv(seed=seed, output_dir=tmp_path, cache_dir=str(tmp_path / "cache"), **kwargs)


def suite(tmp_path: Path, **tasks: dict) -> dict:
    return {"tasks": tasks, "progress": False, "on_error": "raise", "cache_dir": str(tmp_path / "cache")}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class FixedLogProbs(nn.Module):
    """A stub decoder: every position predicts the same distribution, whatever the context."""

    family = "gpt"
    architecture = "decoder"

    def __init__(self, logprobs: dict[str, float], block_size: int = 64) -> None:
        super().__init__()
        self.config, self.prefix, self.task_head = SimpleNamespace(block_size=block_size), None, None
        self.context_length = block_size
        rest = math.log((1 - sum(math.exp(v) for v in logprobs.values())) / (TOKENIZER.vocab_size - len(logprobs)))
        table = torch.full((TOKENIZER.vocab_size,), rest)
        for ch, value in logprobs.items():
            table[TOKENIZER.token_to_id(ch)] = value
        self.logits = nn.Parameter(table, requires_grad=False)  # already normalised: log_softmax leaves it

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.logits.expand(*input_ids.shape, -1)

    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, attention_mask=None, **sampling) -> torch.Tensor:
        return generate_tokens(lambda ids: self(ids)[:, -1], input_ids, max_new_tokens, **sampling)


# log P(' ') = -1, log P('a') = -2, log P('b') = -0.9: " a" scores -3, " bbbb" -4.6 (per character -3 vs -1.15)
STUB = {" ": -1.0, "a": -2.0, "b": -0.9}


# -- metrics ---------------------------------------------------------------------------------------------


def test_bleu_and_rouge_match_reference_values():
    assert bleu(["the cat sat on the mat"], [["the cat sat on the mat"]]) == pytest.approx(100.0)
    # sacrebleu's README example: 48.53 with both reference streams, 45.07 with the first only
    hyps = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
    refs = [
        ["The dog bit the man.", "The dog had bit the man."],
        ["It was not unexpected.", "No one was surprised."],
        ["The man bit him first.", "The man had bitten the dog."],
    ]
    assert bleu(hyps, refs) == pytest.approx(48.530827, abs=1e-4)
    assert bleu(hyps, [r[:1] for r in refs]) == pytest.approx(45.067506, abs=1e-4)
    # ROUGE on "the cat sat on the mat" vs "the cat is on the mat": 5/6 unigrams, 3/5 bigrams, LCS 5/6
    scores = generation_metrics(["the cat sat on the mat"], [["the cat is on the mat"]], ["rouge1", "rouge2", "rougeL"])
    assert scores == pytest.approx({"rouge1": 5 / 6, "rouge2": 0.6, "rougeL": 5 / 6}, abs=1e-6)


# -- prompts and few-shot sampling -----------------------------------------------------------------------


def test_mmlu_two_shot_prompt_is_exact(tmp_path):
    task = build_task(
        "mmlu",
        task_yaml(
            "mmlu", path=str(FIXTURES / "mmlu_test.jsonl"), fewshot_path=str(FIXTURES / "mmlu_dev.jsonl"), num_fewshot=2
        ),
    )
    e = env(tmp_path)
    rows, pool = task.load(e, need_pool=True)
    item = task.item(rows[1], 1, task.sampler(pool, e))  # astronomy: shots from the two astronomy dev rows
    assert item.contexts[0] == (
        "The following are multiple choice questions (with answers) about astronomy.\n\n"
        "What does the Moon orbit?\nA. the Sun\nB. Mars\nC. the Earth\nD. Venus\nAnswer: C\n\n"
        "What is the largest planet?\nA. Earth\nB. Mars\nC. Jupiter\nD. Venus\nAnswer: C\n\n"
        "Which planet is closest to the Sun?\nA. Venus\nB. Earth\nC. Mercury\nD. Mars\nAnswer:"
    )
    assert item.continuations == [" A", " B", " C", " D"] and item.gold == 2


def test_winogrande_partial_scoring_requests(tmp_path):
    task = build_task("winogrande", task_yaml("winogrande", path=str(FIXTURES / "winogrande.jsonl")))
    rows, _ = task.load(env(tmp_path))
    item = task.item(rows[0], 0, None)
    assert item.contexts == [
        "The trophy does not fit in the suitcase because the trophy",
        "The trophy does not fit in the suitcase because the suitcase",
    ]
    assert item.continuations == [" is too big."] * 2 and item.gold == 0


def test_hub_layouts_resolve_choices_and_gold(tmp_path):
    arc = build_task("arc_easy", task_yaml("arc_easy", path=str(FIXTURES / "arc.jsonl")))
    rows, _ = arc.load(env(tmp_path))
    assert [arc.choices_and_gold(r)[1] for r in rows] == [1, 0, 1, 2]  # answerKey B, A, "2" of 1-4, C
    hellaswag = build_task("hellaswag", task_yaml("hellaswag", path=str(FIXTURES / "hellaswag.jsonl")))
    row = hellaswag.load(env(tmp_path))[0][0]
    assert hellaswag.item(row, 0, None).contexts[0] == "Making tea: A man fills a kettle with water. He"
    assert hellaswag.choices_and_gold(row) == (
        ["puts the kettle on the stove.", "throws the kettle. away.", "paints the wall.", "rides a bike."],
        0,
    )
    boolq = build_task("boolq", task_yaml("boolq", path=str(FIXTURES / "boolq.jsonl")))
    assert [boolq.choices_and_gold(r)[1] for r in boolq.load(env(tmp_path))[0]] == [1, 0, 1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_item_under_test_is_never_among_its_shots(tmp_path, seed):
    # no few-shot file: shots come from the eval rows themselves; with 3 shots out of 4 rows, exactly the others
    task = build_task("arc_easy", task_yaml("arc_easy", path=str(FIXTURES / "arc.jsonl"), num_fewshot=3))
    e = env(tmp_path, seed=seed)
    rows, pool = task.load(e, need_pool=True)
    sampler = task.sampler(pool, e)
    for i, row in enumerate(rows):
        shots = sampler.sample(row, i, 3)
        assert row not in shots and sorted(s["id"] for s in shots) == sorted(r["id"] for r in rows if r is not row)
    with pytest.raises(ConfigError, match="num_fewshot=4 but only 3"):
        sampler.sample(rows[0], 0, 4)


# -- scoring against a stub with known log-probabilities ---------------------------------------------------


def test_acc_and_acc_norm_follow_the_harness_definitions(tmp_path):
    rows = [{"q": "one", "options": ["a", "bbbb"], "answer": a} for a in (1, 1, 0)]
    task = {
        "_target_": TASKS + "MultipleChoiceTask",
        "path": str(write_jsonl(tmp_path / "lengths.jsonl", rows)),
        "context": "{{ q }}",
        "choices": "options",
        "gold": "answer",
        "random_baseline": 0.5,
    }
    model = FixedLogProbs(STUB)
    lm = eval_lm(model, TOKENIZER, 4, False)
    assert [s.logprob for s in lm.loglikelihood([("one", " a"), ("one", " bbbb")])] == pytest.approx([-3.0, -4.6])
    out = evaluate(suite(tmp_path, lengths=task), model, TOKENIZER, tmp_path, seed=0)
    result = out["tasks"]["lengths"]
    # acc takes " a" everywhere (-3 > -4.6); acc_norm divides by 1 and 4 characters and takes " bbbb"
    assert result["metrics"] == pytest.approx({"acc": 1 / 3, "acc_norm": 2 / 3}, abs=1e-6)
    assert result["n_samples"] == 3 and result["num_fewshot"] == 0
    assert result["example"] == {"context": "one", "continuations": [" a", " bbbb"], "gold": 1}
    assert set(result["metric_definitions"]) == {"acc", "acc_norm"}
    assert out["summary"]["scores"]["lengths"] == {
        "metric": "acc",
        "value": 0.333333,
        "baseline": 0.5,
        "normalized": -0.333334,
    }
    assert out["summary"]["average"] == pytest.approx(-1 / 3, abs=1e-5)


def test_bias_and_memorization_with_known_log_probs(tmp_path):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("sent_more,sent_less,bias_type\nbb,aa,x\na,b,y\n")
    model = FixedLogProbs(STUB)
    tasks = {
        "pairs": {"_target_": TASKS + "BiasTask", "path": str(pairs), "group_by": "bias_type"},
        "memo": {
            "_target_": TASKS + "MemorizationTask",
            "n_samples": 10,
            "prefix_tokens": 4,
            "suffix_tokens": 4,
        },
    }
    train_texts = ["b" * 20, "ba" * 10, "short"]  # greedy decoding always says "b"; "short" is too short
    out = evaluate(suite(tmp_path, **tasks), model, TOKENIZER, tmp_path, seed=0, train_texts=train_texts)
    bias = out["tasks"]["pairs"]
    # "bb" (-1.8) beats "aa" (-4); "a" (-2) loses to "b" (-0.9)
    assert bias["metrics"] == pytest.approx({"pct_stereotype": 0.5, "likelihood_diff": (2.2 + 1.1) / 2}, abs=1e-5)
    assert bias["groups"]["x"]["pct_stereotype"] == 1.0 and bias["groups"]["y"]["pct_stereotype"] == 0.0
    memo = out["tasks"]["memo"]
    # "bbbb" -> "bbbb" is extracted; "baba" -> "bbbb" matches 2 of 4 tokens
    assert memo["metrics"] == {"extraction_rate": 0.5, "token_match": 0.75} and memo["n_samples"] == 2
    skipped = evaluate(suite(tmp_path, memo=tasks["memo"]), model, TOKENIZER, tmp_path, seed=0)
    assert skipped["tasks"]["memo"]["status"] == "skipped" and "train_texts" in skipped["tasks"]["memo"]["reason"]


# -- perplexity ------------------------------------------------------------------------------------------


def direct_nll(model: GPT, ids: list[int], context: int) -> float:
    """Token by token: each token predicted from up to `context` preceding tokens."""
    total = 0.0
    for t in range(1, len(ids)):
        logits = model(torch.tensor([ids[max(0, t - context) : t]]))[0, -1]
        total -= torch.log_softmax(logits, -1)[ids[t]].item()
    return total


@torch.no_grad()
def test_perplexity_and_bits_per_byte_match_a_direct_computation(tmp_path):
    torch.manual_seed(0)
    model = GPT(**{**TINY, "block_size": 16}).eval()
    text = "A dictionary maps hashable keys to their values."  # 48 characters: three full windows of 16
    ids = [TOKENIZER.bos_id, *TOKENIZER.encode(text)]
    lm = eval_lm(model, TOKENIZER, 4, False)
    # non-overlapping windows (the default stride): plain chunks of 16 inputs and their next tokens
    chunks = [(ids[s : s + 16], ids[s + 1 : s + 17]) for s in range(0, len(ids) - 1, 16)]
    expected = sum(
        F.cross_entropy(model(torch.tensor([x[: len(y)]]))[0], torch.tensor(y), reduction="sum").item()
        for x, y in chunks
    )
    [score] = lm.loglikelihood_rolling([text])
    assert -score.logprob == pytest.approx(expected, rel=1e-5) and score.n_tokens == len(text)
    # stride 1: every token sees the full context of 16 before it
    [score] = lm.loglikelihood_rolling([text], stride=1)
    assert -score.logprob == pytest.approx(direct_nll(model, ids, 16), rel=1e-5)
    # stride 5: windows cover each token once, with 12+ tokens of context after the first window
    windows = rolling_windows(ids[1:], ids[:1], 17, 5)
    assert [t for _, x in windows for t in x] == ids[1:] and all(len(c) + len(x) <= 17 for c, x in windows)

    task = {"_target_": TASKS + "PerplexityTask", "path": str(FIXTURES / "corpus.jsonl"), "stride": 8}
    result = evaluate(suite(tmp_path, ppl=task), model, TOKENIZER, tmp_path, seed=0)["tasks"]["ppl"]
    texts = [json.loads(line)["text"] for line in (FIXTURES / "corpus.jsonl").read_text().splitlines()]
    texts = [t for t in texts if t.strip()]  # the empty document is left out
    n_bytes = sum(len(t.encode()) for t in texts)
    assert result["n_samples"] == 3 and result["totals"]["bytes"] == n_bytes
    total = -sum(s.logprob for s in lm.loglikelihood_rolling(texts, stride=8))
    assert result["totals"]["nll"] == pytest.approx(total, rel=1e-6)
    assert result["metrics"]["bits_per_byte"] == pytest.approx(total / math.log(2) / n_bytes, rel=1e-5)
    assert result["metrics"]["token_perplexity"] == pytest.approx(
        math.exp(total / result["totals"]["tokens"]), rel=1e-5
    )
    assert result["windows"]["stride"] == 8


# -- end to end ------------------------------------------------------------------------------------------

STANDARD_ON_FIXTURES = [
    f"{EVAL}=standard",
    "eval.limit=3",
    "eval.num_fewshot=1",
    "eval.batch_size=4",
    "eval.progress=false",
    "eval.on_error=raise",
    f"eval.tasks.perplexity.path={FIXTURES}/corpus.jsonl",
    "eval.tasks.perplexity.holdout_fraction=null",
    f"eval.tasks.stdlib_summaries.path={FIXTURES}/summaries.jsonl",
    "eval.tasks.stdlib_summaries.holdout_fraction=null",
    "eval.tasks.stdlib_summaries.generation.max_new_tokens=8",
    f"eval.tasks.arc_easy.path={FIXTURES}/arc.jsonl",
    f"eval.tasks.arc_challenge.path={FIXTURES}/arc.jsonl",
    f"eval.tasks.hellaswag.path={FIXTURES}/hellaswag.jsonl",
    f"eval.tasks.winogrande.path={FIXTURES}/winogrande.jsonl",
    f"eval.tasks.boolq.path={FIXTURES}/boolq.jsonl",
    f"eval.tasks.mmlu.path={FIXTURES}/mmlu_test.jsonl",
    f"eval.tasks.mmlu.fewshot_path={FIXTURES}/mmlu_dev.jsonl",
    f"eval.tasks.sst2.path={FIXTURES}/sst2.csv",
    f"eval.tasks.mrpc.path={FIXTURES}/mrpc.jsonl",
    f"eval.tasks.crows_pairs.path={FIXTURES}/crows_pairs.csv",
    "eval.tasks.memorization.prefix_tokens=8",
    "eval.tasks.memorization.suffix_tokens=8",
    "eval.tasks.human_eval.n_samples=3",
    "eval.tasks.human_eval.generation.max_new_tokens=8",
]
GENERATING = {"stdlib_summaries", "memorization", "human_eval"}
TRAIN_TEXTS = ["The for statement iterates over a sequence.", "A dictionary maps keys to values."]


@pytest.mark.parametrize("family,model_class", [("gpt", GPT), ("bert", BERT), ("t5", T5)])
def test_standard_suite_end_to_end(tmp_path, make_cfg, family, model_class):
    cfg = make_cfg(*STANDARD_ON_FIXTURES, tiny=False)
    torch.manual_seed(0)
    model = model_class(**TINY)
    out = evaluate(cfg.eval, model, TOKENIZER, tmp_path, seed=7, train_texts=TRAIN_TEXTS)
    json.dumps(out)  # JSON-able
    tasks = out["tasks"]
    assert list(tasks) == list(cfg.eval.tasks)
    expected_skipped = GENERATING if family == "bert" else set()
    assert {n for n, r in tasks.items() if r["status"] == "skipped"} == expected_skipped
    assert all(r["status"] == "ok" for n, r in tasks.items() if n not in expected_skipped)
    if family == "bert":
        assert tasks["human_eval"]["reason"] == "the bert model is an encoder (masked LM): it does not generate text"
    else:
        assert all(Path(f).exists() for f in tasks["human_eval"]["files"])
    for name in ("arc_easy", "mmlu", "winogrande", "sst2"):
        assert tasks[name]["n_samples"] == 3 and tasks[name]["num_fewshot"] == 1
        assert 0.0 <= tasks[name]["metrics"]["acc"] <= 1.0
    assert tasks["perplexity"]["n_samples"] == 3 and tasks["perplexity"]["metrics"]["bits_per_byte"] > 0
    summary = out["summary"]
    assert set(summary["averaged_tasks"]) == {
        "arc_easy",
        "arc_challenge",
        "hellaswag",
        "winogrande",
        "boolq",
        "mmlu",
        "sst2",
        "mrpc",
    }
    assert summary["average"] == pytest.approx(
        sum(summary["scores"][n]["normalized"] for n in summary["averaged_tasks"]) / 8, abs=1e-5
    )
    if family == "gpt":  # the same seed gives the same results, sampled generations included
        again = evaluate(cfg.eval, model, TOKENIZER, tmp_path, seed=7, train_texts=TRAIN_TEXTS)

        def strip(result: dict) -> dict:
            return {n: {k: v for k, v in r.items() if k != "seconds"} for n, r in result["tasks"].items()}

        assert strip(again) == strip(out)


def test_human_eval_export_files(tmp_path):
    torch.manual_seed(0)
    model = GPT(**TINY)
    task = {
        "_target_": TASKS + "HumanEvalTask",
        "prompts": ["one", "two", "three", "four"],
        "n_samples": 3,
    }
    task["generation"] = {"max_new_tokens": 6, "temperature": 1.0, "top_k": 20}
    result = evaluate(suite(tmp_path, rate=task), model, TOKENIZER, tmp_path / "out", seed=3)["tasks"]["rate"]
    assert result["files"] == [str(tmp_path / "out" / "rate.csv"), str(tmp_path / "out" / "rate.jsonl")]
    assert result["wandb_table"] is False  # no W&B run
    with open(tmp_path / "out" / "rate.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    records = [json.loads(line) for line in (tmp_path / "out" / "rate.jsonl").read_text().splitlines()]
    assert len(rows) == len(records) == 3
    assert [r["prompt"] for r in rows] == [r["prompt"] for r in records]
    assert {"prompt", "generation", "temperature", "seed", "rating"} <= set(records[0])
    again = evaluate(suite(tmp_path, rate=task), model, TOKENIZER, tmp_path / "again", seed=3)["tasks"]["rate"]
    assert [r["generation"] for r in again["examples"]] == [r["generation"] for r in records]


def test_classification_from_the_task_head(tmp_path):
    torch.manual_seed(0)
    task = task_yaml("sst2", path=str(FIXTURES / "sst2.csv"), use_task_head=True)
    for family, model_class in (("gpt", GPT), ("bert", BERT), ("t5", T5)):
        model = model_class(**TINY)
        if family != "t5":
            model.task_head = nn.Linear(TINY["n_embd"], 2)
        result = evaluate(suite(tmp_path, sst2=task), model, TOKENIZER, tmp_path, seed=0)["tasks"]["sst2"]
        if family == "t5":
            assert result["status"] == "skipped" and "task_head" in result["reason"]
        else:
            assert result["status"] == "ok" and set(result["metrics"]) == {"acc", "f1"} and result["n_samples"] == 4


def test_generation_decoding_settings_and_stop_strings(tmp_path):
    model = FixedLogProbs(STUB)
    lm = eval_lm(model, TOKENIZER, 4, False)
    assert lm.generate_until(["x"], GenerationSettings(max_new_tokens=5), seed=0) == ["bbbbb"]
    assert lm.generate_until(["x"], GenerationSettings(max_new_tokens=5, until=["bbb"]), seed=0) == [""]
    sampled = [
        lm.generate_until(["x", "y"], GenerationSettings(max_new_tokens=12, temperature=1.0), seed=s) for s in (1, 1, 2)
    ]
    assert sampled[0] == sampled[1] != sampled[2]


# -- configs ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONFIG_DIR / "eval").glob("*.yaml")))
def test_every_suite_composes_and_validates(make_cfg, option):
    cfg = make_cfg(f"{EVAL}={option}", "data.canaries.n=10", tiny=False)  # privacy ranks the planted canaries
    settings, tasks = build_suite(cfg.eval)
    assert [t.name for t in tasks] == list(cfg.eval.tasks)
    assert (option == "none") == (not tasks)


def test_config_mistakes_fail_fast_in_one_line(tmp_path):
    with pytest.raises(
        ConfigError, match=r"eval.tasks.arc.num_fewshots is not an option.*did you mean eval.tasks.arc.num_fewshot\?"
    ):
        build_suite({"tasks": {"arc": task_yaml("arc_easy", num_fewshots=1)}})
    with pytest.raises(ConfigError, match=r"eval.tasks.x._target_='mc' is not an evaluation task"):
        build_suite({"tasks": {"x": {"_target_": "mc"}}})
    with pytest.raises(ConfigError, match=r"eval.tasks.x._target_='builtins.open' is not an evaluation task"):
        build_suite({"tasks": {"x": {"_target_": "builtins.open", "file": "victim"}}})
    with pytest.raises(ConfigError, match=r"eval.tasks.arc.path='missing.jsonl' does not exist"):
        build_suite({"tasks": {"arc": task_yaml("arc_easy", path="missing.jsonl")}})
    with pytest.raises(ConfigError, match=r"acc_norm is undefined with partial scoring"):
        build_suite({"tasks": {"w": task_yaml("winogrande", metrics=["acc", "acc_norm"])}})
    with pytest.raises(ConfigError, match=r"eval.limits is not an option.*did you mean eval.limit\?"):
        build_suite({"limits": 3})
    model = GPT(**TINY)
    bad_column = task_yaml("arc_easy", path=str(FIXTURES / "boolq.jsonl"))
    out = evaluate({**suite(tmp_path, arc=bad_column), "on_error": "fail"}, model, TOKENIZER, tmp_path, seed=0)
    assert out["tasks"]["arc"]["status"] == "error" and "lacks column 'choices'" in out["tasks"]["arc"]["reason"]
    assert out["summary"]["status"]["error"] == ["arc"] and out["summary"]["average"] is None


@pytest.mark.parametrize("pool_is_eval_set", [False, True])
def test_harness_sampler_draws_the_shots_lm_eval_draws(pool_is_eval_set):
    """fewshot_sampler=harness: the same shots, item after item, as lm-evaluation-harness's default sampler
    (bench/lm_eval_parity.py then finds the same acc and acc_norm item for item)."""
    from lm_eval.api.samplers import ContextSampler

    from lightning_llm.eval.prompts import HarnessFewShotSampler

    pool = [{"question": f"q{i}", "answer": i % 4} for i in range(25)]
    ours = HarnessFewShotSampler(pool, seed=1234, pool_is_eval_set=pool_is_eval_set)
    theirs = ContextSampler(list(pool), rnd=1234)
    for index, row in enumerate(pool[:12]):
        expected = theirs.sample(5, eval_doc=row) if pool_is_eval_set else theirs.sample(5)
        assert ours.sample(row, index, 5) == expected
        assert not pool_is_eval_set or row not in expected


def test_fewshot_sampler_is_checked(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"q": 1}\n')
    with pytest.raises(ConfigError, match="fewshot_sampler='lm_eval' is unknown"):
        build_task("arc", {"_target_": "lightning_llm.eval.tasks.MultipleChoiceTask", "context": "x",
                           "choices": "['a']", "gold": "0", "path": str(tmp_path / "x.jsonl"),
                           "fewshot_sampler": "lm_eval"})  # fmt: skip


@pytest.mark.slow  # about 20 s (the harness itself); its sampler is checked above in make test
def test_harness_task_on_our_model_scores_as_our_multiple_choice(tmp_path):
    """eval=harness: lm-evaluation-harness runs its own task on our in-memory model; with the harness's few-shot
    draws our MultipleChoiceTask gives the same acc and acc_norm on the same items."""
    import random

    rng = random.Random(0)
    words = ["list", "dict", "tuple", "set", "str", "int", "float", "bytes"]

    def rows(n: int) -> list[dict]:
        out = []
        for _ in range(n):
            choices = rng.sample(words, 4)
            out.append({"question": f"Which type is {rng.choice(choices)}?", "answerKey": rng.choice("ABCD"),
                        "choices": {"text": choices, "label": list("ABCD")}})  # fmt: skip
        return out

    items, pool = write_jsonl(tmp_path / "items.jsonl", rows(16)), write_jsonl(tmp_path / "pool.jsonl", rows(8))
    from lightning_llm.eval.tasks.harness import write_choice_task

    write_choice_task(tmp_path / "harness", "tiny_mc", items, pool)
    torch.manual_seed(0)
    lm = eval_lm(GPT(**TINY).eval(), TOKENIZER, batch_size=8)
    harness = build_task("h", {"_target_": TASKS + "HarnessTask", "tasks": ["tiny_mc"], "num_fewshot": 2,
                               "include_path": str(tmp_path / "harness"), "primary_metric": "acc_norm"})  # fmt: skip
    ours = build_task("o", {"_target_": TASKS + "MultipleChoiceTask", "path": str(items), "fewshot_path": str(pool),
                            "context": "Question: {{ question }}\nAnswer:", "choices": "choices.text",
                            "gold": "choices.label.index(answerKey)", "num_fewshot": 2,
                            "fewshot_sampler": "harness"})  # fmt: skip
    with torch.inference_mode():
        theirs, mine = harness.run(lm, env(tmp_path)), ours.run(lm, env(tmp_path))
    assert theirs["n_samples"] == 16 == mine["n_samples"]
    assert theirs["metrics"]["acc"] == pytest.approx(mine["metrics"]["acc"])
    assert theirs["metrics"]["acc_norm"] == pytest.approx(mine["metrics"]["acc_norm"])
