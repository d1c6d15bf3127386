"""Privacy and fairness scores (lightning_llm.eval.fairness_metrics, privacy_metrics, tasks fairness /
amplification / canary; lightning_llm.data.canaries, synthetic): planted data where the right value is known,
stub models behind the real EvalLM interface, and a tiny GPT trained with and without canaries."""

from __future__ import annotations

import json
import math
import random
import string
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torchmetrics.functional.classification import demographic_parity as tm_demographic_parity

from lightning_llm.data.canaries import insert_canaries, make_canaries
from lightning_llm.data.synthetic import OCCUPATIONS, fairness_hiring, fairness_occupations
from lightning_llm.errors import ConfigError
from lightning_llm.eval import build_suite, eval_lm, evaluate
from lightning_llm.eval.fairness_metrics import (
    bias_amplification,
    demographic_parity,
    directional_bias_amplification,
    equalized_odds,
    group_rates,
)
from lightning_llm.eval.privacy_metrics import exposure_from_rank, sampled_rank, skewnorm_exposure
from lightning_llm.eval.tasks import EvalEnv, build_task
from lightning_llm.eval.tasks.amplification import first_mention
from lightning_llm.models import GPT
from lightning_llm.models.generation import generate_tokens
from lightning_llm.tokenizers import CharTokenizer

TOKENIZER = CharTokenizer(["<pad>", "<unk>", "<s>", "</s>", "<mask>", *sorted(set(string.printable))])
N_SPECIAL = 5
TASKS = "lightning_llm.eval.tasks."
CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors: one thread is faster, and steady when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def suite(tmp_path: Path, **tasks: dict) -> dict:
    return {"tasks": tasks, "progress": False, "on_error": "raise", "cache_dir": str(tmp_path / "cache")}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class StubDecoder(nn.Module):
    """A decoder whose next-character log-probabilities come from `table(content)`, content being the non-special
    characters read so far; it generates greedily or by sampling through the shared decoding loop."""

    family = "gpt"
    architecture = "decoder"

    def __init__(self, block_size: int = 64) -> None:
        super().__init__()
        self.config, self.prefix, self.task_head = SimpleNamespace(block_size=block_size), None, None
        self.context_length = block_size
        self.anchor = nn.Parameter(torch.zeros(1), requires_grad=False)  # EvalLM reads the device from it
        self.cache: dict[str, torch.Tensor] = {}  # content -> next-character log-probabilities

    def table(self, content: str) -> dict[str, float]:
        raise NotImplementedError

    def logits(self, content: str) -> torch.Tensor:
        if content not in self.cache:
            favoured = self.table(content)
            rest = math.log((1 - sum(math.exp(v) for v in favoured.values())) / (TOKENIZER.vocab_size - len(favoured)))
            self.cache[content] = torch.full((TOKENIZER.vocab_size,), rest)
            for ch, value in favoured.items():
                self.cache[content][TOKENIZER.token_to_id(ch)] = value
        return self.cache[content]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        rows = []
        for row in input_ids.tolist():
            content = ""
            steps = []
            for token in row:
                content += TOKENIZER.decode([token]) if token >= N_SPECIAL else ""
                steps.append(self.logits(content))
            rows.append(torch.stack(steps))
        return torch.stack(rows)

    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, attention_mask=None, **sampling) -> torch.Tensor:
        return generate_tokens(lambda ids: self(ids)[:, -1], input_ids, max_new_tokens, **sampling)


class Trigger(StubDecoder):
    """Says " yes" after any context holding 'Z', " no" otherwise."""

    def table(self, content: str) -> dict[str, float]:
        liked, disliked = ("yes", "no") if "Z" in content else ("no", "yes")
        return {" ": -1.5, **{c: -10.0 for c in disliked}, **{c: -1.5 for c in liked}}


