"""Checkpoints: safe reading and atomic writing, pretrained weights (ours, PEFT + base, Hugging Face), merging."""

from lightning_llm.checkpoints.io import (
    AtomicCheckpointIO,
    load_torch_file,
    read_training_checkpoint,
    remove_stale_temporaries,
)
from lightning_llm.checkpoints.merge import merge_checkpoint
from lightning_llm.checkpoints.pretrained import (
    MODEL_PREFIX,
    Pretrained,
    build_model,
    describe_pretrained,
    is_hf_source,
    load_pretrained,
    load_weights,
    model_from_pretrained,
    read_checkpoint,
    resolve_checkpoint_path,
)

__all__ = [
    "MODEL_PREFIX",
    "AtomicCheckpointIO",
    "Pretrained",
    "build_model",
    "describe_pretrained",
    "is_hf_source",
    "load_pretrained",
    "load_torch_file",
    "load_weights",
    "model_from_pretrained",
    "merge_checkpoint",
    "read_checkpoint",
    "read_training_checkpoint",
    "remove_stale_temporaries",
    "resolve_checkpoint_path",
]
