"""Scale on CPU over gloo: DDP and FSDP2 with 2 processes, LoRA/QLoRA under them, activation checkpointing;
estimates of runs on GPUs this machine does not have."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lightning_llm.checkpoints import build_model, load_pretrained, load_weights
from lightning_llm.errors import ConfigError
from lightning_llm.models import BERT, GPT, T5
from lightning_llm.objectives import CausalLM, ObjectiveContext
from lightning_llm.recipe import train

from .conftest import TINY, run_cli

DIST = [
    *TINY,
    "trainer.max_steps=20",
    "trainer.val_check_interval=10",
    "trainer.limit_val_batches=2",
    "~callbacks.sample",
    "trainer.devices=2",
]


def _run(tmp_path, cache_dir, *args: str) -> dict:
    result = run_cli(*DIST, f"paths.cache_dir={cache_dir}", "hydra.run.dir=run", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"], "one output folder for all ranks"
    return json.loads((tmp_path / "run" / "results.json").read_text())


@pytest.mark.integration
def test_ddp_two_processes_train_in_sync(tmp_path, cache_dir):
    results = _run(tmp_path, cache_dir, "trainer=ddp")
    assert results["replicas_in_sync"] is True
    assert results["tokens"] == 20 * 8 * 32 * 2  # both ranks' batches count
    assert results["metrics"]["val/loss"] < results["val_start"]["val/loss"]
    assert (tmp_path / "run" / ".hydra" / "config.yaml").is_file(), "the composed config is kept with the run"


@pytest.mark.integration
@pytest.mark.slow  # two DDP runs, about 60 s; the sampler's shares are checked in tests/test_data.py
def test_a_ddp_run_resumes_mid_epoch(tmp_path, cache_dir):
    """resume=auto of a DDP run continues each process's share of the epoch (it failed with an IndexError in
    Lightning's DistributedSamplerWrapper)."""
    _run(tmp_path, cache_dir, "trainer=ddp", "trainer.max_steps=10")
    results = _run(tmp_path, cache_dir, "trainer=ddp", "resume=auto")
    assert results["status"] == "completed" and results["steps"] == 20 and results["replicas_in_sync"] is True
    assert results["resumed"]["from_step"] == 10


@pytest.mark.integration
@pytest.mark.slow  # about 40 s; tests/test_shards.py checks that ranks read disjoint blocks in one process
def test_ddp_trains_from_token_shards(tmp_path, cache_dir):
    """`python train.py trainer=ddp data.format=shards`: both ranks stream their own blocks from the shards (one
    folder written once, by rank 0 before the others read it) and stay in sync."""
    results = _run(tmp_path, cache_dir, "trainer=ddp", "data.format=shards")
    assert results["data"]["format"] == "shards"
    assert results["replicas_in_sync"] is True
    assert results["tokens"] == 20 * 8 * 32 * 2
    assert results["metrics"]["val/loss"] < results["val_start"]["val/loss"]
    assert len(list(Path(results["data"]["shards"]).rglob("index.json"))) == 2  # train and val, written once


@pytest.mark.integration
@pytest.mark.slow  # about 20 s: DP-SGD (tests/test_privacy.py) and DDP (above) each run in make test
def test_dp_sgd_under_ddp_keeps_the_replicas_in_sync_and_accounts_both_processes(tmp_path, cache_dir):
    """privacy=dp under trainer=ddp: each process draws Poisson batches from its own share of the rows, the
    first adds the noise and the clipped sums are all-reduced, so both replicas take the same steps; the sampling
    rate counts both processes' rows."""
    results = _run(tmp_path, cache_dir, "trainer=ddp", "privacy=dp", "privacy.target_epsilon=8", "optimizer.lr=3e-3")
    assert results["replicas_in_sync"] is True
    privacy = results["privacy"]
    assert 0 < privacy["epsilon"] <= 8 and privacy["steps"] == 20
    assert privacy["expected_batch_size"] == 8
    assert privacy["sample_rate"] == pytest.approx(2 * 8 / results["data"]["blocks"]["train"], rel=1e-6)
    assert results["metrics"]["val/loss"] < results["val_start"]["val/loss"]


