"""Preference tuning: each loss equals its reference (TRL's own code where it installs) item for item, a LoRA run's
reference is the same model with its adapters off, a precomputed reference trains exactly as a frozen copy does,
held-out preference accuracy rises from chance after DPO from an SFT checkpoint, resume is exact, and what cannot
work is refused in one line before anything is written."""

from __future__ import annotations

import copy
import csv
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from lightning_llm.errors import ConfigError
from lightning_llm.objectives import IGNORE_INDEX
from lightning_llm.objectives.base import sequence_logps
from lightning_llm.objectives.dpo import dpo_losses
from lightning_llm.objectives.kto import kto_losses
from lightning_llm.objectives.orpo import orpo_log_odds
from lightning_llm.objectives.preference import preference_scalars
from lightning_llm.objectives.simpo import simpo_losses
from lightning_llm.recipe import TrainingRecipe, train

from .conftest import TINY, compose_config, straight_and_resumed_losses

PAIRS = 6


@pytest.fixture(scope="module")
def fixed_logps() -> dict[str, torch.Tensor]:
    """Per-token log-probabilities of 6 pairs (chosen rows first), masks of different lengths, reference sums."""
    generator = torch.Generator().manual_seed(0)
    per_token = -torch.rand(2 * PAIRS, 9, generator=generator) * 3
    mask = torch.zeros(2 * PAIRS, 10, dtype=torch.long)
    for row, length in enumerate([3, 5, 9, 2, 7, 4, 6, 8, 1, 9, 5, 3]):
        mask[row, 10 - length :] = 1
    policy = (per_token * mask[:, 1:]).sum(1)
    return {"per_token": per_token, "mask": mask, "policy": policy, "reference": policy - torch.randn(2 * PAIRS) * 2}


def trl_dpo_loss(fixed: dict[str, torch.Tensor], loss: str, beta: float, label_smoothing: float) -> torch.Tensor:
    """TRL's DPOTrainer._compute_loss on the fixed log-probabilities (precomputed reference; the model a stub that
    returns them)."""
    trainer = pytest.importorskip("trl.trainer.dpo_trainer").DPOTrainer
    mask = fixed["mask"]
    outputs = SimpleNamespace(
        log_probs=fixed["per_token"] * mask[:, 1:],
        entropy=torch.zeros(2 * PAIRS, 9),
        mean_logits=torch.zeros(2 * PAIRS, 9),
        is_top1=torch.zeros(2 * PAIRS, 9, dtype=torch.bool),
    )
    accelerator = SimpleNamespace(device="cpu", gather=lambda t: t, gather_for_metrics=lambda t: t)
    stub = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=accelerator,
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=[loss],
        loss_weights=[1.0],
        beta=beta,
        label_smoothing=label_smoothing,
        use_weighting=False,
        _metrics=defaultdict(lambda: defaultdict(list)),
        _total_train_tokens=0,
        _tp_size=1,
    )
    ref_chosen, ref_rejected = fixed["reference"].chunk(2)
    inputs = {
        "input_ids": torch.zeros(2 * PAIRS, 10, dtype=torch.long),
        "attention_mask": torch.ones(2 * PAIRS, 10, dtype=torch.long),
        "completion_mask": mask,
        "ref_chosen_logps": ref_chosen,
        "ref_rejected_logps": ref_rejected,
    }
    value = trainer._compute_loss(stub, lambda **kwargs: outputs, inputs, False)
    metrics = {k: v[0] for k, v in stub._metrics["train"].items()}
    return value, metrics


