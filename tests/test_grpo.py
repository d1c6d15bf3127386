"""GRPO (objective=grpo): the loss and advantages equal TRL's, rewards, generation in the loop, refusals, and the
proof that it learns: held-out exact match rises from a tiny SFT model, and does not with the rewards shuffled."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from lightning_llm.data.arithmetic import arithmetic_problems
from lightning_llm.errors import ConfigError
from lightning_llm.objectives.grpo import build_rewards
from lightning_llm.objectives.grpo_loss import group_advantages, grpo_loss
from lightning_llm.objectives.rewards import ExactMatch, FormatReward, LengthPenalty, UnitTests, run_limited
from lightning_llm.recipe import TrainingRecipe, train
from tests.conftest import TINY, compose_config, run_cli, straight_and_resumed_losses


@pytest.fixture(scope="module")
def fixed() -> dict[str, torch.Tensor]:
    """Log-probabilities of 6 completions (2 prompts x 3) of up to 5 tokens, the sampling policy's and the
    reference's, a ragged completion mask and rewards with a tie."""
    g = torch.Generator().manual_seed(0)
    logps = -torch.rand(6, 5, generator=g) * 3
    return {
        "logps": logps,
        "old": logps + 0.3 * torch.randn(6, 5, generator=g),  # far enough that some ratios leave [0.8, 1.2]
        "ref": logps + 0.5 * torch.randn(6, 5, generator=g),
        "mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]] + [[1] * 5] * 2),
        "rewards": torch.tensor([1.0, 0.0, 0.5, 2.0, 2.0, -1.0]),
    }


def trl_advantages(rewards: torch.Tensor, group: int, scale: bool) -> torch.Tensor:
    """GRPOTrainer._generate_and_score_completions (trl 1.16, multi_objective_aggregation=sum_then_normalize,
    scale_rewards group|none), with TRL's own nanstd."""
    nanstd = pytest.importorskip("trl.trainer.utils").nanstd
    mean = torch.nanmean(rewards.view(-1, group), dim=1).repeat_interleave(group)
    std = nanstd(rewards.view(-1, group), dim=1).repeat_interleave(group)
    advantages = rewards - mean
    return advantages / (std + 1e-4) if scale else advantages


def trl_loss(f, advantages, beta, eps_low, eps_high, loss_type, max_completion_length=5):
    """GRPOTrainer._compute_loss (trl 1.16, importance_sampling_level=token, one process, no accumulation: there
    TRL's dapo divides by the batch's completion tokens, which is its bnpo), written out as it reads."""
    per_token_logps, old_per_token_logps, ref_per_token_logps = f["logps"], f["old"], f["ref"]
    mask = f["mask"].float()
    advantages = advantages.unsqueeze(1)
    coef_1 = torch.exp(per_token_logps - old_per_token_logps)
    per_token_kl = torch.exp(ref_per_token_logps - per_token_logps) - (ref_per_token_logps - per_token_logps) - 1
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    per_token_loss = -torch.min(coef_1 * advantages, coef_2 * advantages)
    if beta != 0.0:
        per_token_loss = per_token_loss + beta * per_token_kl
    if loss_type == "grpo":
        loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "dapo":
        loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
    else:
        loss = (per_token_loss * mask).sum() / (per_token_loss.size(0) * max_completion_length)
    is_low = (coef_1 < 1 - eps_low) & (advantages < 0)
    is_high = (coef_1 > 1 + eps_high) & (advantages > 0)
    kl = (per_token_kl * mask).sum() / mask.sum()
    return loss, kl, ((is_low | is_high).float() * mask).sum() / mask.sum()


@pytest.mark.parametrize("scale", [True, False])
def test_advantages_equal_trl(fixed, scale):
    ours = group_advantages(fixed["rewards"], 3, scale)
    assert torch.allclose(ours, trl_advantages(fixed["rewards"], 3, scale), atol=1e-6)
    assert torch.allclose(ours.view(2, 3).sum(1), torch.zeros(2), atol=1e-5)  # each group centred


@pytest.mark.parametrize(
    ("loss_type", "beta", "eps_high"), [("dapo", 0.04, 0.28), ("grpo", 0.04, 0.2), ("dr_grpo", 0.0, 0.2)]
)
def test_loss_equals_trl(fixed, loss_type, beta, eps_high):
    advantages = group_advantages(fixed["rewards"], 3)
    parts = grpo_loss(
        fixed["logps"], fixed["old"], fixed["ref"], advantages, fixed["mask"], beta, 0.2, eps_high, loss_type, 5
    )
    loss, kl, clipped = trl_loss(fixed, advantages, beta, 0.2, eps_high, loss_type)
    assert torch.allclose(parts.loss, loss, atol=1e-6)
    if beta:
        assert torch.allclose(parts.kl, kl, atol=1e-6) and kl > 0
    else:  # no reference without a KL penalty
        assert parts.kl == 0
    assert torch.allclose(parts.clip_ratio, clipped) and 0 < clipped < 1  # the fixture makes some tokens clip


