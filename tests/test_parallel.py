"""Tensor, sequence and pipeline parallel on CPU over gloo: the plans on a fake process group, every split run
against one process on the same batches (loss, logits and gradients within 1e-5 in fp32), resume on the same
and on another layout, and the refusals. Multi-process runs are subprocesses (tests/parallel_worker.py,
tests/tensor_parallel_check.py): forked gloo groups inside a large pytest session have deadlocked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.testing._internal.distributed.fake_pg import FakeStore

from lightning_llm.checkpoints import build_model, load_pretrained, load_weights
from lightning_llm.models import GPT, T5
from lightning_llm.models.parallel import apply_tensor_parallel, canonical_rows, rank_major_rows
from lightning_llm.objectives import CausalLM, ObjectiveContext
from tests.parallel_worker import batches

from .conftest import ROOT, TINY, run_cli

TOLERANCE = 1e-5
WORKER = ROOT / "tests" / "parallel_worker.py"


# -- the plan, in one process on a fake group of 4 ---------------------------------------------------------
@pytest.fixture
def fake_group_of_4():
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=4)
    try:
        yield init_device_mesh("cpu", (4,))
    finally:
        dist.destroy_process_group()


def test_a_plan_splits_heads_whole_and_keeps_the_tied_pair_tied(fake_group_of_4):
    model = GPT(vocab_size=64, block_size=16, n_layer=2, n_head=8, n_kv_head=4, n_embd=64, gated=True)
    packed = apply_tensor_parallel(model, fake_group_of_4, sequence_parallel=True)
    attention, mlp = model.blocks[0].attn, model.blocks[0].mlp
    # 8 query heads and 4 key/value heads of 8 dims over 4 ranks: 2 + 1 + 1 heads of 8 rows each per rank
    assert attention.qkv.weight.to_local().shape == (32, 64) and attention.qkv.weight.placements == (Shard(0),)
    assert attention.proj.weight.to_local().shape == (64, 16) and attention.proj.weight.placements == (Shard(1),)
    assert mlp.fc.weight.to_local().shape == (2 * 192 // 4, 64) and mlp.proj.weight.placements == (Shard(1),)
    assert model.blocks[0].norm_attn.weight.placements == (Replicate(),)  # sequence parallel: replicated
    assert model.lm_head.weight is model.wte.weight and model.wte.weight.placements == (Shard(0),)
    fused = ("attn.qkv", "mlp.fc")  # their biases are split part by part too
    assert set(packed) == {f"blocks.{i}.{p}.{w}" for i in (0, 1) for p in fused for w in ("weight", "bias")}
    # rank 0's rows of [q | k | v]: its 2 query heads, then its key head, then its value head
    rows = rank_major_rows((64, 32, 32), 4)[:32]
    assert rows[:16].tolist() == list(range(16)) and rows[16:24].tolist() == list(range(64, 72))
    assert rows[24:].tolist() == list(range(96, 104))
    weight = torch.randn(128, 3)
    torch.testing.assert_close(canonical_rows(weight[rank_major_rows((64, 32, 32), 4)], (64, 32, 32), 4), weight)


def test_t5_plan_splits_the_relative_bias_by_head_and_cross_attention(fake_group_of_4):
    model = T5(vocab_size=64, block_size=16, n_layer=1, n_head=4, n_embd=32)
    apply_tensor_parallel(model, fake_group_of_4, sequence_parallel=False)
    assert model.encoder_bias.embedding.weight.to_local().shape == (32, 1)  # one head's column per rank
    assert model.decoder[0].cross_attn.kv.weight.to_local().shape == (16, 32)  # its key and value head
    assert all(isinstance(p, DTensor) for name, p in model.named_parameters() if "norm" not in name)


def test_tensor_parallel_two_processes_match_one():
    """The fast multi-process check in `make test`: llama-nano split over 2 gloo processes (sequence parallel,
    13 tokens over 2 ranks) against one process, one forward and backward."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "tensor_parallel_check.py")], capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]


