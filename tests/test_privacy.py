"""privacy=dp: DP-SGD through Opacus. Each row's gradient is clipped and noised as DP-SGD defines it, the
epsilon spent is accounted, logged and reported, a resumed run keeps counting, and what cannot run fails in
one line before training."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from lightning_llm.errors import ConfigError
from lightning_llm.models import GPT
from lightning_llm.objectives import IGNORE_INDEX
from lightning_llm.objectives.base import token_cross_entropy
from lightning_llm.privacy import DifferentialPrivacy
from lightning_llm.recipe import TrainingRecipe, train

DP = ["privacy=dp", "trainer.max_steps=40", "trainer.val_check_interval=20", "optimizer.lr=3e-3", "~callbacks.sample"]


def tiny_gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(vocab_size=50, block_size=8, n_layer=1, n_head=2, n_embd=16)


def row_loss(model: GPT, ids: torch.Tensor) -> torch.Tensor:
    logits = model(ids[:, :-1])
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())


def test_the_update_is_the_sum_of_clipped_row_gradients_plus_noise():
    """With (almost) no noise, the DP gradient is sum_i clip(g_i, C) / expected batch size: computed here row by
    row, by hand, against Opacus's per-sample gradients through our hooks."""
    ids = torch.randint(0, 50, (6, 9), generator=torch.Generator().manual_seed(1))
    reference = tiny_gpt()
    clip = 0.05
    expected = [torch.zeros_like(p) for p in reference.parameters()]
    for row in ids:
        reference.zero_grad()
        row_loss(reference, row[None]).backward()
        grads = [p.grad.clone() for p in reference.parameters()]
        norm = torch.sqrt(sum((g**2).sum() for g in grads))
        assert norm > clip  # every row is clipped: the test would fail without clipping
        for total, g in zip(expected, grads, strict=True):
            total += g * (clip / norm)
    model = tiny_gpt()
    privacy = DifferentialPrivacy(target_epsilon=None, noise_multiplier=1e-9, max_grad_norm=clip)
    privacy.plan(rows=60, batch_size=6, steps=10)
    privacy.attach(model, lambda m: row_loss(m, ids[:2]), rows=2)
    optimizer = privacy.wrap_optimizer(torch.optim.SGD(model.parameters(), lr=0.0))
    row_loss(model, ids).backward()
    optimizer.step()
    for p, total in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, total / 6, atol=1e-6, rtol=1e-4)
    assert privacy.summary()["steps"] == 1 and privacy.epsilon() > 0


def test_t5_relative_position_bias_gets_each_row_s_own_gradient():
    """T5's relative position bias tables are shared by every row (and every layer): under DP-SGD they are looked
    up per row, so each row's per-sample gradient of them equals the gradient of that row's loss alone."""
    from lightning_llm.models import T5

    def t5() -> T5:
        torch.manual_seed(0)
        return T5(vocab_size=40, block_size=12, n_layer=2, n_decoder_layer=2, n_head=2, n_embd=16)

    def loss(model: T5, ids: torch.Tensor) -> torch.Tensor:
        logits = model(ids[:, :8], ids[:, 8:-1])
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 9:].flatten())

    ids = torch.randint(0, 40, (3, 12), generator=torch.Generator().manual_seed(2))
    reference, model = t5(), t5()
    privacy = DifferentialPrivacy(target_epsilon=None, noise_multiplier=1.0)
    privacy.plan(rows=30, batch_size=3, steps=5)
    privacy.attach(model, lambda m: loss(m, ids[:2]), rows=2)
    loss(model, ids).backward()
    for table in ("encoder_bias", "decoder_bias"):
        per_row = getattr(model, table).embedding.weight.grad_sample
        assert per_row.shape[0] == 3
        for i in range(3):
            reference.zero_grad()
            loss(reference, ids[i : i + 1]).backward()
            torch.testing.assert_close(
                per_row[i], getattr(reference, table).embedding.weight.grad, atol=1e-6, rtol=1e-4
            )