def test_on_policy_gradient_is_the_advantage_weighted_score(fixed):
    """With old = this policy (num_iterations=1) and no KL, d loss / d logp_t = -A_i m_t / sum(m) (dapo): the
    REINFORCE estimator with the group baseline."""
    logps = fixed["logps"].clone().requires_grad_(True)
    advantages = group_advantages(fixed["rewards"], 3)
    grpo_loss(logps, None, None, advantages, fixed["mask"]).loss.backward()
    mask = fixed["mask"].float()
    assert torch.allclose(logps.grad, -advantages[:, None] * mask / mask.sum(), atol=1e-6)


# -- rewards ---------------------------------------------------------------------------------------------------------
def test_exact_match_format_and_length_rewards():
    exact = ExactMatch()
    assert exact(["1+2="] * 4, ["3", " 3 and more 4", "4", "no number"], ["3"] * 4) == [1.0, 1.0, 0.0, 0.0]
    assert ExactMatch(r"answer: (\w+)")(["q"], ["so answer: blue"], ["the answer: blue"]) == [1.0]
    fmt = FormatReward(r"\s*-?\d+\s*")
    assert fmt(["p"] * 3, [" 12", "12 apples", "-4"], [""] * 3) == [1.0, 0.0, 1.0]
    assert LengthPenalty(target_chars=4, scale=4, max_penalty=1)(["p"] * 3, ["abc", "abcdef", "x" * 40], [""] * 3) == [
        0.0,
        -0.5,
        -1.0,
    ]


def test_unit_tests_run_in_a_limited_child_process():
    reward = UnitTests(timeout_s=3, memory_mb=128)
    tests = "assert add(2, 3) == 5\nassert add(-1, 1) == 0"
    completions = [
        "def add(a, b):\n    return a + b",
        "```python\ndef add(a, b):\n    return a - b\n```",  # a fenced block runs alone: it fails the tests
        "def add(a, b):\n    while True:\n        pass",  # stopped by the timeout
        "def add(a, b):\n    x = bytearray(1 << 30)\n    return a + b",  # 1 GiB: over the child's address space
    ]
    assert reward(["# add"] * 4, completions, [tests] * 4) == [1.0, 0.0, 0.0, 0.0]
    ok, why = run_limited("bytearray(1 << 30)", timeout_s=3, memory_mb=128)
    assert not ok and "MemoryError" in why
    ok, why = run_limited("import resource\nprint(resource.getrlimit(resource.RLIMIT_AS))\nraise SystemExit(3)")
    assert not ok and why  # the child's own limit, set in the child (the parent sets none)
    import resource

    assert resource.getrlimit(resource.RLIMIT_AS)[0] == resource.RLIM_INFINITY


def test_rewards_come_from_config_with_weights_and_bad_ones_are_refused():
    rewards = build_rewards(
        [
            {"_target_": "lightning_llm.objectives.rewards.ExactMatch", "weight": 2.0},
            {"_target_": "lightning_llm.objectives.rewards.FormatReward", "pattern": r"\d+", "weight": 0.5},
        ]
    )
    assert [(r.name, r.weight) for r in rewards] == [("exact_match", 2.0), ("format", 0.5)]
    for specs, needle in [
        ([], "objective.rewards is empty"),
        ([{"pattern": "x"}], "has no _target_"),
        ([{"_target_": "lightning_llm.objectives.rewards.Nope"}], "objective.rewards[0]"),
        ([{"_target_": "lightning_llm.objectives.rewards.FormatReward", "pattern": "("}], "not a regular expression"),
    ]:
        with pytest.raises(ConfigError) as err:
            build_rewards(specs)
        assert needle in str(err.value) and "\n" not in str(err.value)


# -- runs ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mixed_format(tmp_path_factory) -> str:
    """The embedded arithmetic problems as a user's jsonl: `prompt`, `answer` and an SFT response that half the
    time says "about 19" instead of "19" (which the anchored exact match of PROOF_REWARD scores 0)."""
    path = tmp_path_factory.mktemp("data") / "arithmetic.jsonl"
    with path.open("w") as f:
        for i, row in enumerate(arithmetic_problems()):
            said = row["answer"] if i % 2 == 0 else f"about {row['answer']}"
            f.write(json.dumps({"prompt": row["question"], "answer": row["answer"], "said": said}) + "\n")
    return str(path)


