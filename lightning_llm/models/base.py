"""The model-side interface: what every family's model offers the rest of the project.

Objectives, fine-tuning methods, strategies and evaluation use these names instead of a family's name or its
attribute layout; a new family subclasses `LanguageModel` and fills them in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import nn

from lightning_llm.models.blocks import ModelConfig

if TYPE_CHECKING:  # torch.distributed.tensor takes a second and a half to import: only tensor parallel needs it
    from lightning_llm.models.parallel import TensorParallelPlan

Architecture = Literal["decoder", "encoder", "encoder-decoder"]


class LanguageModel(nn.Module):
    """Base of every family's model.

    Seams: `prefix` (a module that prepends embeddings, e.g. prompt tuning's virtual tokens; its outputs are
    dropped) and `task_head` (a downstream head, e.g. classification, trained under every fine-tuning method).
    """

    family: ClassVar[str]  # the registry name, recorded in checkpoints
    architecture: ClassVar[Architecture]  # decoder-only, encoder-only, or encoder-decoder
    defaults: ClassVar[dict[str, Any]] = {}  # ModelConfig values the family uses unless told otherwise
    #: `forward`/`encode` take `document_ids` and `position_ids`, so packed documents never attend to each other
    document_masks: ClassVar[bool] = False
    #: `forward` takes `logits_at` (batch, time) bool: the LM head runs only there and the logits come back
    #: (selected positions, vocab), as a loss read at a few positions (SFT's responses) wants
    selects_logits: ClassVar[bool] = False

    def __init__(self, config: ModelConfig | None = None, **kwargs: Any) -> None:
        super().__init__()
        self.config = config or ModelConfig.from_kwargs({**self.defaults, **kwargs})
        self.activation_checkpointing = False  # set from the model config's memory switch
        self.prefix: nn.Module | None = None
        self.task_head: nn.Module | None = None

    # -- structure -----------------------------------------------------------------------------------
    def layer_stacks(self) -> list[nn.ModuleList]:
        """The stacks of transformer blocks (one for decoders and encoders; encoder and decoder for T5):
        what fine-tuning selects layers from, FSDP shards, and QLoRA quantizes."""
        raise NotImplementedError

    def tensor_parallel_plan(self, sequence_parallel: bool) -> TensorParallelPlan | None:
        """How this family's weights split over tensor-parallel ranks: module path -> style (`models.parallel`
        has the shared blocks' plan and the styles). None: the family has none, and tensor parallel is refused."""
        return None

    def pipeline_stages(self, n: int) -> list[nn.Module] | None:
        """The model cut into `n` pipeline stages (`models.pipeline`): the first takes token ids, each passes its
        hidden states on, the last gives the logits `forward` gives for every position. None: the family cannot
        be cut (pipeline parallel is refused)."""
        return None

    def input_embeddings(self) -> nn.Embedding:
        """The token embedding table."""
        return self.wte

    # -- the prefix seam -------------------------------------------------------------------------------
    def attach_prefix(self, prefix: nn.Module) -> None:
        """Install a module that maps token embeddings (batch, time, dim) to longer ones (prefix first)."""
        self.prefix = prefix

    @property
    def prefix_length(self) -> int:
        """Positions the prefix takes in front of every sequence (0 without one)."""
        return int(getattr(self.prefix, "length", 0)) if self.prefix is not None else 0

    @property
    def context_length(self) -> int:
        """Tokens a sequence may hold once the prefix has taken its positions."""
        return self.config.block_size - self.prefix_length

    def positions(
        self,
        position_ids: torch.Tensor | None,
        past: int,
        steps: int,
        n_prefix: int,
        batch: int,
        device: torch.device,
    ) -> torch.Tensor:
        """Absolute positions of the `steps` positions after `past` cached ones: `position_ids` (of the tokens:
        left-padded rows, documents packed in a row) are shifted past any prefix, which takes positions
        0..n_prefix-1. One row per batch row (per-sample gradients, as DP-SGD takes them, need the batch axis)."""
        if position_ids is None:
            return torch.arange(past, past + steps, device=device)[None].expand(batch, -1)
        positions = position_ids.to(device) + self.prefix_length
        if n_prefix:
            prefix = torch.arange(n_prefix, device=device)[None].expand(batch, -1)
            positions = torch.cat((prefix, positions), dim=1)
        return positions

    # -- the task-head seam ----------------------------------------------------------------------------
    def attach_task_head(self, num_classes: int) -> nn.Linear:
        """A fresh classification head over `classification_features`."""
        head = nn.Linear(self.config.n_embd, num_classes)
        nn.init.normal_(head.weight, std=0.02)
        nn.init.zeros_(head.bias)
        self.task_head = head.to(self.input_embeddings().weight.device)
        return head

    def classification_features(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """One vector per sequence (batch, n_embd) from `encode`'s hidden states, for a task head."""
        raise NotImplementedError(f"{type(self).__name__} has no classification features")

    # -- what the model computes -----------------------------------------------------------------------
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Final hidden states (batch, time, n_embd); `attention_mask` 1 = real token, 0 = padding."""
        raise NotImplementedError

    def num_parameters(self, exclude_embeddings: bool = False, frozen_only: bool = False) -> int:
        """Parameter count (tied weights once; a 4-bit packed weight by its unpacked shape); optionally without
        the position table, as MFU wants, or only those that get no gradient (frozen layers, a LoRA base)."""
        counted = [p for p in self.parameters() if not (frozen_only and p.requires_grad)]
        n = sum(
            torch.Size(p.quant_state.shape).numel() if getattr(p, "quant_state", None) is not None else p.numel()
            for p in counted
        )
        positions = getattr(self, "wpe", None)
        if exclude_embeddings and positions is not None and any(p is positions.weight for p in counted):
            n -= positions.weight.numel()
        return n

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token (PaLM appendix B): the forward pass (2N) and the gradients of the activations
        (2N) through every weight, the gradients of the weights (2N) only for those that train, so 6N when all
        do and about 4N for LoRA; plus 12·L·d·T for attention."""
        layers = sum(len(stack) for stack in self.layer_stacks())
        weights = 6 * self.num_parameters(exclude_embeddings=True)
        frozen = 2 * self.num_parameters(exclude_embeddings=True, frozen_only=True)
        return weights - frozen + 12 * layers * self.config.n_embd * seq_len
