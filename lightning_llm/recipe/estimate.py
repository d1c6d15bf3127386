"""`estimate=true`: a dry run. The model and fine-tuning method are built as the run would build them (packed text
is not read: the vocabulary size comes from the tokenizer's config or the pretrained model; rows of examples are
read and tokenized, cached, for their lengths), and parameters, FLOPs, memory per device, time and cost are
printed; nothing is trained.

The hardware comes from the config, never from a Trainer, so a GPU run can be estimated on a laptop:
`estimate=true` estimates on the trainer's device (trainer=gpu: this machine's GPU, or DEFAULT_GPU's data sheet
where there is none), `estimate=<gpu>` on a GPU of the data sheets (`estimate=a100-40gb`; the names are in
lightning_llm/training/peaks.py). Nothing touches CUDA unless this machine's GPU is the one estimated.
"""

from __future__ import annotations

from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from lightning_llm.data.examples import resolve_max_tokens
from lightning_llm.errors import ConfigError
from lightning_llm.finetune import count_parameters
from lightning_llm.log import quiet_known_noise
from lightning_llm.objectives import ObjectiveContext
from lightning_llm.recipe.build import instantiate_model
from lightning_llm.recipe.checks import strategy_name
from lightning_llm.recipe.outputs import remove_if_empty
from lightning_llm.recipe.results import RunResults
from lightning_llm.recipe.run import TrainingRecipe
from lightning_llm.recipe.tokenizer import choose_tokenizer
from lightning_llm.tokenizers import HFTokenizer
from lightning_llm.training.estimate import Hardware, estimate_on, format_estimate, gpu_hardware, local_hardware
from lightning_llm.training.parallel_checks import TRAINER_TARGET
from lightning_llm.training.parallel_estimate import ParallelLayout
from lightning_llm.training.peaks import GPUS, find_gpu

CHAR_VOCABULARY = 256  # a character tokenizer's size is the corpus' alphabet: about this for text
#: The GPU `estimate=true` assumes for a GPU trainer on a machine without one (say so; `estimate=<gpu>` picks).
DEFAULT_GPU = "h100"
GPU_ACCELERATORS = ("gpu", "cuda")
#: Strategies that shard weights, gradients and optimizer state over all processes (FSDP, ZeRO-3).
SHARDING = ("fsdp", "FSDPStrategy", "ModelParallelStrategy", "deepspeed_stage_3", "deepspeed_stage_3_offload")
#: The vocabularies the published sizes of the model options count (model option -> whose, size): ours comes
#: from the tokenizer setting, so the same architecture has fewer parameters with our 4096-token BPE.
PUBLISHED_VOCABULARIES = {
    "gpt2-small": ("GPT-2", 50257),
    "bert-base": ("BERT", 30522),
    "t5-base": ("T5", 32128),
    "t5-v1_1-small": ("T5 v1.1", 32128),
}


class EstimateRecipe(TrainingRecipe):
    """check -> load_pretrained -> build the model and fine-tuning -> estimate, printed."""

    def run(self) -> RunResults:
        quiet_known_noise()
        try:
            self.check()
            self.load_pretrained()
            self.estimate()
        finally:
            remove_if_empty(self.output_dir)
        return self.results

    def vocabulary(self) -> tuple[int, str]:
        """The vocabulary size the run would have and where it comes from: the pretrained tokenizer's, a Hugging
        Face one's, or the trained tokenizer's configured size."""
        cfg = self.cfg
        if self.pretrained is not None and self.pretrained.tokenizer is not None:
            return self.pretrained.tokenizer.vocab_size, "the tokenizer of model.pretrained"
        if cfg.tokenizer.type == "hf":
            path = cfg.tokenizer.get("path") or cfg.model.get("pretrained")
            return HFTokenizer.from_pretrained(path).vocab_size, f"the Hugging Face tokenizer {path}"
        if cfg.tokenizer.type == "char":
            return CHAR_VOCABULARY, "about a text's alphabet (tokenizer=char)"
        trained = f"a {cfg.tokenizer.type} tokenizer trained on the data"
        return int(cfg.tokenizer.vocab_size), f"tokenizer.vocab_size ({trained})"

    def published_size(self, vocab: int) -> str | None:
        """Why the parameter count is not the model option's published one, when its vocabulary differs."""
        published = PUBLISHED_VOCABULARIES.get(str(self.results.choices.get("model")))
        if published is None or published[1] == vocab:
            return None
        whose, size = published
        with torch.device("meta"):  # counted without allocating
            total = count_parameters(instantiate_model(self.cfg.model, size))["total"]
        return (
            f"{whose}'s own vocabulary is {size:,} tokens, which makes this architecture {total:,} parameters "
            f"(its published size); this run's vocabulary is {vocab:,} (above)"
        )

    def batch_shape(self) -> tuple[int, int, str | None]:
        """(rows, tokens per row) of a step's batch and why: packed text fills data.block_size in every row; rows of
        examples (supervised, preference data) are as long as the data makes them: they are read, tokenized
        (cached, as the run would) and the largest padded batch an epoch makes is estimated (data.max_tokens bounds
        it), not rows that all fill the model's context."""
        cfg = self.cfg
        data = cfg.data
        if "max_tokens" not in data:
            return int(data.batch_size), int(data.block_size), None
        batching = resolve_max_tokens(data, self.pretrained is not None)
        tokenizer = choose_tokenizer(cfg, self.pretrained)
        datamodule = instantiate(data, objective=instantiate(cfg.objective), tokenizer=tokenizer, **batching)
        datamodule.prepare_data()
        self.datamodule = datamodule  # its labels size a classification head
        rows, length = datamodule.batch_shape()
        lengths = datamodule.stats["row_tokens"]
        bound = f"at most {datamodule.max_tokens} padded tokens (data.max_tokens)" if datamodule.max_tokens else (
            f"{data.batch_size} rows (data.batch_size; data.max_tokens bounds their tokens)"
        )  # fmt: skip
        why = (
            f"a step's batch is the data's largest: {rows} rows x {length} tokens, of {bound}; the rows are "
            f"{lengths['min']}-{lengths['max']} tokens, median {lengths['median']} (data.block_size={data.block_size})"
        )
        return rows, length, why

    def estimate(self) -> None:
        cfg = self.cfg
        vocab, source = self.vocabulary()
        rows, length, shape = self.batch_shape()
        model = instantiate_model(cfg.model, vocab)
        # a task head counts: the objective is configured as the run would (packed text is not read: no tokenizer)
        data = self.datamodule.objective_context(model) if self.datamodule else ObjectiveContext(model=model)
        instantiate(cfg.objective).configure(data)
        finetune = instantiate(cfg.finetune)
        finetune.apply(model)
        hardware, notes = target_hardware(cfg)
        trainer = cfg.trainer
        estimate = estimate_on(
            hardware,
            model,
            finetune,
            rows,
            length,
            str(trainer.get("precision", "32-true")),
            int(trainer.get("accumulate_grad_batches") or 1),
            trainer.get("max_steps"),
            OmegaConf.select(cfg, "callbacks.compute.price_per_device_hour"),
            layout=parallel_layout(cfg, hardware.devices),
        )
        estimate["vocabulary"] = f"{vocab:,} from {source}"
        estimate["notes"] = [*notes, *filter(None, [shape, self.published_size(vocab)])]
        self.results.estimate = estimate
        self.results.status = "estimated"
        print(format_estimate(estimate))


