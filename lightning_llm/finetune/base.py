"""The fine-tuning interface: a method transforms a model and says which of its weights train.

Every method is one small module with the same verbs (as NeMo's `peft_scheme` switch): `apply` (transform +
freeze), `trainable_state_dict` (what a checkpoint must keep), `load_trainable` and `merge` (fold the trained
part into plain weights, where that makes sense). A method is a dataclass of its settings, so a checkpoint can
record it as plain data (`describe`) and rebuild it without running code from the file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from fnmatch import fnmatch
from typing import Any, ClassVar

import torch
from torch import nn

from lightning_llm.errors import ConfigError
from lightning_llm.models import LanguageModel


class FinetuneMethod:
    """Base of the methods; subclasses are dataclasses whose fields are the method's settings."""

    name: ClassVar[str]
    #: Whether checkpoints keep only the trained weights (plus a reference to the base checkpoint).
    saves_trainable_only: ClassVar[bool] = False
    #: Whether the method adapts a pretrained model (every method but `none`, which trains from scratch).
    adapts_pretrained: ClassVar[bool] = True
    #: Whether `merge` folds it into plain weights (adapters and prompts stay modules of their own).
    mergeable: ClassVar[bool] = True
    #: The kind of module the method adds beside the base weights (LoRA layers, adapters, virtual tokens): each has
    #: an `enabled` switch, so `disabled` turns the model back into its base. None: the method changes the weights.
    added: ClassVar[type[nn.Module] | None] = None
    #: Whether the frozen base weights are packed (4- or 8-bit): they cannot be sharded (FSDP), split (tensor
    #: parallel), moved between pipeline stages or given per-sample gradients (DP-SGD).
    quantized_base: ClassVar[bool] = False
    #: Whether the method prepends embeddings to every sequence (the model's `prefix` seam): the stages after a
    #: pipeline's first would not know of them.
    prepends_tokens: ClassVar[bool] = False

    def apply(self, model: LanguageModel) -> LanguageModel:
        """Transform `model` in place (add modules, freeze weights) and return it."""
        return model

    def trainable_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The weights this method trains, by state-dict key."""
        trainable = {name for name, p in model.named_parameters() if p.requires_grad}
        return {k: v for k, v in model.state_dict().items() if k in trainable}

    def load_trainable(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Load weights saved by `trainable_state_dict` into an applied model."""
        missing = set(self.trainable_state_dict(model)) - set(state)
        if missing:
            raise ConfigError(
                f"the checkpoint lacks {len(missing)} trained weights of finetune={self.name}, "
                f"e.g. {sorted(missing)[0]}: was it written by another finetune method?"
            )
        model.load_state_dict(state, strict=False)

    def merge(self, model: nn.Module) -> nn.Module:
        """Fold added weights into the base so the model is plain again (a no-op unless the method adds any)."""
        return model

    @contextmanager
    def disabled(self, model: nn.Module) -> Iterator[nn.Module]:
        """`model` as its base within the context: every module the method added is switched off (a preference
        objective's reference model, without a second copy of the weights)."""
        if self.added is None:
            raise TypeError(f"finetune={self.name} adds no modules to switch off: its base needs a copy of its own")
        added = [module for module in model.modules() if isinstance(module, self.added)]
        for module in added:
            module.enabled = False
        try:
            yield model
        finally:
            for module in added:
                module.enabled = True

    def describe(self) -> dict[str, Any]:
        """The method as plain data: `{"method": name, "settings": {...}}` (what checkpoints record)."""
        return {"method": self.name, "settings": dataclasses.asdict(self) if dataclasses.is_dataclass(self) else {}}


@dataclasses.dataclass
class NoFinetuning(FinetuneMethod):
    """Pretraining from scratch, or continued pretraining of every weight: nothing is frozen or added."""

    name: ClassVar[str] = "none"
    adapts_pretrained: ClassVar[bool] = False


def freeze_all_but_task_head(model: LanguageModel) -> None:
    """Freeze every weight except those of the model's task head, if it has one."""
    model.requires_grad_(False)
    if model.task_head is not None:
        model.task_head.requires_grad_(True)


def matching_linears(model: LanguageModel, patterns: list[str]) -> list[tuple[str, nn.Linear]]:
    """Linear layers whose qualified name matches any glob pattern (e.g. `*attn.qkv`), task heads excluded."""
    head = set(map(id, model.task_head.modules())) if model.task_head is not None else set()
    found = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and id(module) not in head and any(fnmatch(name, p) for p in patterns)
    ]
    if not found:
        raise ConfigError(
            f"finetune.target_modules={patterns} matches no linear layer of this {type(model).__name__}: "
            "use patterns such as '*attn.qkv' or '*mlp.fc'"
        )
    return found


def replace_module(model: nn.Module, qualified_name: str, new: nn.Module) -> None:
    """Swap the submodule at `qualified_name` (dotted path) for `new`."""
    parent_name, _, child = qualified_name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def count_parameters(model: nn.Module) -> dict[str, float]:
    """Total and trainable parameter counts (tied weights once) and the trainable share in percent."""
    params = list(model.parameters())
    total = sum(_numel(p) for p in params)
    trainable = sum(_numel(p) for p in params if p.requires_grad)
    return {"total": total, "trainable": trainable, "trainable_percent": round(100 * trainable / max(1, total), 4)}


def _numel(param: torch.Tensor) -> int:
    """Logical element count: a 4-bit packed weight counts its unpacked elements."""
    quant_state = getattr(param, "quant_state", None)
    return int(torch.Size(quant_state.shape).numel()) if quant_state is not None else param.numel()