def ours(fixed: dict[str, torch.Tensor], loss: str, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    (pc, pr), (rc, rr) = fixed["policy"].chunk(2), fixed["reference"].chunk(2)
    nc, nr = fixed["mask"][:, 1:].sum(1).chunk(2)
    return dpo_losses(pc, pr, rc, rr, beta, loss, label_smoothing, nc, nr)


@pytest.mark.parametrize(("loss", "smoothing"), [("sigmoid", 0.0), ("hinge", 0.0), ("ipo", 0.0), ("robust", 0.2)])
def test_dpo_losses_equal_trl(fixed_logps, loss, smoothing):
    reference, metrics = trl_dpo_loss(fixed_logps, loss, 0.3, smoothing)
    assert torch.allclose(ours(fixed_logps, loss, 0.3, smoothing).mean(), reference, atol=1e-6)
    (pc, pr), (rc, rr) = fixed_logps["policy"].chunk(2), fixed_logps["reference"].chunk(2)
    scalars = preference_scalars(0.3 * (pc - rc), 0.3 * (pr - rr), pc, pr)
    for name in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen"):
        assert abs(scalars[name].item() - metrics[name]) < 1e-5, name  # no ties here: TRL's accuracy too


def test_label_smoothing_and_each_item_follow_the_papers(fixed_logps):
    """Item by item: cDPO (sigmoid + label smoothing, as torchtune and TRL before 1.0), rDPO, hinge, IPO."""
    (pc, pr), (rc, rr) = fixed_logps["policy"].chunk(2), fixed_logps["reference"].chunk(2)
    h = (pc - rc) - (pr - rr)
    beta, eps = 0.3, 0.2
    cdpo = -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)
    assert torch.allclose(ours(fixed_logps, "sigmoid", beta, eps), cdpo)
    rdpo = ((1 - eps) * -F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1 - 2 * eps)
    assert torch.allclose(ours(fixed_logps, "robust", beta, eps), rdpo)
    assert torch.allclose(ours(fixed_logps, "hinge", beta), torch.relu(1 - beta * h))
    nc, nr = fixed_logps["mask"][:, 1:].sum(1).chunk(2)
    ipo = ((pc - rc) / nc - (pr - rr) / nr - 1 / (2 * beta)) ** 2
    assert torch.allclose(ours(fixed_logps, "ipo", beta), ipo)


def test_simpo_and_orpo_equal_trl(fixed_logps):
    cpo = pytest.importorskip("trl.experimental.cpo.cpo_trainer").CPOTrainer
    orpo = pytest.importorskip("trl.experimental.orpo.orpo_trainer").ORPOTrainer
    counts = fixed_logps["mask"][:, 1:].sum(1)
    chosen, rejected = (fixed_logps["policy"] / counts).chunk(2)  # TRL's average_log_prob=True
    stub = SimpleNamespace(
        alpha=0.0,
        loss_type="simpo",
        simpo_gamma=1.2,
        beta=2.0,
        label_smoothing=0.1,
        accelerator=SimpleNamespace(device="cpu"),
    )
    reference, _, _ = cpo.cpo_loss(stub, chosen, rejected)
    assert torch.allclose(simpo_losses(chosen, rejected, 2.0, 1.2, 0.1), reference, atol=1e-6)
    losses, *_ = orpo.odds_ratio_loss(SimpleNamespace(beta=0.25, accelerator=stub.accelerator), chosen, rejected)
    assert torch.allclose(0.25 * F.logsigmoid(orpo_log_odds(chosen, rejected)), losses, atol=1e-6)


def test_kto_loss_follows_trl(fixed_logps):
    """TRL's KTO: KL = max(0, mean(policy - reference) on mismatched pairs), detached; desirable examples
    1 - sigmoid(beta (r - KL)), undesirable 1 - sigmoid(beta (KL - r)), each weighted, then the mean."""
    policy, reference = fixed_logps["policy"][:PAIRS], fixed_logps["reference"][:PAIRS]
    desirable = torch.tensor([True, False, True, True, False, False])
    kl = torch.tensor(0.7)
    r = policy - reference
    expected = torch.cat(
        (1.5 * (1 - torch.sigmoid(0.2 * (r[desirable] - kl))), 0.5 * (1 - torch.sigmoid(0.2 * (kl - r[~desirable]))))
    )
    ours_ = kto_losses(policy, reference, desirable, kl, 0.2, 1.5, 0.5)
    assert torch.allclose(torch.cat((ours_[desirable], ours_[~desirable])), expected)