def test_an_empty_poisson_batch_is_a_noise_only_step():
    model = tiny_gpt()
    privacy = DifferentialPrivacy(target_epsilon=None, noise_multiplier=1.0, max_grad_norm=1.0)
    privacy.plan(rows=60, batch_size=6, steps=10)
    privacy.attach(model, lambda m: row_loss(m, torch.randint(0, 50, (2, 9))), rows=2)
    optimizer = privacy.wrap_optimizer(torch.optim.SGD(model.parameters(), lr=1.0))
    before = [p.detach().clone() for p in model.parameters()]
    optimizer.step()  # no backward: no row was drawn
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    assert privacy.summary()["steps"] == 1


def test_under_ddp_each_process_draws_its_own_rows_and_every_draw_is_a_step(monkeypatch):
    """Two processes' Poisson batches: disjoint rows, the same number of batches on both (an empty draw included,
    so neither waits for the other), independent draws, the rate counting both."""
    from lightning_llm.privacy import dp

    privacy = DifferentialPrivacy(target_epsilon=None, noise_multiplier=1.0)
    privacy.plan(rows=40, batch_size=1, steps=10, replicas=2)
    assert privacy.sample_rate == 2 / 40 and privacy.batch_size == 1
    monkeypatch.setattr(dp, "distributed_world", lambda: 2)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    draws = []
    for rank in range(2):
        monkeypatch.setattr(torch.distributed, "get_rank", lambda rank=rank: rank)
        torch.manual_seed(3)  # every process has the same seed
        loader = privacy.wrap_loader(torch.utils.data.DataLoader(list(range(40)), batch_size=4))
        draws.append([list(batch) for batch in loader.batch_sampler])
    assert len(draws[0]) == len(draws[1]) == 20 and any(not batch for batch in draws[0])
    rows = [{row for batch in rank_draws for row in batch} for rank_draws in draws]
    assert not rows[0] & rows[1] and rows[0] | rows[1] <= set(range(40))
    assert [len(b) for b in draws[0]] != [len(b) for b in draws[1]], "each process draws independently"


def test_t5_span_corruption_trains_under_dp(make_cfg):
    results = train(make_cfg(*DP, "model=t5", "objective=span", "trainer.max_steps=6", "trainer.val_check_interval=3"))
    assert results["status"] == "completed" and results["privacy"]["steps"] == 6
    assert 0 < results["privacy"]["epsilon"] <= 8.0 + 1e-3


def test_dp_run_spends_at_most_its_target_and_learns(make_cfg, tmp_path):
    cfg = make_cfg(*DP, "privacy.target_epsilon=8")
    results = train(cfg)
    privacy = results["privacy"]
    assert privacy["steps"] == 40 and 7.0 < privacy["epsilon"] <= 8.0 + 1e-3, privacy
    assert privacy["noise_multiplier"] > 0.3 and privacy["delta"] == pytest.approx(1 / privacy_rows(results))
    rows = list(csv.DictReader((tmp_path / "run" / "csv" / "metrics.csv").open()))
    epsilons = [float(r["privacy/epsilon"]) for r in rows if r.get("privacy/epsilon")]
    assert len(epsilons) >= 2 and epsilons == sorted(epsilons) and epsilons[-1] == pytest.approx(privacy["epsilon"])
    # it learns despite the noise: the loss falls by 0.27-0.29 at seeds 1234, 1, 2, 3 (0.30 before the validation
    # before fit stopped drawing from the random stream it trains with); with optimizer.lr=1e-9 it falls by 5e-7
    assert results["metrics"]["val/loss"] < results["val_start"]["val/loss"] - 0.2
    assert json.loads((tmp_path / "run" / "results.json").read_text())["privacy"]["epsilon"] == privacy["epsilon"]


def privacy_rows(results: dict) -> int:
    return round(results["privacy"]["expected_batch_size"] / results["privacy"]["sample_rate"])


