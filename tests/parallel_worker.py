"""One training run of a tiny model under a layout (one process, tp, fsdp_tp, pp) on fixed batches, for the
equality tests in tests/test_parallel.py: `python tests/parallel_worker.py --family llama --layout tp --devices 2
--out DIR`. Every rank writes DIR/rank<r>.pt: the loss of each step, the last step's gradients (whole, in the
model's own row order; under pipeline parallel this rank's stage's), and the logits of a probe batch after
training. `--save` writes a checkpoint after the last step, `--resume` starts from one.
"""

from __future__ import annotations

import argparse
import functools
import os
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.distributed.tensor import DTensor
from torch.utils.data import DataLoader

from lightning_llm.finetune import Adapter, FinetuneMethod, LoRA, NoFinetuning, PromptTuning
from lightning_llm.models import BERT, GPT, T5
from lightning_llm.models.parallel import canonical_rows
from lightning_llm.objectives import CausalLM, MaskedLM, SpanCorruption
from lightning_llm.training.module import LanguageModelModule
from lightning_llm.training.parallel import parallel_trainer

VOCAB, ROWS, LENGTH, VIRTUAL_TOKENS = 96, 4, 16, 4
SHAPE = dict(vocab_size=VOCAB, n_layer=2, n_head=4, n_embd=32)
LLAMA = dict(n_kv_head=2, activation="silu", gated=True, norm="rmsnorm", positions="rope", bias=False)
FAMILIES = {
    "llama": lambda **kw: GPT(**SHAPE, **LLAMA, **kw),
    "gpt2": lambda **kw: GPT(**SHAPE, **kw),
    "bert": lambda **kw: BERT(**SHAPE, **kw),
    "t5": lambda **kw: T5(**SHAPE, **kw),
}
FINETUNE: dict[str, FinetuneMethod] = {
    "none": NoFinetuning(),
    "lora": LoRA(rank=4, target_modules=["*attn.qkv", "*attn.proj", "*mlp.fc"]),
    "adapter": Adapter(size=8),
    "prompt": PromptTuning(num_virtual_tokens=VIRTUAL_TOKENS),
}
OBJECTIVES = {"llama": CausalLM, "gpt2": CausalLM, "bert": MaskedLM, "t5": SpanCorruption}


def make_batch(family: str, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A batch of random tokens as the family's objective takes it (every row fully scored for causal LM)."""
    ids = torch.randint(4, VOCAB, (ROWS, LENGTH + 1), generator=generator)
    if family == "bert":
        picked = torch.rand(ROWS, LENGTH, generator=generator) < 0.3
        return {"input_ids": ids[:, :-1].masked_fill(picked, 3), "labels": ids[:, :-1].masked_fill(~picked, -100)}
    if family == "t5":
        return {"input_ids": ids[:, :-1], "decoder_input_ids": ids[:, :8], "labels": ids[:, 1:9]}
    return {"input_ids": ids[:, :-1], "labels": ids[:, 1:]}


def batches(family: str, count: int, merge: int) -> list[dict[str, torch.Tensor]]:
    """`count` batches per data-parallel rank; `merge` > 1 joins each group of that many consecutive batches into
    one (what `merge` data-parallel ranks read together in one step, for the one-process run)."""
    generator = torch.Generator().manual_seed(7)
    single = [make_batch(family, generator) for _ in range(count * merge)]
    return [
        {key: torch.cat([b[key] for b in single[i : i + merge]]) for key in single[0]}
        for i in range(0, len(single), merge)
    ]


def logits(model: torch.nn.Module, family: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        if family == "t5":
            return model(batch["input_ids"], batch["decoder_input_ids"])
        return model(batch["input_ids"])


class Recorder(pl.Callback):
    """Each step's loss and the last step's gradients, whole and in the model's own row order."""

    def __init__(self, save: str | None) -> None:
        self.save = save
        self.losses: list[float] = []
        self.grads: dict[str, torch.Tensor] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))
        if self.save and trainer.global_step == trainer.max_steps:  # mid-fit: pipeline stages still apart
            trainer.save_checkpoint(self.save)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.grads = {}
        for name, param in pl_module.named_parameters():
            if param.grad is None or param.is_meta:
                continue
            grad = param.grad.full_tensor() if isinstance(param.grad, DTensor) else param.grad
            if name in pl_module.packed_rows:
                grad = canonical_rows(grad, *pl_module.packed_rows[name])
            self.grads[name] = grad.detach().clone()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--family", required=True, choices=sorted(FAMILIES))
    parser.add_argument("--layout", default="single", choices=["single", "tp", "fsdp_tp", "pp"])
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--tp", type=int, default=2)
    parser.add_argument("--schedule", default="1f1b")
    parser.add_argument("--merge", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--epoch", type=int, default=3, help="batches per epoch and data-parallel rank")
    parser.add_argument("--untied", action="store_true")
    parser.add_argument("--finetune", default="none", choices=sorted(FINETUNE))
    parser.add_argument("--sequence-parallel", type=int, default=1)
    parser.add_argument("--save")
    parser.add_argument("--resume")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    length = LENGTH + (VIRTUAL_TOKENS if args.finetune == "prompt" else 0)
    model = FAMILIES[args.family](block_size=length, tie_embeddings=not args.untied)
    finetune = FINETUNE[args.finetune]
    finetune.apply(model)
    for name, param in model.named_parameters():  # trained-looking updates (LoRA's B, adapters' up start at 0)
        if param.requires_grad and not param.detach().any():
            param.data.normal_(std=0.02, generator=torch.Generator().manual_seed(len(name)))
    module = LanguageModelModule(
        model,
        OBJECTIVES[args.family](),
        functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.1),
        None,
        finetune,
    )
    recorder = Recorder(args.save)
    common = dict(
        accelerator="cpu",
        devices=args.devices,
        max_steps=args.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        gradient_clip_val=1.0,
        callbacks=[recorder],
        use_distributed_sampler=False,
    )
    if args.layout == "single":
        trainer = pl.Trainer(**common)
    else:
        tensor = {"tp": args.devices, "fsdp_tp": args.tp, "pp": 1}[args.layout]
        pipeline = args.devices if args.layout == "pp" else 1
        trainer = parallel_trainer(
            tensor_parallel_size=tensor,
            pipeline_parallel_size=pipeline,
            microbatches=4,
            pipeline_schedule=args.schedule,
            sequence_parallel=bool(args.sequence_parallel),
            **common,
        )
    rank = int(os.environ.get("LOCAL_RANK", 0))
    replicas = args.devices // args.tp if args.layout == "fsdp_tp" else 1
    own = batches(args.family, args.epoch * replicas, args.merge)[rank // args.tp % replicas :: replicas]
    data = DataLoader(own, batch_size=None)  # this data-parallel rank's batches, in order
    trainer.fit(module, train_dataloaders=data, ckpt_path=args.resume)
    probe = batches(args.family, 1, 1)[0]
    record = {
        "losses": recorder.losses,
        "grads": recorder.grads,
        "logits": logits(module.model.eval(), args.family, probe),
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    torch.save(record, Path(args.out) / f"rank{rank}.pt")


if __name__ == "__main__":
    main()
