"""The project's logger: progress messages from rank 0 only, into Hydra's run log and the console.

Hydra configures the root logger for every job (console plus `<run>/train.log`); our messages go through
`logging.getLogger("lightning_llm")`, so they land in both. A filter drops records from ranks other than 0
(LOCAL_RANK/RANK set by Lightning's launchers, torchrun and SLURM), so a two-process run says each thing once.
"""

from __future__ import annotations

import logging
import os


def process_rank() -> int:
    """This process's global rank as the launchers set it (0 when not distributed)."""
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        value = os.environ.get(name)
        if value is not None and value.isdigit():
            return int(value)
    return 0


class RankZeroFilter(logging.Filter):
    """Let only rank 0's records through."""

    def filter(self, record: logging.LogRecord) -> bool:
        return process_rank() == 0


def count_batches(count: int) -> str:
    """A count of batches as a log line says it: 1 batch, 2 batches."""
    return f"{count} batch" + ("" if count == 1 else "es")


def get_logger(name: str) -> logging.Logger:
    """A logger under `lightning_llm` whose records come from rank 0 only."""
    logger = logging.getLogger(name if name.startswith("lightning_llm") else f"lightning_llm.{name}")
    root = logging.getLogger("lightning_llm")
    if not any(isinstance(f, RankZeroFilter) for f in root.filters):
        root.addFilter(RankZeroFilter())
        root.setLevel(logging.INFO)
    if not any(isinstance(f, RankZeroFilter) for f in logger.filters):
        logger.addFilter(RankZeroFilter())
    return logger


#: Warnings a user can do nothing about, each with why it is harmless here.
KNOWN_HARMLESS_WARNINGS = (
    # Lightning's pytree helper calls a torch API torch 2.13 deprecated: nothing for a user to change
    r".*isinstance\(treespec, LeafSpec\).*",
    # Lightning cannot see that our ResumableSampler restores the data position: the resume is exact (tested)
    r".*your dataloader is not resumable.*",
    # resuming into the run's own folder is by design; our CSV logger keeps the rows before the checkpoint
    r".*Checkpoint directory .* exists and is not empty.*",
    r".*Experiment logs directory .* exists and is not empty.*",
    # a CPU process with num_workers=0 is the fast setting for packed token blocks in memory
    r".*does not have many workers.*",
    # under DDP each rank reads its own part through Lightning's DistributedSampler, as intended
    r".*DistributedSampler.*",
    # deprecations inside torch.distributed and Lightning that no config can change
    r".*all_gather.*deprecated.*",
    r".*`all_gather_object`.*",
    # bitsandbytes' int8 matmul computes in fp16 by design (LLM.int8): said on every call
    r".*MatMul8bitLt: inputs will be cast.*",
    # the model summary cannot count FLOPs of a bf16 model on CPU; the count is ours (flops_per_token)
    r".*(FLOPs|flop counter|FlopCounterMode).*",
    # LitData's StreamingDataset (data.format=shards) splits its blocks over workers and ranks itself
    r".*`IterableDataset` has `__len__` defined.*",
    # Opacus's hooks (privacy=dp) fire on module outputs when the first layer's inputs are token ids: expected
    r".*Full backward hook is firing when gradients are computed with respect.*",
)
#: Loggers of other libraries set to a higher level, each with why.
QUIET_LOGGERS = {
    # LitData's per-dataset cache and mmap notes at INFO
    "litdata": logging.WARNING,
    # bitsandbytes tries to fetch a faster CPU 4-bit kernel from the Hub when it is imported and warns when that
    # fails (offline, or no `kernels` package); its own CPU kernel then runs: said on every quantized call
    "bitsandbytes.backends.cpu.ops": logging.ERROR,
    # ... and the `kernels` package says offline that it skipped the kernel's publisher check (it then finds no
    # cached kernel and bitsandbytes uses its own; no remote code runs)
    "kernels": logging.ERROR,
}
#: Log lines of other libraries that are advertisements or say nothing (matched on the message).
KNOWN_NOISE = ("litlogger", "was configured so 100% of the batches will be used", "anonymous setting")


class DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not any(noise in message for noise in KNOWN_NOISE)


def quiet_known_noise() -> None:
    """Filter the known-harmless warnings and log lines, in one place (see the reasons above), and make
    Lightning's log lines go through the root handlers once (console and train.log) instead of twice."""
    import warnings

    for pattern in KNOWN_HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    if logging.getLogger().handlers:
        logging.getLogger("lightning").handlers.clear()  # lightning/__init__ adds its own console handler
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "wandb"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropNoise) for f in logger.filters):
            logger.addFilter(DropNoise())
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    import tqdm

    # tqdm's monitor thread wakes every 10 s and takes tqdm's lock: no thread of ours may hold a lock while
    # DataLoader workers or DDP processes fork (a hang after training came from such a thread)
    tqdm.tqdm.monitor_interval = 0
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, DropNoise) for f in handler.filters):
            handler.addFilter(DropNoise())