def test_resume_keeps_counting_epsilon(make_cfg, tmp_path):
    first = train(make_cfg(*DP, "privacy.target_epsilon=4", "trainer.max_steps=20"))
    resumed = train(make_cfg(*DP, "privacy.target_epsilon=4", "resume=auto"))
    assert resumed["privacy"]["steps"] == 40 > first["privacy"]["steps"] == 20
    assert resumed["privacy"]["epsilon"] > first["privacy"]["epsilon"]


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["privacy.target_epsilon=0.001", "trainer.max_steps=2000"], "privacy.target_epsilon=0.001 cannot be met"),
        (["privacy.target_epsilon=8", "privacy.noise_multiplier=1.0"], "give exactly one of"),
        (["privacy.max_grad_norm=0"], "privacy.max_grad_norm=0 is invalid"),
        (["trainer.accumulate_grad_batches=2"], "trainer.accumulate_grad_batches=2"),
        (["trainer.devices=2"], "trainer.devices=2 without trainer=ddp"),
        (["trainer=fsdp"], "trainer.strategy=ModelParallelStrategy"),
    ],
)
def test_what_dp_cannot_run_fails_in_one_line(make_cfg, overrides, needle):
    with pytest.raises(ConfigError) as err:
        train(make_cfg("privacy=dp", *overrides))
    assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)


@pytest.mark.parametrize(
    ("method", "needle"), [("qlora", "finetune=qlora (4-bit base weights)"), ("lora", "finetune.dropout=0.05")]
)
def test_fine_tuning_dp_cannot_take_is_refused_before_anything_loads(make_cfg, base_checkpoints, method, needle):
    cfg = make_cfg("privacy=dp", f"finetune={method}", f"model.pretrained={base_checkpoints['gpt']}")
    with pytest.raises(ConfigError) as err:
        train(cfg)
    assert f"privacy=dp cannot run with {needle}" in str(err.value)


@pytest.mark.parametrize("method", ["lora", pytest.param("adapter", marks=pytest.mark.slow)])
def test_dp_fine_tunes_only_the_method_s_weights(make_cfg, base_checkpoints, method):
    no_dropout = ["finetune.dropout=0"] if method == "lora" else []
    cfg = make_cfg(
        *DP, f"finetune={method}", f"model.pretrained={base_checkpoints['gpt']}", "trainer.max_steps=6", *no_dropout
    )
    results = train(cfg)
    assert results["status"] == "completed" and results["privacy"]["steps"] == 6 and results["privacy"]["epsilon"] > 0
    assert results["parameters"]["trainable"] < results["parameters"]["total"] / 5


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=bert", "objective=classify", "data=stdlib_modules"],
        ["objective=sft", "data=stdlib_summaries"],
        pytest.param(["model=t5", "objective=sft", "data=stdlib_summaries"], marks=pytest.mark.slow),
    ],
    ids=["bert-classify", "gpt-sft", "t5-sft"],
)
def test_dp_trains_on_supervised_examples(make_cfg, overrides):
    """DP-SGD on the supervised datamodule: Poisson batches over its examples, each row's loss its own (it failed
    with an AttributeError: only the text datamodule had the rows DP-SGD samples)."""
    recipe = TrainingRecipe(make_cfg(*DP, *overrides, "trainer.max_steps=3", "trainer.val_check_interval=3"))
    results = recipe.run().to_dict()
    assert results["status"] == "completed" and results["privacy"]["steps"] == 3
    assert privacy_rows(results) == results["data"]["examples"]["train"] == recipe.datamodule.train_rows
    assert recipe.objective.per_row_loss


def test_the_per_row_loss_weighs_every_row_alike():
    """Under DP-SGD a batch's loss is the mean of its rows' own mean losses: a row's gradient does not depend on how
    many tokens the other rows of its batch have (a mean over all tokens would weigh it by its share of them)."""
    torch.manual_seed(0)
    logits, labels = torch.randn(2, 5, 7), torch.randint(0, 7, (2, 5))
    labels[1, 1:] = IGNORE_INDEX  # the second row scores one token, the first five
    alone = [token_cross_entropy(logits[i : i + 1], labels[i : i + 1]) for i in range(2)]
    torch.testing.assert_close(token_cross_entropy(logits, labels, per_row=True), (alone[0] + alone[1]) / 2)
    assert not torch.isclose(token_cross_entropy(logits, labels), (alone[0] + alone[1]) / 2)
