"""Knowledge distillation: a student learns a teacher's next-token distributions beside the ordinary loss.

`objective=distill` trains on packed text (next-token prediction), `objective=distill_sft` on (prompt, response)
pairs (the response tokens only). The teacher (`objective.teacher`, anything `model.pretrained` takes) shares the
student's tokenizer and architecture; it runs under no_grad in eval mode on the student's device. With p the
teacher's and q the student's softmax at temperature T, per scored position:

- `forward_kl`: KL(p || q) (GKD's beta = 0), `reverse_kl`: KL(q || p) (beta = 1),
- `jsd`: GKD's generalised Jensen-Shannon divergence, beta KL(p || m) + (1 - beta) KL(q || m) with
  m = beta p + (1 - beta) q (as TRL's `generalized_jsd_loss`),

averaged over the scored positions; the training loss is `ce_weight` x the ordinary loss + (1 - `ce_weight`) x the
divergence, and validation's `val/loss` is the ordinary loss alone (comparable with a run without a teacher).
Logged: `distill/divergence`, `distill/ce`. `cache_topk=k` keeps the teacher's top-k log-probabilities of each row
on disk (`TopKCache`), so later epochs read them instead of running the teacher; the divergence is then the forward
KL of the teacher's top k, renormalised.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lightning_llm.errors import ConfigError
from lightning_llm.files import atomic_path
from lightning_llm.objectives.base import IGNORE_INDEX, ObjectiveOutput, token_cross_entropy
from lightning_llm.objectives.clm import CausalLM
from lightning_llm.objectives.packing import model_inputs
from lightning_llm.objectives.sft import SupervisedFineTuning

LOSSES = ("forward_kl", "reverse_kl", "jsd")


def kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last dimension, from log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def divergence(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, loss: str, beta: float = 0.5, temperature: float = 1.0
) -> torch.Tensor:
    """The chosen divergence at each position (any leading shape), at `temperature`."""
    student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    if loss == "forward_kl":
        return kl(teacher, student)
    if loss == "reverse_kl":
        return kl(student, teacher)
    mixture = torch.logsumexp(torch.stack((student + math.log(1 - beta), teacher + math.log(beta))), dim=0)
    return beta * kl(teacher, mixture) + (1 - beta) * kl(student, mixture)


def topk_forward_kl(
    student_logits: torch.Tensor, teacher_logps: torch.Tensor, teacher_ids: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """KL(p_k || q) at each position, p_k being the teacher's top-k log-probabilities renormalised over those k."""
    student = F.log_softmax(student_logits.float() / temperature, dim=-1).gather(-1, teacher_ids.long())
    return kl(teacher_logps.float().log_softmax(-1), student)