def test_sequence_logps_sum_the_labelled_tokens():
    logits = torch.randn(2, 4, 7)
    labels = torch.tensor([[IGNORE_INDEX, 3, 1, IGNORE_INDEX], [2, 2, 2, 2]])
    logps, counts = sequence_logps(logits, labels)
    manual = logits.log_softmax(-1)
    assert torch.allclose(logps[0], manual[0, 1, 3] + manual[0, 2, 1]) and counts.tolist() == [2, 4]


def test_lora_reference_is_the_model_with_its_adapters_off(base_checkpoints, make_cfg, monkeypatch):
    """No second copy: the reference is LoRA's `disabled` context, whose outputs are the base model's."""
    cfg = make_cfg(
        f"model.pretrained={base_checkpoints['gpt']}", "objective=dpo", "data=stdlib_preferences", "finetune=lora"
    )
    recipe = TrainingRecipe(cfg)
    recipe.check()
    for stage in recipe.stages()[:6]:  # up to and including the trainer
        stage()
    monkeypatch.setattr(copy, "deepcopy", lambda *a, **k: pytest.fail("LoRA-DPO copied the model"))
    recipe.setup_objective()
    objective, model = recipe.objective, recipe.model
    assert objective.reference == recipe.finetune.disabled
    batch = recipe.datamodule.first_train_rows(2)
    lora_b = [m.lora_b for m in model.modules() if hasattr(m, "lora_b")]
    with torch.no_grad():
        base = sequence_logps(objective.logits(model, batch), batch["labels"])[0]
        for weight in lora_b:  # trained adapters: the policy now differs from its base
            torch.nn.init.normal_(weight)
        policy = sequence_logps(objective.logits(model, batch), batch["labels"])[0]
    reference = objective.reference_logps(model, batch)
    assert torch.allclose(reference, base, atol=1e-5) and not torch.allclose(reference, policy, atol=1e-3)
    assert all(m.enabled for m in model.modules() if hasattr(m, "lora_b")), "switched back on after the reference"


@pytest.fixture(scope="module")
def sft_checkpoint(base_checkpoints, tmp_path_factory, cache_dir) -> Path:
    """The tiny GPT after 40 steps of SFT on the embedded code -> summary task."""
    run = tmp_path_factory.mktemp("sft")
    args = [*TINY, f"model.pretrained={base_checkpoints['gpt']}", "objective=sft", "data=stdlib_summaries"]
    train(
        compose_config(
            [*args, "finetune=full", "trainer.max_steps=40", "optimizer.lr=1e-3", "~callbacks.sample"], run, cache_dir
        )
    )
    return run


def dpo_args(checkpoint: Path, *more: str) -> list[str]:
    return [
        *TINY,
        f"model.pretrained={checkpoint}",
        "objective=dpo",
        "data=stdlib_preferences",
        "~callbacks.sample",
        "trainer.limit_val_batches=8",
        *more,
    ]


def test_dpo_from_sft_raises_held_out_preference_accuracy(sft_checkpoint, cache_dir, tmp_path):
    results = train(
        compose_config(
            dpo_args(
                sft_checkpoint,
                "finetune=lora",
                "optimizer.lr=1e-2",
                "objective.beta=0.5",
                "trainer.max_steps=60",
                "trainer.val_check_interval=60",
            ),
            tmp_path / "dpo",
            cache_dir,
        )
    )
    before, after = results["val_start"], results["metrics"]
    assert before["val/rewards/accuracies"] == 0.5  # untrained: every reward is 0, a tie
    assert after["val/rewards/accuracies"] > 0.7, after  # 0.78 measured (64 held-out pairs)
    assert after["val/rewards/margins"] > 0.2 and after["val/loss"] < before["val/loss"]
    rows = list(csv.DictReader((tmp_path / "dpo" / "csv" / "metrics.csv").open()))
    logged = {k for row in rows for k, v in row.items() if v}
    for split in ("train", "val"):
        for name in (
            "rewards/chosen",
            "rewards/rejected",
            "rewards/margins",
            "rewards/accuracies",
            "logps/chosen",
            "logps/rejected",
        ):
            assert f"{split}/{name}" in logged
    assert "switched off" in results["model"]["reference"]


