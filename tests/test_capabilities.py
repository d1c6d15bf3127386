"""Refusals follow what a fine-tuning method or strategy is (its flags and classes), not how it is spelled."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest

from lightning_llm.errors import ConfigError
from lightning_llm.finetune import LoRA, PromptTuning
from lightning_llm.recipe.checks import check_privacy, check_strategy
from lightning_llm.training.parallel_checks import check_model_parallel


@dataclass
class PackedLoRA(LoRA):
    """A method named neither qlora nor QLoRA whose base weights are packed."""

    name: ClassVar[str] = "packed_lora"
    quantized_base: ClassVar[bool] = True


PACKED = "finetune._target_=tests.test_capabilities.PackedLoRA"


def test_a_quantized_base_is_refused_by_its_flag(make_cfg):
    check_strategy(make_cfg("finetune=lora", "trainer=fsdp"))  # plain LoRA shards
    with pytest.raises(ConfigError, match="cannot run under trainer=fsdp: FSDP cannot shard"):
        check_strategy(make_cfg("finetune=lora", PACKED, "trainer=fsdp"))
    check_strategy(make_cfg("finetune=lora", PACKED, "trainer=ddp"))  # replicated: fine
    with pytest.raises(ConfigError, match=r"\(4-bit base weights\)"):
        check_privacy(make_cfg("finetune=lora", PACKED, "privacy=dp"))


@dataclass
class SoftPrefix(PromptTuning):
    """Prompt tuning under another name: it still prepends virtual tokens."""

    name: ClassVar[str] = "soft_prefix"


def test_a_method_that_prepends_tokens_is_refused_under_pipeline_parallel_by_its_flag(make_cfg):
    pipeline = ["trainer=pp", "model=llama-nano", "model.n_kv_head=1"]
    with pytest.raises(ConfigError, match="finetune=soft_prefix prepends virtual tokens"):
        renamed = "finetune._target_=tests.test_capabilities.SoftPrefix"
        check_model_parallel(make_cfg(*pipeline, "finetune=prompt", renamed))
    check_model_parallel(make_cfg(*pipeline, "finetune=lora"))