class TopKCache:
    """The teacher's top-k log-probabilities at each scored position of a row, one file per row under `folder`
    (named by a digest of the row's token ids and labels; written atomically, read with weights_only)."""

    def __init__(self, folder: Path, k: int) -> None:
        self.folder, self.k = folder, k
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, ids: torch.Tensor, labels: torch.Tensor) -> Path:
        digest = hashlib.blake2b(ids.cpu().numpy().tobytes() + labels.cpu().numpy().tobytes(), digest_size=16)
        return self.folder / f"{digest.hexdigest()}.pt"

    def read(self, paths: list[Path], scored: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(log-probs, ids) of shape (batch, time, k) at the scored positions (zeros elsewhere), or None when a row
        is missing."""
        if not all(p.is_file() for p in paths):
            return None
        logps = torch.zeros(*scored.shape, self.k)
        ids = torch.zeros(*scored.shape, self.k, dtype=torch.long)
        for row, path in enumerate(paths):
            saved = torch.load(path, weights_only=True)
            logps[row, scored[row].cpu()] = saved["logps"].float()
            ids[row, scored[row].cpu()] = saved["ids"].long()
        return logps.to(scored.device), ids.to(scored.device)

    def write(self, paths: list[Path], scored: torch.Tensor, logps: torch.Tensor, ids: torch.Tensor) -> None:
        for row, path in enumerate(paths):
            keep = scored[row]
            with atomic_path(path) as tmp:
                torch.save({"logps": logps[row, keep].half().cpu(), "ids": ids[row, keep].int().cpu()}, tmp)


class DistillationMixin:
    """The teacher, the divergence and the loss; the objective it is mixed into collates and gives the logits
    (`logits(model, batch)`)."""

    def __init__(
        self,
        teacher: str | None = None,
        loss: str = "forward_kl",
        beta: float = 0.5,
        temperature: float = 1.0,
        ce_weight: float = 0.5,
        cache_topk: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ConfigError(f"objective.loss={loss!r} is not a distillation loss: use one of {', '.join(LOSSES)}")
        if not 0 < beta < 1 or temperature <= 0 or not 0 <= ce_weight <= 1:
            raise ConfigError(
                f"objective.beta={beta} must be in (0, 1), objective.temperature={temperature} > 0 and "
                f"objective.ce_weight={ce_weight} in [0, 1]"
            )
        if cache_topk and (loss != "forward_kl" or cache_topk < 1):
            raise ConfigError(
                f"objective.cache_topk={cache_topk} keeps the teacher's top k log-probabilities, from which only "
                "objective.loss=forward_kl is computed: use it, or cache_topk=0"
            )
        self.teacher_source, self.loss, self.beta, self.temperature = teacher, loss, beta, temperature
        self.ce_weight, self.cache_topk, self.cache_dir = ce_weight, cache_topk, cache_dir
        self.teacher: nn.Module | None = None
        self.cache: TopKCache | None = None

    def bind_teacher(self, teacher: nn.Module, fingerprint: str) -> None:
        """The teacher model; `fingerprint` names it (its file and settings) for the top-k cache's folder."""
        self.teacher = teacher.requires_grad_(False).eval()
        if self.cache_topk:
            key = hashlib.sha256(f"{fingerprint}-{self.temperature}-{self.cache_topk}".encode()).hexdigest()[:16]
            self.cache = TopKCache(Path(self.cache_dir or ".") / "teacher_topk" / key, self.cache_topk)

    def teacher_logits(self, batch: dict[str, torch.Tensor], width: int) -> torch.Tensor:
        """The teacher's logits on the student's batch (its vocabulary cut to the student's `width`)."""
        if self.teacher is None:
            raise RuntimeError("no teacher: bind_teacher comes first")
        device = batch["input_ids"].device
        with torch.no_grad():
            return self.logits(self.teacher.to(device), batch)[..., :width]

    def distillation(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The mean divergence over the scored positions."""
        scored = batch["labels"] != IGNORE_INDEX
        if self.cache is None:
            per_position = divergence(
                logits, self.teacher_logits(batch, logits.size(-1)), self.loss, self.beta, self.temperature
            )
            return per_position[scored].mean()
        paths = [self.cache.path(ids, labels) for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True)]
        cached = self.cache.read(paths, scored)
        if cached is None:
            teacher = F.log_softmax(self.teacher_logits(batch, logits.size(-1)).float() / self.temperature, dim=-1)
            values, ids = teacher.topk(self.cache_topk, dim=-1)
            cached = values.half().float(), ids  # as they are stored: later epochs compute the same loss
            self.cache.write(paths, scored, *cached)
        return topk_forward_kl(logits, *cached, self.temperature)[scored].mean()

    def distill_output(self, model: nn.Module, batch: dict[str, torch.Tensor], tokens: int) -> ObjectiveOutput:
        logits = self.logits(model, batch)
        ce = token_cross_entropy(logits, batch["labels"])
        kd = self.distillation(logits, batch)
        loss = self.ce_weight * ce + (1 - self.ce_weight) * kd if model.training else ce
        scalars = {"distill/divergence": kd.detach(), "distill/ce": ce.detach()}
        return ObjectiveOutput(loss, logits, batch["labels"], tokens, scalars)


class Distillation(DistillationMixin, CausalLM):
    """`objective=distill`: next-token prediction on packed text, with the teacher's distributions."""

    def logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(batch["input_ids"], **model_inputs(batch))

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        return self.distill_output(model, batch, batch["input_ids"].numel())


class SupervisedDistillation(DistillationMixin, SupervisedFineTuning):
    """`objective=distill_sft`: the response tokens of (prompt, response) pairs, with the teacher's distributions."""

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        return self.distill_output(model, batch, self.tokens_read(batch))
