"""What post-training objectives run beside the trained model: the reference model of DPO, KTO and GRPO (and GRPO's
rewards, on the training device), and a distillation teacher. The recipe loads the teacher with the pretrained
weights (`load_teacher`: a student without model.pretrained takes its tokenizer) and calls `prepare_objective` once
the model, its fine-tuning method and the trainer exist, before the first validation."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_llm.checkpoints import Pretrained, load_pretrained, model_from_pretrained
from lightning_llm.data.interface import LLMDataModule
from lightning_llm.finetune import FinetuneMethod
from lightning_llm.log import get_logger
from lightning_llm.models import LanguageModel
from lightning_llm.objectives import GRPO, DistillationMixin, Objective, Reference, ReferencedObjective

log = get_logger(__name__)


def frozen_reference(model: LanguageModel) -> Reference:
    """A frozen copy of `model` as it is now, run on the policy's device (moved there on first use)."""
    reference = copy.deepcopy(model).requires_grad_(False).eval()

    @contextmanager
    def frozen(policy: nn.Module) -> Iterator[nn.Module]:
        yield reference.to(next(policy.parameters()).device)

    return frozen


def reference_for(model: LanguageModel, finetune: FinetuneMethod) -> tuple[Reference, str]:
    """The reference of a preference objective and how it is made: the model with the method's modules switched off
    (LoRA, QLoRA, adapters, prompt tuning), else a frozen copy (full fine-tuning, freeze)."""
    if finetune.added is not None:
        return finetune.disabled, f"the model with its {finetune.name} modules switched off (no copy)"
    megabytes = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6
    return frozen_reference(model), f"a frozen copy of the model ({megabytes:,.1f} MB)"


def load_teacher(objective_settings: Any) -> Pretrained | None:
    """A distillation objective's teacher (`objective.teacher`), read like `model.pretrained` (None for others)."""
    source = objective_settings.get("teacher")
    return load_pretrained(source, key="objective.teacher") if source else None


def teacher_fingerprint(source: str) -> str:
    """The teacher's path and, for a local file or folder, its size and time: the top-k cache's folder changes
    when the teacher does."""
    path = Path(source).expanduser()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
    return "|".join(
        [str(path.resolve()) if files else source, *(f"{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)]
    )


def prepare_objective(
    objective: Objective,
    model: LanguageModel,
    finetune: FinetuneMethod,
    datamodule: LLMDataModule,
    device: torch.device,
    teacher: Pretrained | None = None,
) -> dict[str, Any]:
    """Bind a distillation objective's teacher, a preference objective's reference (or precompute its
    log-probabilities on `device`); returns what was done, for the run's record."""
    if isinstance(objective, DistillationMixin) and teacher is not None:
        objective.bind_teacher(model_from_pretrained(teacher), teacher_fingerprint(teacher.source))
        parameters = sum(p.numel() for p in objective.teacher.parameters())
        log.info("teacher: %s (%s, %s parameters)", teacher.source, teacher.family, f"{parameters:,}")
        return {"teacher": {"source": teacher.source, "family": teacher.family, "parameters": parameters}}
    if isinstance(objective, GRPO):
        return bind_grpo(objective, model, finetune, device)
    if not isinstance(objective, ReferencedObjective):
        return {}
    if not objective.precompute_reference:
        reference, how = reference_for(model, finetune)
        objective.bind_reference(reference)
        log.info("reference model: %s", how)
        return {"reference": how}
    home = next(model.parameters()).device
    examples = itertools.chain(datamodule.train_examples(), datamodule.val_examples())
    scored = objective.precompute_reference_logps(model.to(device), examples, datamodule.batch_size, device)
    model.to(home)
    log.info("reference model: log-probabilities of %d examples computed before training", scored)
    return {"reference": f"precomputed for {scored} examples"}


def bind_grpo(objective: GRPO, model: LanguageModel, finetune: FinetuneMethod, device: torch.device) -> dict[str, Any]:
    """GRPO's reference for its KL penalty (none when objective.kl_beta is 0) and its rewards on `device`."""
    for reward in objective.rewards:
        if hasattr(reward, "prepare"):
            reward.prepare(device)
    done: dict[str, Any] = {"rewards": {reward.name: reward.weight for reward in objective.rewards}}
    if not objective.kl_beta:
        log.info("reference model: none (objective.kl_beta=0)")
        return done | {"reference": "none (objective.kl_beta=0)"}
    reference, how = reference_for(model, finetune)
    objective.bind_reference(reference)
    log.info("reference model: %s", how)
    return done | {"reference": how}