def device_count(devices: Any, on_gpu: bool) -> int:
    """Processes per node as Lightning counts `trainer.devices`: a number, device ids (a list or "0,1"), or
    auto/-1: every visible GPU (one where none is visible), one CPU process."""
    if isinstance(devices, ListConfig | list | tuple):
        return len(devices)
    text = str(devices).strip()
    if "," in text:
        return len([d for d in text.split(",") if d.strip()])
    if text.isdigit() and int(text) > 0:
        return int(text)
    return max(1, torch.cuda.device_count()) if on_gpu else 1


def parallel_layout(cfg: DictConfig, devices: int) -> ParallelLayout | None:
    """How trainer=tp, fsdp_tp or pp split `devices` processes (None for other trainers)."""
    trainer = cfg.trainer
    if trainer.get("_target_") != TRAINER_TARGET:
        return None
    tensor, pipeline = int(trainer.get("tensor_parallel_size", 1)), int(trainer.get("pipeline_parallel_size", 1))
    data = max(1, devices // (tensor * pipeline))
    return ParallelLayout(
        tensor=tensor,
        pipeline=pipeline,
        data=data,
        sequence_parallel=bool(trainer.get("sequence_parallel", True)),
        microbatches=int(trainer.get("microbatches", 1)),
        schedule=str(trainer.get("pipeline_schedule", "1f1b")),
        fsdp=data > 1,
    )


def is_sharded(trainer: DictConfig, strategy: str) -> bool:
    """Whether the strategy shards the weights over the processes (FSDP, ZeRO stage 3)."""
    stage = trainer.strategy.get("stage") if isinstance(trainer.get("strategy"), DictConfig) else None
    return strategy in SHARDING or stage == 3


def target_hardware(cfg: DictConfig) -> tuple[Hardware, list[str]]:
    """The hardware to estimate on (see the module's docstring) and what the user should know about the choice."""
    trainer = cfg.trainer
    named = cfg.estimate if isinstance(cfg.estimate, str) else None
    accelerator = str(trainer.get("accelerator", "auto"))
    if named and accelerator not in ("auto", *GPU_ACCELERATORS):
        raise ConfigError(
            f"estimate={named} names a GPU but trainer.accelerator={accelerator}: add trainer=gpu, or use estimate=true"
        )
    on_gpu = accelerator in GPU_ACCELERATORS or (accelerator == "auto" and (named or torch.cuda.is_available()))
    devices = device_count(trainer.get("devices", 1), bool(on_gpu)) * int(trainer.get("num_nodes") or 1)
    shards = devices if is_sharded(trainer, strategy_name(cfg)) else 1
    precision = str(trainer.get("precision", "32-true"))
    if not on_gpu and accelerator not in ("cpu", "auto"):  # tpu, mps: no peak or memory known
        return Hardware(accelerator, None, f"no peak known for {accelerator} devices", None, devices, shards), []
    if not on_gpu:
        return local_hardware(torch.device("cpu"), precision, devices, shards, cfg.paths.cache_dir), []
    if named is None and torch.cuda.is_available():
        return local_hardware(torch.device("cuda", 0), precision, devices, shards), []
    gpu = find_gpu(named or DEFAULT_GPU)
    names = ", ".join(g.name for g in GPUS)
    if gpu is None:
        raise ConfigError(
            f"estimate={named} is not a GPU of the data sheets: name one of {names} "
            "(lightning_llm/training/peaks.py), or use estimate=true"
        )
    where = f"no GPU on this machine: estimated for {gpu.name.upper()}; estimate=<gpu> picks one of {names}"
    return gpu_hardware(gpu, precision, devices, shards), [] if named else [where]