#: A small GPT trained from scratch on those responses (character tokenizer): the tiny SFT model
SFT = [
    *TINY,
    "objective=sft",
    "data=prompts",
    "data.response_column=said",
    "tokenizer=char",
    "data.batch_size=16",
    "optimizer.lr=3e-3",
    "trainer.max_steps=300",
    "trainer.val_check_interval=300",
    "~callbacks.sample",
]
PROOF_REWARD = "objective.rewards=[{_target_: lightning_llm.objectives.rewards.ExactMatch, pattern: '^(-?[0-9]+)$'}]"


@pytest.fixture(scope="module")
def sft_arithmetic(tmp_path_factory, cache_dir, mixed_format) -> str:
    run = tmp_path_factory.mktemp("sft_arithmetic")
    train(compose_config([*SFT, f"data.path={mixed_format}"], run, cache_dir))
    return str(run)


def grpo_args(checkpoint: str, *more: str) -> list[str]:
    return [
        *TINY,
        f"model.pretrained={checkpoint}",
        "objective=grpo",
        "data=arithmetic",
        "objective.max_new_tokens=4",
        "trainer.log_every_n_steps=1",
        "~callbacks.sample",
        *more,
    ]


def logged(run) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "csv" / "metrics.csv").open()))


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_grpo_generates_scores_and_updates_in_the_loop(sft_arithmetic, cache_dir, tmp_path, finetune):
    args = grpo_args(sft_arithmetic, f"finetune={finetune}", "trainer.max_steps=3", "trainer.val_check_interval=3")
    if finetune == "lora":  # LoRA's dropout would make the updated policy differ from the sampling one
        args.append("finetune.dropout=0")
    rewards = (
        "objective.rewards=[{_target_: lightning_llm.objectives.rewards.ExactMatch}, "
        "{_target_: lightning_llm.objectives.rewards.FormatReward, pattern: '[0-9]+', weight: 0.1}]"
    )
    results = train(compose_config([*args, "objective.num_iterations=2", rewards], tmp_path / finetune, cache_dir))
    assert results["status"] == "completed"
    assert ("switched off" if finetune == "lora" else "frozen copy") in results["model"]["reference"]
    rows = logged(tmp_path / finetune)
    train_rows = [r for r in rows if r.get("train/reward")]
    assert len(train_rows) == 3
    for name in ("reward", "reward_std", "rewards/exact_match/mean", "rewards/format/group_std", "kl"):
        assert all(r[f"train/{name}"] for r in train_rows), name
    for name in ("clip_ratio", "completions/mean_length", "pass@1", "frac_reward_zero_std"):
        assert f"train/{name}" in train_rows[0]
    assert float(train_rows[0]["train/kl"]) == 0  # the first step's policy is the reference
    # num_iterations=2: steps 0 and 2 sample afresh (the ratio to the sampling policy is 1: nothing clips), step 1
    # reuses step 0's completions after an update
    clip = [float(r["train/clip_ratio"]) for r in train_rows]
    assert clip[0] == clip[2] == 0 <= clip[1]
    assert {"val/pass@1", "val/rewards/exact_match/mean", "val/completions/mean_length"} <= set(results["metrics"])
    assert 1 <= float(train_rows[0]["train/completions/mean_length"]) <= 4


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["model=bert"], "objective=grpo does not fit model family 'bert'"),
        (["model=t5"], "objective=grpo does not fit model family 't5'"),
        (["data=pydoc_topics"], "data=pydoc_topics gives packed blocks of text"),
        (["trainer=fsdp"], "objective=grpo generates in the training step"),
        (["objective.max_new_tokens=32"], "objective.max_new_tokens=32 leaves no room"),
        (["objective.group_size=1"], "objective.group_size=1 must be >= 2"),
        (["objective.loss_type=ppo"], "objective.loss_type='ppo' is unknown"),
        (["objective.rewards=[]"], "objective.rewards is empty"),
        (["privacy=dp"], "privacy=dp cannot train objective GRPO"),
    ],
    ids=["bert", "t5", "packed-text", "fsdp", "context", "group", "loss", "no-rewards", "privacy"],
)
def test_what_cannot_work_is_refused_in_one_line(sft_arithmetic, make_cfg, tmp_path, overrides, needle):
    pretrained = [] if overrides[0].startswith("model=") else [f"model.pretrained={sft_arithmetic}"]
    cfg = make_cfg("objective=grpo", "data=arithmetic", *pretrained, *overrides, output_dir=tmp_path / "out")
    with pytest.raises(ConfigError) as err:
        TrainingRecipe(cfg).check()
    assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_a_reward_model_checkpoint_is_a_reward(base_checkpoints, cache_dir, tmp_path):
    from lightning_llm.checkpoints import load_pretrained, model_from_pretrained
    from lightning_llm.objectives.reward import score_texts
    from lightning_llm.training.rewards import RewardModelScore

    args = [*TINY, f"model.pretrained={base_checkpoints['gpt']}", "objective=reward", "data=stdlib_preferences"]
    train(compose_config([*args, "finetune=full", "trainer.max_steps=2", "~callbacks.sample"], tmp_path, cache_dir))
    reward = RewardModelScore(str(tmp_path), weight=0.5)
    pairs = [("def f(x):", "Return x."), ("def g():", "x Return.")]
    scores = reward([p for p, _ in pairs], [c for _, c in pairs], ["", ""])
    pretrained = load_pretrained(str(tmp_path))
    model = model_from_pretrained(pretrained)
    expected = [
        score_texts(model, pretrained.tokenizer, [c], p)[0]
        for p, c in [("def f(x):", "Return x."), ("def g():", "x Return.")]
    ]
    assert scores == pytest.approx(expected, abs=1e-5) and scores[0] != scores[1]
    with pytest.raises(ConfigError, match="does not exist"):
        RewardModelScore(str(tmp_path / "missing"))


