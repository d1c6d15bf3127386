"""Checks of the post-training objectives (preference tuning, reward models, distillation) against the rest of the
config, before anything loads: one line each, naming the key and the fix."""

from __future__ import annotations

import hydra.utils
from omegaconf import DictConfig, OmegaConf

from lightning_llm.checkpoints import describe_pretrained, is_hf_source, read_checkpoint
from lightning_llm.errors import ConfigError
from lightning_llm.models import Family, get_family
from lightning_llm.objectives import GRPO, DistillationMixin, PreferenceObjective, RewardModel
from lightning_llm.tokenizers import HFTokenizer, Tokenizer, tokenizer_from_bytes

#: Text both tokenizers of a distillation run must encode alike (prose, code, digits, whitespace, non-ASCII)
PROBE = (
    "The quick brown fox jumps over the lazy dog.\n\tdef f(x, y=2):\n        return x ** y  # 3.14159, 1e-5\n"
    "Gr\u00fc\u00dfe, na\u00efve caf\u00e9 \u2014 \u00bfqu\u00e9? \u4f60\u597d <s></s> [] {} 0123456789"
)


def post_training_objectives() -> tuple[type, ...]:
    """The objectives whose loss needs more than the model's token logits and labels."""
    return (PreferenceObjective, RewardModel, DistillationMixin, GRPO)


def check_post_training(cfg: DictConfig, student: Family) -> None:
    """A preference objective adapts a model that already answers; none of these objectives runs under DP-SGD
    (a pair's loss couples two rows, whose gradients Opacus clips one by one) or pipeline parallel (the stages
    compute the token loss only); a distillation teacher fits the `student` family's model; chat data trains a
    decoder."""
    if cfg.data.get("messages_column") and student.architecture != "decoder":
        raise ConfigError(
            f"data.messages_column trains a decoder on whole conversations and family '{student.name}' is an "
            f"{student.architecture} model: give it (prompt, response) pairs with data.response_column"
        )
    objective_cls = hydra.utils.get_class(cfg.objective._target_)
    if not issubclass(objective_cls, post_training_objectives()):
        return
    name = cfg.objective._target_.rsplit(".", 1)[-1]
    if issubclass(objective_cls, PreferenceObjective | GRPO) and not cfg.model.get("pretrained"):
        raise ConfigError(
            f"objective {name} tunes a model that already answers and model.pretrained is not set: give "
            "model.pretrained=<an SFT run, .ckpt or Hugging Face folder>"
        )
    if "_target_" in (cfg.get("privacy") or {}):
        raise ConfigError(
            f"privacy=dp cannot train objective {name}: its loss couples rows (a pair, a teacher's row), and DP-SGD "
            "clips each row's gradient alone; use privacy=none"
        )
    if int(OmegaConf.select(cfg, "trainer.pipeline_parallel_size", default=1) or 1) > 1:
        raise ConfigError(
            f"trainer=pp computes the stages' token loss, not objective {name}'s: use trainer=fsdp, tp or ddp"
        )
    if issubclass(objective_cls, DistillationMixin):
        check_teacher(cfg, student)
    if issubclass(objective_cls, GRPO):
        check_grpo(cfg)


#: Strategies under which every process holds the whole model, so that each generates on its own
REPLICATED = ("auto", "single_device", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "DDPStrategy")


def check_grpo(cfg: DictConfig) -> None:
    """GRPO generates inside the training step: the completions must fit the context, and each process must hold
    the whole model (under FSDP, tensor or pipeline parallel a forward waits on the other ranks, whose generations
    end at other steps)."""
    new, block = int(cfg.objective.get("max_new_tokens", 16)), int(cfg.model.block_size)
    if new >= block:
        raise ConfigError(
            f"objective.max_new_tokens={new} leaves no room for a prompt in model.block_size={block}: lower it"
        )
    strategy = cfg.trainer.get("strategy", "auto")
    name = strategy.get("_target_", "").rsplit(".", 1)[-1] if isinstance(strategy, DictConfig) else str(strategy)
    if name not in REPLICATED:
        raise ConfigError(
            f"objective=grpo generates in the training step, which trainer.strategy={name} cannot (a sharded "
            "model's forward waits on ranks whose generations end elsewhere): use trainer=ddp or one device"
        )


def pretrained_tokenizer(source: str, key: str) -> Tokenizer | None:
    """The tokenizer a checkpoint carries (ours: in the file; a Hugging Face folder: its tokenizer files)."""
    if is_hf_source(source):
        return HFTokenizer.from_pretrained(source)
    data = read_checkpoint(source, key).get("tokenizer")
    return tokenizer_from_bytes(data) if data else None


def same_tokenizer(a: Tokenizer, b: Tokenizer) -> bool:
    """Whether two tokenizers give the same ids: vocabulary size, special ids and the ids of PROBE."""
    specials = ("pad_id", "unk_id", "bos_id", "eos_id")
    return (
        a.vocab_size == b.vocab_size
        and all(getattr(a, s) == getattr(b, s) for s in specials)
        and a.encode(PROBE) == b.encode(PROBE)
    )


def check_teacher(cfg: DictConfig, student: Family) -> None:
    """A distillation teacher exists, is of the student's architecture (its logits align position by position)
    and shares its tokenizer (the same ids for the same text)."""
    teacher = cfg.objective.get("teacher")
    if not teacher:
        raise ConfigError(
            "objective.teacher is not set: give the teacher as a run folder, .ckpt or Hugging Face folder"
        )
    if not is_hf_source(teacher):
        read_checkpoint(teacher, "objective.teacher")  # a missing or foreign file, named as the teacher
    family, config = describe_pretrained(teacher)
    if get_family(family).model_class.architecture != student.architecture:
        raise ConfigError(
            f"objective.teacher={teacher!r} is a '{family}' model and the student a '{student.name}' one: a teacher "
            f"and its student must both be {student.architecture} models, whose logits align token by token"
        )
    source = cfg.model.get("pretrained")
    if not source:
        return  # the student takes the teacher's tokenizer
    mine, theirs = pretrained_tokenizer(source, "model.pretrained"), pretrained_tokenizer(teacher, "objective.teacher")
    if mine is None or theirs is None or not same_tokenizer(mine, theirs) or config["vocab_size"] < mine.vocab_size:
        raise ConfigError(
            f"objective.teacher={teacher!r} does not share the student's tokenizer (model.pretrained={source!r}): "
            "distillation compares their distributions token by token; use a teacher trained with the same tokenizer"
        )