# -- Lightning runs: every layout against one process -----------------------------------------------------
def run_worker(out: Path, *args: str) -> list[dict]:
    """One run of tests/parallel_worker.py; what each rank recorded."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, str(WORKER), *args, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return [torch.load(path, weights_only=True) for path in sorted(out.glob("rank*.pt"))]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., dict]:
    """The one-process run with these worker arguments (each run once per module)."""
    runs: dict[tuple[str, ...], dict] = {}

    def run(*args: str) -> dict:
        if args not in runs:
            runs[args] = run_worker(tmp_path_factory.mktemp("one"), *args)[0]
        return runs[args]

    return run


def differences(ranks: list[dict], single: dict, data_parallel: int = 1, tensor: int = 1) -> dict[str, float]:
    """Largest absolute differences of the step losses (each data-parallel rank's mean), the logits and the
    gradients (the ranks' together: a pipeline stage records its own) from the one-process run."""
    grads = {name: grad for rank in ranks for name, grad in rank["grads"].items()}
    assert set(grads) == set(single["grads"])
    losses = torch.tensor([rank["losses"] for rank in ranks[::tensor][:data_parallel]]).mean(0)
    return {
        "loss": (losses - torch.tensor(single["losses"])).abs().max().item(),
        "logits": (ranks[0]["logits"] - single["logits"]).abs().max().item(),
        "grads": max((grads[k] - single["grads"][k]).abs().max().item() for k in grads),
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    ("family", "sequence_parallel"), [("llama", "1"), ("llama", "0"), ("gpt2", "1"), ("bert", "1"), ("t5", "1")]
)
def test_tensor_parallel_equals_one_process(family, sequence_parallel, tmp_path, one_process):
    split = ("--layout", "tp", "--devices", "2", "--sequence-parallel", sequence_parallel)
    found = differences(run_worker(tmp_path, "--family", family, *split), one_process("--family", family))
    print({k: f"{v:.2g}" for k, v in found.items()})  # the figures, with pytest -s
    assert max(found.values()) <= TOLERANCE, found


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "layout", "devices"),
    [
        ("lora", "tp", "2"),
        ("adapter", "tp", "2"),
        ("prompt", "tp", "2"),
        ("adapter", "pp", "2"),
        ("lora", "fsdp_tp", "4"),
    ],
)
def test_fine_tuning_methods_split_with_the_model(method, layout, devices, tmp_path, one_process):
    """LoRA on the fused [q | k | v], the output projection and the gated MLP (its factors split with them);
    adapters (replicated, on sequence shards under sequence parallel); prompt tuning's prefix (before the first
    block: whole on every rank)."""
    args = ("--family", "llama", "--untied", "--finetune", method)
    ranks = run_worker(tmp_path, *args, "--layout", layout, "--devices", devices)
    data_parallel = 2 if layout == "fsdp_tp" else 1
    reference = one_process(*args, "--merge", str(data_parallel))
    found = differences(ranks, reference, data_parallel=data_parallel, tensor=2 if layout == "fsdp_tp" else 1)
    print({k: f"{v:.2g}" for k, v in found.items()})  # the figures, with pytest -s
    assert max(found.values()) <= TOLERANCE, found


@pytest.mark.slow
def test_fsdp_with_tensor_parallel_2x2_equals_one_process(tmp_path, one_process):
    """4 processes: FSDP over 2 data-parallel groups of 2 tensor-parallel ranks, against one process reading both
    groups' batches at once."""
    ranks = run_worker(tmp_path, "--family", "llama", "--layout", "fsdp_tp", "--devices", "4", "--tp", "2")
    found = differences(ranks, one_process("--family", "llama", "--merge", "2"), data_parallel=2, tensor=2)
    print({k: f"{v:.2g}" for k, v in found.items()})  # the figures, with pytest -s
    assert max(found.values()) <= TOLERANCE, found


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["1f1b", "gpipe"])
@pytest.mark.parametrize("family", ["llama", "gpt2", "bert"])
def test_pipeline_parallel_equals_one_process(family, schedule, tmp_path, one_process):
    args = ("--family", family, "--untied")
    ranks = run_worker(tmp_path, *args, "--layout", "pp", "--devices", "2", "--schedule", schedule)
    found = differences(ranks, one_process(*args))
    print({k: f"{v:.2g}" for k, v in found.items()})  # the figures, with pytest -s
    assert max(found.values()) <= TOLERANCE, found


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["tp", "pp"])
def test_resume_on_the_same_layout_is_exact_and_on_one_device_close(layout, tmp_path, one_process):
    """A run stopped after 2 steps (its checkpoint written mid-fit) and resumed to 4 equals the uninterrupted run
    bit for bit; the same checkpoint resumed on one device follows the one-process run within 1e-5, and loads
    into a plain model whose logits are the split model's."""
    args = ["--family", "llama", "--untied", "--epoch", "1", "--layout", layout, "--devices", "2"]
    straight = run_worker(tmp_path / "straight", *args, "--steps", "4")[0]
    checkpoint = str(tmp_path / "step2.ckpt")
    stopped = run_worker(tmp_path / "stopped", *args, "--steps", "2", "--save", checkpoint)[0]
    resumed = run_worker(tmp_path / "resumed", *args, "--steps", "4", "--resume", checkpoint)[0]
    assert resumed["losses"] == straight["losses"][2:]
    assert torch.equal(resumed["logits"], straight["logits"])
    assert all(torch.equal(resumed["grads"][k], straight["grads"][k]) for k in resumed["grads"])

    single = one_process("--family", "llama", "--untied", "--epoch", "1", "--steps", "4")
    other = one_process("--family", "llama", "--untied", "--epoch", "1", "--steps", "4", "--resume", checkpoint)
    assert max(abs(a - b) for a, b in zip(other["losses"], single["losses"][2:], strict=True)) <= TOLERANCE
    assert (other["logits"] - single["logits"]).abs().max() <= TOLERANCE

    pretrained = load_pretrained(checkpoint)
    model = build_model("gpt", pretrained.config, pretrained.state_dict)
    load_weights(model, pretrained.state_dict, checkpoint)
    with torch.no_grad():
        logits = model.eval()(batches("llama", 1, 1)[0]["input_ids"])
    torch.testing.assert_close(logits, stopped["logits"], atol=TOLERANCE, rtol=0)