def proof_run(checkpoint: str, data: str, out, cache_dir, steps: int, *more: str) -> dict:
    args = grpo_args(
        checkpoint,
        "data=prompts",
        f"data.path={data}",
        PROOF_REWARD,
        "objective.max_new_tokens=8",
        "finetune=full",
        "optimizer.lr=3e-4",
        "data.batch_size=32",
        "scheduler.warmup_steps=5",
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps}",
        "trainer.limit_val_batches=null",  # all 40 held-out problems
        *more,
    )
    return train(compose_config(args, out, cache_dir))


def test_grpo_drops_what_the_reward_refuses_on_held_out_prompts(sft_arithmetic, mixed_format, cache_dir, tmp_path):
    """The fast variant of the proof: 15 steps, and the held-out completions already drop the "about " that the
    exact match scores 0 (they get shorter) while pass@1 does not fall."""
    results = proof_run(sft_arithmetic, mixed_format, tmp_path, cache_dir, 15)
    before, after = results["val_start"], results["metrics"]
    assert after["val/completions/mean_length"] < before["val/completions/mean_length"] - 1, (before, after)
    assert after["val/pass@1"] >= before["val/pass@1"]


@pytest.mark.slow  # about 40 s: two GRPO runs of 40 steps
def test_grpo_raises_held_out_exact_match_and_shuffled_rewards_do_not(
    sft_arithmetic, mixed_format, cache_dir, tmp_path
):
    """From the tiny SFT model (held-out greedy pass@1 0.05: it says "about 19" half the time, and knows some sums),
    40 steps of GRPO on the exact-match reward raise held-out pass@1 clearly (0.175 measured); the same run with
    each reward handed to a random completion of the batch does not (0.0 measured)."""
    real = proof_run(sft_arithmetic, mixed_format, tmp_path / "real", cache_dir, 40)
    shuffled = proof_run(
        sft_arithmetic, mixed_format, tmp_path / "shuffled", cache_dir, 40, "objective.shuffle_rewards=true"
    )
    before = real["val_start"]["val/pass@1"]
    assert shuffled["val_start"]["val/pass@1"] == before
    assert real["metrics"]["val/pass@1"] >= before + 0.1, (before, real["metrics"])
    assert shuffled["metrics"]["val/pass@1"] <= before, (before, shuffled["metrics"])
    rows = logged(tmp_path / "real")
    rewards = [float(r["train/rewards/exact_match/mean"]) for r in rows if r.get("train/reward")]
    assert sum(rewards[-10:]) > sum(rewards[:10])  # the training reward rises too


@pytest.mark.slow  # about 30 s: three runs
def test_grpo_resumes_exactly_with_its_sampler(sft_arithmetic, cache_dir, tmp_path):
    """A run stopped at step 20 and resumed to 30 logs the losses and rewards of a straight 30-step run: the
    sampler's RNG comes back with the checkpoint, so the resumed steps draw the same completions."""
    args = grpo_args(sft_arithmetic, "finetune=full", "scheduler=constant", "trainer.val_check_interval=10")
    straight, resumed = straight_and_resumed_losses(args, tmp_path, cache_dir)
    assert len(straight) == 30 and straight == resumed


@pytest.mark.integration
@pytest.mark.slow  # about 40 s: two processes over gloo
def test_grpo_under_ddp_generates_on_each_rank(sft_arithmetic, cache_dir, tmp_path):
    args = grpo_args(sft_arithmetic, "finetune=lora", "trainer.max_steps=4", "trainer.val_check_interval=4")
    args = [a for a in args if a != "~callbacks.sample"] + ["~callbacks.sample"]
    done = run_cli(
        *args, "trainer=ddp", "trainer.devices=2", f"paths.cache_dir={cache_dir}", "hydra.run.dir=run", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "completed" and results["replicas_in_sync"] is True
    assert "val/pass@1" in results["metrics"]
