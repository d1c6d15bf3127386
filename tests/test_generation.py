"""Generation: the KV cache gives the same tokens as recomputing everything (every family option), a padded batch
the same as one prompt at a time, sampling settings do what they say."""

from __future__ import annotations

import pytest
import torch

from lightning_llm.finetune import PromptTuning
from lightning_llm.models import GPT, T5
from lightning_llm.models.generation import penalize_repeats

VARIANTS = {
    "gpt2": {},
    "llama-gqa": dict(positions="rope", norm="rmsnorm", activation="silu", gated=True, n_kv_head=1, bias=False),
}


def tiny_gpt(**kwargs) -> GPT:
    torch.manual_seed(0)
    return GPT(vocab_size=50, block_size=24, n_layer=2, n_head=2, n_embd=32, **kwargs).eval()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("prefix", [False, True], ids=["plain", "prompt-prefix"])
def test_cached_and_uncached_greedy_tokens_are_equal(variant, prefix):
    model = tiny_gpt(**VARIANTS[variant])
    if prefix:
        PromptTuning(num_virtual_tokens=3).apply(model)
    prompt = torch.randint(4, 50, (2, 6), generator=torch.Generator().manual_seed(1))
    # 30 new tokens run past the 24-token context: both paths slide a window there
    cached = model.generate(prompt, 30, temperature=0, use_cache=True)
    uncached = model.generate(prompt, 30, temperature=0, use_cache=False)
    assert torch.equal(cached, uncached)
    assert cached.shape == (2, 36)


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_left_padded_batch_generates_what_each_prompt_does_alone(variant):
    model = tiny_gpt(**VARIANTS[variant])
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12, 13]]
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    for use_cache in (True, False):
        batch = model.generate(ids, 8, attention_mask=mask, temperature=0, use_cache=use_cache)[:, width:]
        for row, prompt in zip(batch, prompts, strict=True):
            alone = model.generate(torch.tensor([prompt]), 8, temperature=0)[0, len(prompt) :]
            assert torch.equal(row, alone), (use_cache, prompt)


def test_t5_cached_and_uncached_decoding_are_equal():
    torch.manual_seed(0)
    model = T5(vocab_size=50, block_size=24, n_layer=2, n_head=2, n_embd=32).eval()
    ids = torch.randint(4, 50, (2, 9), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    cached = model.generate(ids, 12, attention_mask=mask, temperature=0, use_cache=True)
    uncached = model.generate(ids, 12, attention_mask=mask, temperature=0, use_cache=False)
    assert torch.equal(cached, uncached) and cached.shape == (2, 12)


def test_the_cache_makes_each_new_token_cost_one_position():
    model = tiny_gpt()
    seen = []
    model.blocks[0].attn.register_forward_hook(lambda module, args, out: seen.append(args[0].size(1)))
    model.generate(torch.randint(4, 50, (1, 5)), 4, temperature=0, use_cache=True)
    assert seen == [5, 1, 1, 1], "the prompt once, then one position per new token"


def test_eos_ends_a_row_and_sampling_is_seeded():
    model = tiny_gpt()
    prompt = torch.randint(4, 50, (3, 4), generator=torch.Generator().manual_seed(3))
    first = model.generate(prompt, 10, temperature=0)[:, 4]
    out = model.generate(prompt, 10, temperature=0, eos_id=int(first[0]))[:, 4:]
    assert (out[0] == first[0]).all(), "after eos a row keeps eos"
    a = model.generate(prompt, 10, temperature=1.0, top_k=10, generator=torch.Generator().manual_seed(7))
    b = model.generate(prompt, 10, temperature=1.0, top_k=10, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_repetition_penalty_matches_its_definition():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    out = penalize_repeats(logits, torch.tensor([[0, 1]]), 2.0)
    assert out.tolist() == [[1.0, -2.0, 0.5, 3.0]]