@pytest.mark.integration
def test_fsdp_trains_and_its_checkpoint_loads_in_one_process(tmp_path, cache_dir):
    args = [a for a in DIST if a != "~callbacks.sample"]
    result = run_cli(
        *args,
        "trainer=fsdp",
        "callbacks.sample.temperature=0",
        "callbacks.sample.max_new_tokens=12",
        f"paths.cache_dir={cache_dir}",
        "hydra.run.dir=run",
        "eval=mmlu",  # a hub task, offline: the sharded eval runs on both ranks and fails the run (partial)
        cwd=tmp_path,
        env={"HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 4, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "eval tasks could not run" in errors[0], errors  # from rank 0 only
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "partial" and results["replicas_in_sync"] is True
    assert results["metrics"]["val/loss"] < results["val_start"]["val/loss"]
    # the full checkpoint (written by rank 0) in one process decodes exactly what the sharded model decoded
    pretrained = load_pretrained(tmp_path / "run" / "checkpoints" / "last.ckpt")
    model = build_model("gpt", pretrained.config, pretrained.state_dict)
    load_weights(model, pretrained.state_dict, "fsdp")
    objective = CausalLM()
    objective.configure(ObjectiveContext(model=model, tokenizer=pretrained.tokenizer))
    text = objective.sample(model.eval(), "The", 12, temperature=0)
    assert text == results["samples"][0]["text"]


@pytest.mark.integration
@pytest.mark.slow  # about 20 s: FSDP and LoRA each have their own fast tests
def test_fsdp_lora_fine_tune(tmp_path, cache_dir, base_checkpoints):
    results = _run(
        tmp_path,
        cache_dir,
        "trainer=fsdp",
        "finetune=lora",
        "objective=sft",
        "data=stdlib_summaries",
        "data.max_examples=600",
        f"model.pretrained={base_checkpoints['gpt']}",
        "forgetting.batches=2",
    )
    assert results["replicas_in_sync"] is True
    assert results["parameters"]["trainable_percent"] < 10
    assert results["metrics"]["val/loss"] < results["val_start"]["val/loss"]
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["state_dict"] and all("lora_" in k for k in checkpoint["state_dict"])
    lora_b = [v for k, v in checkpoint["state_dict"].items() if k.endswith("lora_b")]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b), "every LoRA update trained away from its zero init"


@pytest.mark.slow
@pytest.mark.integration
def test_qlora_under_ddp(tmp_path, cache_dir, base_checkpoints):
    results = _run(tmp_path, cache_dir, "trainer=ddp", "finetune=qlora", f"model.pretrained={base_checkpoints['gpt']}")
    assert results["replicas_in_sync"] is True


@pytest.mark.parametrize("cls", [GPT, BERT, T5])
def test_activation_checkpointing_same_gradients_less_memory(cls):
    torch.manual_seed(0)
    model = cls(vocab_size=100, block_size=64, n_layer=3, n_head=4, n_embd=64)
    ids = torch.randint(4, 100, (4, 64))

    def grads_and_saved_bytes(checkpointing: bool) -> tuple[list[torch.Tensor], int]:
        model.zero_grad()
        model.activation_checkpointing = checkpointing
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(
            lambda t: saved.append(t.numel() * t.element_size()) or t, lambda t: t
        ):
            out = model(ids, ids[:, :16]) if cls is T5 else model(ids)
        out.float().pow(2).mean().backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None], sum(saved)

    plain, plain_bytes = grads_and_saved_bytes(False)
    checkpointed, checkpointed_bytes = grads_and_saved_bytes(True)
    for a, b in zip(plain, checkpointed, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert checkpointed_bytes < 0.6 * plain_bytes, (checkpointed_bytes, plain_bytes)


def _without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine has no GPU (also where it has one), and anything that asks CUDA for a device fails."""

    def no_device(*args: object) -> None:
        raise AssertionError("the estimate touched CUDA")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", no_device)
    monkeypatch.setattr(torch.cuda, "get_device_name", no_device)


def test_estimate_a_gpu_experiment_without_a_gpu_says_why_it_is_not_124m(make_cfg, capsys, monkeypatch, tmp_path):
    _without_cuda(monkeypatch)
    results = train(make_cfg("experiment=gpt2_small", "estimate=true", tiny=False))
    out = capsys.readouterr().out
    estimate = results["estimate"]
    assert results["status"] == "estimated" and not (tmp_path / "run").exists(), "nothing is written"
    assert estimate["device"].startswith("H100") and estimate["peak_flops_per_s"] == 989e12  # bf16 dense
    assert estimate["device_memory_bytes"] == 80 * 1024**3 and estimate["fits"]
    assert estimate["parameters"]["total"] == 88_988_160 and "4,096 from tokenizer.vocab_size" in out
    assert "50,257" in out and "124,439,808 parameters" in out, "the published size and why this one differs"
    assert "no GPU on this machine: estimated for H100" in out and "a100-40gb" in out


def test_estimate_on_a_named_gpu_with_sharding(make_cfg, monkeypatch):
    _without_cuda(monkeypatch)
    cfg = make_cfg("trainer=fsdp", "trainer.devices=8", "precision=bf16-mixed", "estimate=a100-40gb")
    estimate = train(cfg)["estimate"]
    assert estimate["device"].startswith("A100-40GB") and estimate["peak_flops_per_s"] == 312e12
    assert (estimate["devices"], estimate["shards"], estimate["device_memory_bytes"]) == (8, 8, 40 * 1024**3)
    assert estimate["tokens_per_step"] == 8 * 8 * 32 and not estimate.get("notes")


def test_estimate_on_this_machines_gpu(make_cfg, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA L4")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=23 * 2**30))
    estimate = train(make_cfg("trainer=gpu", "trainer.devices=-1", "precision=bf16-mixed", "estimate=true"))["estimate"]
    assert (estimate["device"], estimate["devices"], estimate["peak_flops_per_s"]) == ("NVIDIA L4", 2, 121e12)
    assert estimate["device_memory_bytes"] == 23 * 2**30


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer=gpu", "estimate=b200"], "estimate=b200 is not a GPU of the data sheets: name one of h100-pcie"),
        (["trainer=cpu", "estimate=a100"], "estimate=a100 names a GPU but trainer.accelerator=cpu: add trainer=gpu"),
    ],
)
def test_estimate_refuses_an_unknown_or_contradictory_gpu(make_cfg, monkeypatch, overrides, message):
    _without_cuda(monkeypatch)
    with pytest.raises(ConfigError, match=message):
        train(make_cfg(*overrides))