def test_a_precomputed_reference_trains_as_a_frozen_copy(sft_checkpoint, cache_dir, tmp_path):
    losses = {}
    for how in ("true", "false"):
        args = dpo_args(sft_checkpoint, "finetune=full", f"objective.precompute_reference={how}", "trainer.max_steps=6")
        results = train(
            compose_config(
                [*args, "trainer.log_every_n_steps=1", "trainer.val_check_interval=6"], tmp_path / how, cache_dir
            )
        )
        rows = csv.DictReader((tmp_path / how / "csv" / "metrics.csv").open())
        losses[how] = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
        assert ("precomputed" if how == "true" else "frozen copy") in results["model"]["reference"]
    assert len(losses["true"]) == 6 and torch.allclose(
        torch.tensor(losses["true"]), torch.tensor(losses["false"]), atol=1e-5
    )


@pytest.mark.slow  # about 25 s: three runs
def test_dpo_resumes_exactly(sft_checkpoint, cache_dir, tmp_path):
    args = dpo_args(
        sft_checkpoint,
        "finetune=full",  # the frozen copy is made from the pretrained weights, before the checkpoint restores
        "scheduler=constant",  # the same learning rate whatever max_steps is: the runs are comparable
        "trainer.val_check_interval=10",
        "trainer.log_every_n_steps=1",
    )
    straight, resumed = straight_and_resumed_losses(args, tmp_path, cache_dir)
    assert len(straight) == 30 and straight == resumed


@pytest.mark.parametrize("objective", ["simpo", "orpo", "kto"])
def test_other_preference_objectives_train(sft_checkpoint, cache_dir, tmp_path, objective):
    kto = ["data=stdlib_preferences_unpaired", "finetune=full", "objective.precompute_reference=true"]
    extra = kto if objective == "kto" else ["finetune=full"]
    args = [
        *dpo_args(sft_checkpoint, *extra),
        f"objective={objective}",
        "trainer.max_steps=4",
        "trainer.val_check_interval=4",
    ]
    results = train(compose_config(args, tmp_path / objective, cache_dir))
    assert results["status"] == "completed" and "val/rewards/chosen" in results["metrics"]


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["model=bert", "objective=dpo"], "objective=dpo does not fit model family 'bert'"),
        (["objective=dpo"], "model.pretrained is not set"),
        (
            ["objective=dpo", "objective.loss=ipo", "objective.label_smoothing=0.1"],
            "has no meaning for objective.loss=ipo",
        ),
        (["objective=dpo", "objective.loss=kl"], "is not a DPO loss"),
        (["objective=kto"], "or data=stdlib_preferences_unpaired with objective=kto"),
        (["objective=dpo", "privacy=dp", "MODEL"], "privacy=dp cannot train objective DirectPreference"),
        (["objective=dpo", "data.rejected_column=worse", "MODEL"], "column 'worse' is not in"),
    ],
    ids=["bert", "no-base", "ipo-smoothing", "loss", "kto-on-pairs", "privacy", "column"],
)
def test_what_cannot_work_is_refused_in_one_line(base_checkpoints, make_cfg, tmp_path, overrides, needle):
    model = [f"model.pretrained={base_checkpoints['gpt']}"] if "MODEL" in overrides else []
    wanted = [o for o in overrides if o != "MODEL"]
    cfg = make_cfg("data=stdlib_preferences", *model, *wanted, output_dir=tmp_path / "out")
    with pytest.raises(ConfigError) as err:
        TrainingRecipe(cfg).check()
    assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)