# -- the command line: what composes with what ---------------------------------------------------------------
CLI = [
    *TINY,
    "model=llama-nano",
    "model.n_head=4",
    "model.n_kv_head=2",
    "trainer.max_steps=20",
    "trainer.val_check_interval=10",
    "trainer.limit_val_batches=2",
    "callbacks.sample.max_new_tokens=8",
    "hydra.run.dir=run",
]


def _cli(tmp_path: Path, cache_dir: Path, *args: str) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    result = run_cli(*CLI, f"paths.cache_dir={cache_dir}", *args, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads((tmp_path / "run" / "results.json").read_text())


@pytest.mark.slow
@pytest.mark.integration
def test_tensor_parallel_run_composes_and_its_checkpoint_serves_one_device(tmp_path, cache_dir):
    """trainer=tp with bf16-mixed, activation checkpointing, token shards and the eval suite (on both ranks, the
    sharded model): tokens count one replica, and last.ckpt on one device gives the run's greedy sample."""
    results = _cli(
        tmp_path,
        cache_dir,
        "trainer=tp",
        "precision=bf16-mixed",
        "model.activation_checkpointing=true",
        "data.format=shards",
        "eval=offline",
        "eval.limit=4",
        "~eval.tasks.memorization",
        "callbacks.sample.temperature=0",
    )
    assert results["status"] == "completed" and results["replicas_in_sync"] is True
    assert results["tokens"] == 20 * 8 * 32, "one replica: the tensor-parallel ranks read the same batches"
    assert results["metrics"]["val/loss"] < results["val_start"]["val/loss"]
    assert results["eval"]["tasks"]["perplexity"]["status"] == "ok"
    pretrained = load_pretrained(tmp_path / "run" / "checkpoints" / "last.ckpt")
    model = build_model("gpt", pretrained.config, pretrained.state_dict)
    load_weights(model, pretrained.state_dict, "tp")
    objective = CausalLM()
    objective.configure(ObjectiveContext(model=model, tokenizer=pretrained.tokenizer))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        text = objective.sample(model.eval(), "The", 8, temperature=0)
    assert text == results["samples"][0]["text"]


@pytest.mark.slow
@pytest.mark.integration
def test_pipeline_run_composes_and_fine_tunes_with_lora(tmp_path, cache_dir):
    """trainer=pp (GPipe) with token shards, bf16-mixed and activation checkpointing trains, joins its stages for
    the eval suite and samples; its last.ckpt fine-tunes with LoRA on (prompt, response) pairs, each batch as long
    as its longest, under trainer=pp again and under trainer=tp."""
    base = _cli(
        tmp_path / "base",
        cache_dir,
        "trainer=pp",
        "trainer.pipeline_schedule=gpipe",
        "data.format=shards",
        "precision=bf16-mixed",
        "model.activation_checkpointing=true",
        "eval=offline",
        "eval.limit=4",
        "~eval.tasks.memorization",
    )
    assert base["status"] == "completed" and base["replicas_in_sync"] is True
    assert base["metrics"]["val/loss"] < base["val_start"]["val/loss"]
    assert base["eval"]["tasks"]["perplexity"]["status"] == "ok" and base["samples"]
    last = tmp_path / "base" / "run" / "checkpoints" / "last.ckpt"
    for trainer in ("pp", "tp"):
        tuned = _cli(
            tmp_path / trainer,
            cache_dir,
            f"trainer={trainer}",
            "finetune=lora",
            f"model.pretrained={last}",
            "forgetting.batches=2",
            "objective=sft",
            "data=stdlib_summaries",
            "data.max_examples=600",
        )
        assert tuned["status"] == "completed" and tuned["parameters"]["trainable_percent"] < 20
        assert tuned["metrics"]["val/loss"] < tuned["val_start"]["val/loss"]