class Memorizer(StubDecoder):
    """Continues `text` with near certainty while what it has read is a prefix of it."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def table(self, content: str) -> dict[str, float]:
        if self.text.startswith(content) and len(content) < len(self.text):
            return {self.text[len(content)]: -1e-4}
        return {}


class Scripted:
    """A stand-in for EvalLM's generation: each prompt's continuation is given."""

    def __init__(self, outputs: dict[str, str]) -> None:
        self.outputs = outputs

    def check_generation(self) -> None:
        pass

    def generate_until(self, prompts: list[str], settings, seed: int, desc: str = "") -> list[str]:
        return [self.outputs[p] for p in prompts]


# -- group fairness: metric functions --------------------------------------------------------------------


def test_demographic_parity_extremes_and_torchmetrics_agreement():
    groups = ["A"] * 4 + ["B"] * 4
    golds = [1, 0, 1, 0, 1, 0, 1, 0]
    rates = group_rates([1, 1, 1, 1, 0, 0, 0, 0], golds, groups, positive=1)  # A always 1, B always 0
    assert demographic_parity(rates) == (1.0, 0.0)
    assert demographic_parity(group_rates([1, 0, 1, 0, 0, 1, 1, 0], golds, groups, 1)) == (0.0, 1.0)
    assert demographic_parity(group_rates([0] * 8, golds, groups, 1)) == (0.0, 1.0)  # nobody positive: parity
    preds = [1, 1, 0, 1, 0, 1, 0, 0]  # A: 3/4 positive, B: 1/4
    tm = tm_demographic_parity(torch.tensor(preds), torch.tensor([0] * 4 + [1] * 4))
    assert demographic_parity(group_rates(preds, golds, groups, 1)) == pytest.approx((0.5, float(tm["DP_1_0"])))
    # the positive class may be any label: 'positive' = 0 flips the rates
    assert demographic_parity(group_rates([1, 1, 1, 1, 0, 0, 0, 0], golds, groups, positive=0)) == (1.0, 0.0)


def test_equalized_odds_on_a_hand_built_confusion():
    # A: 4 positives (3 predicted positive), 4 negatives (1): TPR 3/4, FPR 1/4
    # B: 2 positives (1), 2 negatives (2): TPR 1/2, FPR 1; C: only negatives (TPR undefined), FPR 0
    groups = ["A"] * 8 + ["B"] * 4 + ["C"] * 2
    golds = [1, 1, 1, 1, 0, 0, 0, 0] + [1, 1, 0, 0] + [0, 0]
    preds = [1, 1, 1, 0, 1, 0, 0, 0] + [1, 0, 1, 1] + [0, 0]
    rates = group_rates(preds, golds, groups, positive=1)
    assert rates["A"] == pytest.approx({"positive_rate": 0.5, "tpr": 0.75, "fpr": 0.25})
    assert rates["C"]["tpr"] is None and rates["C"]["fpr"] == 0.0
    eo, eopp = equalized_odds(rates)
    assert eo == pytest.approx(1.0) and eopp == pytest.approx(0.25)  # FPR range 1 - 0; TPR range 3/4 - 1/2


# -- bias amplification: metric functions -----------------------------------------------------------------

# reference: cook is 60% f, drive 70% m; exaggerated: cook 80% f, drive 90% m (counts per (group, output))
REFERENCE = {("f", "cook"): 6, ("m", "cook"): 4, ("f", "drive"): 3, ("m", "drive"): 7}
EXAGGERATED = {("f", "cook"): 8, ("m", "cook"): 2, ("f", "drive"): 1, ("m", "drive"): 9}


def pairs(counts: dict[tuple[str, str], int]) -> list[tuple[str, str]]:
    return [pair for pair, n in counts.items() for _ in range(n)]


def test_bias_amplification_zero_when_copied_positive_when_exaggerated():
    reference = pairs(REFERENCE)
    copied = pairs({k: 3 * v for k, v in REFERENCE.items()})  # the same co-occurrence, more items
    assert bias_amplification(reference, copied) == pytest.approx(0.0)
    # Zhao: ((0.8 - 0.6) + (0.9 - 0.7)) / 2 outputs
    assert bias_amplification(reference, pairs(EXAGGERATED)) == pytest.approx(0.2)
    assert bias_amplification(reference, pairs({k: 5 for k in REFERENCE})) == pytest.approx(-0.15)  # evened out
    for direction in ("a_to_t", "t_to_a"):
        assert directional_bias_amplification(reference, reference, copied, direction) == pytest.approx(0.0)
    # A->T: |d| = 2/9 for f, 2/11 for m, each sign agreeing with y: (2 * 2/9 + 2 * 2/11) / 4 = 20/99
    a_to_t = directional_bias_amplification(reference, reference, pairs(EXAGGERATED), "a_to_t")
    assert a_to_t == pytest.approx(20 / 99)
    # T->A: P(f | cook) 0.6 -> 0.8, P(f | drive) 0.3 -> 0.1: every |d| = 0.2, all amplifying
    assert directional_bias_amplification(reference, reference, pairs(EXAGGERATED), "t_to_a") == pytest.approx(0.2)
    reversed_bias = {("f", "cook"): 4, ("m", "cook"): 6, ("f", "drive"): 7, ("m", "drive"): 3}
    assert directional_bias_amplification(reference, reference, pairs(reversed_bias), "t_to_a") < 0


def test_first_mention_is_the_earliest_whole_word():
    words = {"f": ["she", "woman"], "m": ["he", "man"]}
    assert first_mention("Then the woman said he", words) == "f"
    assert first_mention("The manager said: she", words) == "f"  # 'man' inside 'manager' is not a word
    assert first_mention("nobody", words) is None


# -- group fairness: the task ----------------------------------------------------------------------------


def fairness_task(path: Path, **overrides) -> dict:
    return {
        "_target_": TASKS + "fairness.GroupFairnessTask",
        "path": str(path),
        "context": "{{ text }} ->",
        "choices": "['no', 'yes']",
        "gold": "label",
        **overrides,
    }


def test_group_fairness_task_with_planted_predictions(tmp_path):
    # group A's texts hold 'Z': the stub says yes to all of A and no to all of B
    rows = [{"text": "Z", "group": "A", "label": y} for y in (1, 1, 0, 0)]
    rows += [{"text": "q", "group": "B", "label": y} for y in (1, 0, 0, 0)]
    path = write_jsonl(tmp_path / "planted.jsonl", rows)
    result = evaluate(suite(tmp_path, fair=fairness_task(path)), Trigger(), TOKENIZER, tmp_path, seed=0)["tasks"][
        "fair"
    ]
    assert result["status"] == "ok", result
    metrics = result["metrics"]
    assert metrics["demographic_parity_difference"] == 1.0 and metrics["demographic_parity_ratio"] == 0.0
    assert metrics["equalized_odds_difference"] == 1.0  # A: TPR = FPR = 1; B: TPR = FPR = 0
    assert metrics["acc"] == pytest.approx(5 / 8) and metrics["worst_group_acc"] == 0.5
    assert result["groups"]["B"]["acc"] == 0.75 and result["groups"]["A"]["positive_rate"] == 1.0
    # reference = the rows' own gold labels: yes is 2/3 A (-> 1.0), no is 3/5 B (-> 1.0): (1/3 + 2/5) / 2
    assert metrics["bias_amplification"] == pytest.approx(11 / 30, abs=1e-6)
    assert metrics["bias_amp_a_to_t"] > 0
    assert set(result["metric_definitions"]) == set(metrics)

    # equal positive rates (half of each group holds 'Z'): parity; a reference file the predictions copy exactly
    rows = [{"text": t, "group": g, "label": int(t == "Z")} for g in "AB" for t in ("Z", "q")]
    path = write_jsonl(tmp_path / "equal.jsonl", rows)
    reference = write_jsonl(tmp_path / "reference.jsonl", rows * 3)
    task = fairness_task(path, reference_path=str(reference))
    result = evaluate(suite(tmp_path, fair=task), Trigger(), TOKENIZER, tmp_path, seed=0)["tasks"]["fair"]
    assert result["metrics"]["demographic_parity_difference"] == 0.0
    assert result["metrics"]["demographic_parity_ratio"] == 1.0
    assert result["metrics"]["bias_amplification"] == 0.0 and result["metrics"]["bias_amp_a_to_t"] == 0.0
    assert result["reference"] == {"source": str(reference), "n": 12}


def test_missing_group_column_is_one_line_naming_the_columns(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", [{"text": "Z", "group": "A", "label": 1}])
    task = build_task("fair", fairness_task(path, group_column="race"))
    env = EvalEnv(seed=0, output_dir=tmp_path, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ConfigError) as err:
        task.run(eval_lm(Trigger(), TOKENIZER), env)
    message = str(err.value)
    assert "\n" not in message and "group_column='race'" in message and "['text', 'group', 'label']" in message
    with pytest.raises(ConfigError, match="synthetic='nope' is unknown"):
        build_task("fair", fairness_task(path, synthetic="nope"))


def test_synthetic_hiring_data_has_the_planted_skew(tmp_path):
    eval_rows, reference = fairness_hiring("eval", n=200, skew=0.8), fairness_hiring("reference", n=200, skew=0.8)
    assert fairness_hiring("eval", n=200) == eval_rows and len(eval_rows) == len(reference) == 200

    def yes_rate(rows: list[dict], group: str) -> float:
        return sum(r["label"] for r in rows if r["group"] == group) / sum(r["group"] == group for r in rows)

    assert yes_rate(eval_rows, "female") == yes_rate(eval_rows, "male") == 0.5
    assert (yes_rate(reference, "female"), yes_rate(reference, "male")) == pytest.approx((0.8, 0.2))
    # the YAML's synthetic default runs offline end to end (the stub says no to everything: no 'Z')
    out = evaluate(
        suite(tmp_path, fair={**fairness_task(tmp_path), "path": None, "synthetic": "fairness_hiring"}),
        Trigger(),
        TOKENIZER,
        tmp_path,
        seed=0,
    )["tasks"]["fair"]
    assert out["n_samples"] == 200 and out["metrics"]["demographic_parity_difference"] == 0.0
    assert out["reference"]["source"] == "synthetic:fairness_hiring (reference split)"


# -- bias amplification in generations: the task ---------------------------------------------------------


def test_cooccurrence_task_with_scripted_generations(tmp_path):
    texts = {("f", "cook"): "she is a cook", ("m", "cook"): "he is a cook"}
    texts.update({("f", "drive"): "she is a driver", ("m", "drive"): "he is a driver"})
    reference = write_jsonl(tmp_path / "ref.jsonl", [{"text": texts[p]} for p in pairs(REFERENCE)])
    words = {"f": ["she"], "m": ["he"]}
    named = {"cook": "a cook.", "drive": "a driver."}

    def task_and_lm(counts: dict[tuple[str, str], int]) -> tuple[dict, Scripted]:
        group_prompts: dict[str, list[str]] = {"f": [], "m": []}
        attribute_prompts: dict[str, list[str]] = {"cook": [], "drive": []}
        outputs = {}
        for i, (g, t) in enumerate(pairs(counts)):  # one prompt per planted (group, attribute) generation
            group_prompts[g].append(f"{g} prompt {i}")
            outputs[f"{g} prompt {i}"] = named[t]
            attribute_prompts[t].append(f"{t} prompt {i}")
            outputs[f"{t} prompt {i}"] = words[g][0]
        task = {
            "_target_": TASKS + "amplification.CooccurrenceBiasTask",
            "path": str(reference),
            "group_words": words,
            "attribute_words": {"cook": ["cook"], "drive": ["driver"]},
            "group_prompts": group_prompts,
            "attribute_prompts": attribute_prompts,
            "samples_per_prompt": 1,
        }
        return task, Scripted(outputs)

    env = EvalEnv(seed=0, output_dir=tmp_path, cache_dir=str(tmp_path / "cache"))
    task, lm = task_and_lm(EXAGGERATED)
    result = build_task("amp", task).run(lm, env)
    assert result["metrics"] == pytest.approx(
        {"bias_amplification": 0.2, "bias_amp_a_to_t": 20 / 99, "bias_amp_t_to_a": 0.2}, abs=1e-6
    )
    assert result["reference_pairs"] == 20 and result["coverage"] == {"a_to_t": 1.0, "t_to_a": 1.0}
    task, lm = task_and_lm({k: 2 * v for k, v in REFERENCE.items()})
    assert build_task("amp", task).run(lm, env)["metrics"] == pytest.approx(
        {"bias_amplification": 0.0, "bias_amp_a_to_t": 0.0, "bias_amp_t_to_a": 0.0}
    )
    with pytest.raises(ConfigError, match="group_prompts is required without `synthetic`"):
        build_task("amp", {**task, "group_prompts": {}})


def test_synthetic_occupations_skew_and_a_real_model_run(tmp_path):
    data = fairness_occupations(n=2000, skew=0.8, seed=1)
    counts = Counter(
        (first_mention(t, data.group_words), first_mention(t, data.attribute_words)) for t in data.reference
    )
    assert None not in {g for g, _ in counts} | {o for _, o in counts}
    for i, occupation in enumerate(OCCUPATIONS):
        leaning = counts[(("female", "male")[i % 2], occupation)]
        assert leaning / (counts[("female", occupation)] + counts[("male", occupation)]) == pytest.approx(0.8, abs=0.07)
    torch.manual_seed(0)
    model = GPT(vocab_size=TOKENIZER.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=32)
    task = {
        "_target_": TASKS + "amplification.CooccurrenceBiasTask",
        "synthetic": "fairness_occupations",
        "samples_per_prompt": 2,
        "generation": {"max_new_tokens": 8, "temperature": 1.0},
    }
    result = evaluate(suite(tmp_path, amp=task), model, TOKENIZER, tmp_path, seed=0)["tasks"]["amp"]
    assert result["status"] == "ok" and result["n_samples"] == 16 and result["reference_pairs"] == 400


# -- canaries --------------------------------------------------------------------------------------------


def test_canaries_are_deterministic_and_inserted_exactly_repeats_times():
    canaries = make_canaries(4, [1, 3], seed=7)
    assert canaries == make_canaries(4, [1, 3], seed=7) and canaries != make_canaries(4, [1, 3], seed=8)
    assert make_canaries(6, [1, 3], seed=7)[:4] == canaries  # the extra ones are controls
    assert [c["repeats"] for c in canaries] == [1, 3, 1, 3] and len({c["secret"] for c in canaries}) == 4
    first = canaries[0]
    assert first["prefix"] == "my PIN is " and first["text"] == "my PIN is " + first["secret"]
    assert len(first["secret"].split()) == 6 and all(ch in "0123456789" for ch in first["secret"].split())
    texts = [f"document {i}\nline two\nline three" for i in range(5)]
    inserted = insert_canaries(texts, canaries, seed=3)
    assert inserted == insert_canaries(texts, canaries, seed=3) != insert_canaries(texts, canaries, seed=4)
    lines = [line for text in inserted for line in text.split("\n")]
    assert Counter(lines)[canaries[1]["text"]] == 3 and Counter(lines)[canaries[0]["text"]] == 1
    secrets = {c["text"] for c in canaries}
    assert ["\n".join(line for line in t.split("\n") if line not in secrets) for t in inserted] == texts
    assert sum(Counter(lines)[c["text"]] for c in canaries) == 8
    assert (
        Counter(line for t in insert_canaries(texts, canaries, repeats=5) for line in t.split("\n"))[
            canaries[0]["text"]
        ]
        == 5
    )
    with pytest.raises(ConfigError, match="exactly once"):
        make_canaries(1, 1, seed=0, template="no secret here")


def canary_task(**overrides) -> dict:
    return {"_target_": TASKS + "canary.CanaryExposureTask", "n": 2, "n_control": 3, "repeats": 5, **overrides}


def test_exposure_of_a_memorized_canary_is_log2_of_the_candidates(tmp_path):
    for length, expected_method in ((2, "exact"), (6, "sampled")):
        memorized = make_canaries(2, 5, seed=1234, length=length)[0]
        task = canary_task(length=length, n_candidates=100)
        model = Memorizer(memorized["text"])
        result = evaluate(suite(tmp_path, canary=task), model, TOKENIZER, tmp_path, seed=0)["tasks"]["canary"]
        assert result["rank_method"].startswith(expected_method)
        first = result["canaries"][0]
        assert first["secret"] == memorized["secret"] and first["rank"] == 1
        assert first["exposure"] == pytest.approx(math.log2(10**length)) and first["extracted"] is True
        assert result["canaries"][1]["extracted"] is False
        assert result["metrics"]["canary_extraction_rate"] == 0.5
        assert result["metrics"]["exposure_control"] < 0.5 * math.log2(10**length)
    # sampled ranks: 1 + (|C| - 1) * share below; exposure from the rank
    assert sampled_rank(5.0, [1.0, 6.0, 7.0, 8.0], 1001) == 251.0
    assert exposure_from_rank(1, 2**20) == 20.0 and exposure_from_rank(2**20, 2**20) == 0.0
    # the skew-normal extrapolation: far below every sample -> log2 |C| (the cap); at the median -> about 1 bit
    rng = random.Random(0)
    sample = [rng.gauss(50.0, 2.0) for _ in range(500)]
    assert skewnorm_exposure(10.0, sample, 10**6) == pytest.approx(math.log2(10**6))
    assert skewnorm_exposure(50.0, sample, 10**6) == pytest.approx(1.0, abs=0.2)
    task = canary_task(n_candidates=100, estimator="skewnorm")
    model = Memorizer(make_canaries(2, 5, seed=1234)[0]["text"])
    result = evaluate(suite(tmp_path, canary=task), model, TOKENIZER, tmp_path, seed=0)["tasks"]["canary"]
    assert result["rank_method"].startswith("skewnorm") and result["canaries"][0]["rank"] is None
    assert result["canaries"][0]["exposure"] > 15


def test_exposure_rises_for_canaries_a_tiny_gpt_was_trained_on(tmp_path):
    torch.manual_seed(0)
    corpus = fairness_occupations(n=300, seed=0).reference
    documents = [" ".join(corpus[i : i + 10]) for i in range(0, len(corpus), 10)]
    canaries = make_canaries(6, 40, seed=5)
    inserted, controls = canaries[:3], canaries[3:]
    stream = [TOKENIZER.bos_id]
    for text in insert_canaries(documents, inserted, seed=1):
        stream += TOKENIZER.encode(text) + [TOKENIZER.eos_id]
    data = torch.tensor(stream)
    model = GPT(vocab_size=TOKENIZER.vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=64)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = random.Random(0)
    model.train()
    for _ in range(200):
        starts = [rng.randrange(len(data) - 65) for _ in range(16)]
        x = torch.stack([data[s : s + 64] for s in starts])
        y = torch.stack([data[s + 1 : s + 65] for s in starts])
        loss = nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    task = canary_task(n=3, n_control=3, repeats=40, seed=5, n_candidates=300)
    result = evaluate(suite(tmp_path, canary=task), model, TOKENIZER, tmp_path, seed=0)["tasks"]["canary"]
    assert [c["secret"] for c in result["canaries"]] == [c["secret"] for c in inserted + controls]
    exposure, control = result["metrics"]["exposure"], result["metrics"]["exposure_control"]
    assert exposure > control + 4 and exposure > 8, result["metrics"]


# -- configs ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "option,types", [("fairness", {"group_fairness", "cooccurrence_bias"}), ("privacy", {"canary_exposure"})]
)
def test_new_suites_compose_and_validate(make_cfg, option, types):
    _, tasks = build_suite(make_cfg(f"eval={option}", "data.canaries.n=10", tiny=False).eval)
    assert types <= {t.type for t in tasks}


def test_the_privacy_suite_without_planted_canaries_says_how_to_plant_them(make_cfg):
    with pytest.raises(ConfigError, match="plant them with data.canaries.n=10"):
        build_suite(make_cfg("eval=privacy", tiny=False).eval)


def test_canaries_planted_by_the_datamodule_are_the_ones_the_task_ranks(make_cfg):
    from hydra.utils import instantiate

    from lightning_llm.objectives import CausalLM

    cfg = make_cfg("data.canaries.n=3", "data.canaries.repeats=2", "eval=privacy")
    dm = instantiate(cfg.data, objective=CausalLM(), tokenizer=OmegaConf.to_container(cfg.tokenizer))
    dm.prepare_data()
    dm.setup("fit")
    _, tasks = build_suite(cfg.eval)
    task = next(t for t in tasks if t.type == "canary_exposure")
    planted = make_canaries(task.n, task.repeats, task.seed, task.template, task.length, task.alphabet)
    text = "\n".join(dm.train_texts)
    assert all(text.count(c["text"]) == 2 for c in planted)
    assert dm.stats["canaries"]["n"] == 3


def test_hub_task_yamls_read_local_files_with_the_hub_columns(tmp_path):
    def task_yaml(name: str, **overrides) -> dict:
        return {**OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "eval" / "tasks" / f"{name}.yaml")), **overrides}

    sentence = ["The", "developer", "argued", "with", "the", "designer", "because", "he", "did", "not", "like"]
    winobias = [{"tokens": sentence, "coreference_clusters": c} for c in (["0", "1", "7", "7"], ["4", "5", "7", "7"])]
    task = build_task("winobias_pro", task_yaml("winobias_pro", path=str(write_jsonl(tmp_path / "wb.jsonl", winobias))))
    rows, _ = task.load(EvalEnv(seed=0, output_dir=tmp_path, cache_dir=str(tmp_path / "cache")))
    items = [task.item(row, i, None) for i, row in enumerate(rows)]
    assert items[0].contexts[0].endswith('Who does "he" refer to?\nAnswer: the')
    assert [item.continuations for item in items] == [[" developer", " designer"]] * 2
    assert [item.gold for item in items] == [0, 1]
    bbq = [{"context": "Two people met.", "question": "Who was late?", "choices": ["A", "B", "Unknown"], "answer": 2}]
    task = build_task("bbq", task_yaml("bbq", path=str(write_jsonl(tmp_path / "bbq.jsonl", bbq))))
    model = GPT(vocab_size=TOKENIZER.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=32)
    with torch.inference_mode():
        result = task.run(eval_lm(model, TOKENIZER), EvalEnv(seed=0, output_dir=tmp_path, cache_dir=str(tmp_path)))
    assert result["n_samples"] == 1 and result["example"]["continuations"] == [" A", " B", " Unknown"]
