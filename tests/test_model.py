"""GPT model: causality, variants, generation, initialisation, optimizer groups and schedule."""

from __future__ import annotations

import pytest
import torch

from lightning_llm.errors import ConfigError
from lightning_llm.models import GPT, ModelConfig
from lightning_llm.models.generation import sample_next_token
from lightning_llm.training.optim import parameter_groups, warmup_cosine

VARIANTS = {
    "gpt2": {},
    "llama": dict(
        positions="rope", norm="rmsnorm", activation="silu", gated=True, n_kv_head=1, bias=False, tie_embeddings=False
    ),
}


def tiny(**kwargs) -> GPT:
    torch.manual_seed(0)
    return GPT(vocab_size=97, block_size=24, n_layer=2, n_head=4, n_embd=32, **kwargs).eval()


@pytest.mark.parametrize("variant", VARIANTS)
def test_future_tokens_do_not_change_past_outputs(variant):
    model = tiny(**VARIANTS[variant])
    x = torch.randint(0, 97, (2, 20))
    y = x.clone()
    y[:, 12:] = (y[:, 12:] + 1) % 97
    a, b = model(x), model(y)
    torch.testing.assert_close(a[:, :12], b[:, :12])
    assert not torch.allclose(a[:, 12:], b[:, 12:])


def test_weight_tying_and_parameter_count():
    model = tiny()
    assert model.lm_head.weight is model.wte.weight
    assert model.num_parameters() == sum(p.numel() for p in model.parameters())
    untied = tiny(tie_embeddings=False)
    assert untied.num_parameters() == model.num_parameters() + 97 * 32


def test_residual_projections_have_scaled_init():
    model = GPT(vocab_size=1000, block_size=16, n_layer=8, n_head=4, n_embd=256)
    assert model.blocks[0].attn.proj.weight.std().item() == pytest.approx(0.02 / 4, rel=0.1)
    assert model.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_bad_shapes_name_the_key():
    with pytest.raises(ConfigError, match="model.n_embd=30 is not divisible by model.n_head=4"):
        ModelConfig(n_embd=30, n_head=4)
    with pytest.raises(ConfigError, match="model.depth is not an option of the model"):
        GPT(depth=3)
    with pytest.raises(ConfigError, match="model.norm='batchnorm'"):
        ModelConfig(norm="batchnorm")


def test_generate_length_and_determinism():
    model = tiny()
    prompt = torch.tensor([[5, 6, 7]])
    a = model.generate(prompt, 30, temperature=1.0, top_k=20, generator=torch.Generator().manual_seed(1))
    b = model.generate(prompt, 30, temperature=1.0, top_k=20, generator=torch.Generator().manual_seed(1))
    c = model.generate(prompt, 30, temperature=1.0, top_k=20, generator=torch.Generator().manual_seed(2))
    assert a.shape == (1, 33) and torch.equal(a[:, :3], prompt)
    assert torch.equal(a, b) and not torch.equal(a, c)
    greedy = model.generate(prompt, 5, temperature=0)
    assert torch.equal(greedy, model.generate(prompt, 5, temperature=0))
    assert model.generate(prompt, 40).shape == (1, 43), "generation slides past block_size"


def test_top_k_and_top_p_filter():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])
    g = torch.Generator().manual_seed(0)
    top1 = {sample_next_token(logits, 1.0, top_k=1, generator=g).item() for _ in range(50)}
    assert top1 == {0}
    probs = logits.softmax(-1)[0]  # 0.64, 0.24, 0.09, ...: top_p=0.8 keeps the first two
    assert probs[0] < 0.8 < probs[:2].sum()
    nucleus = {sample_next_token(logits, 1.0, top_p=0.8, generator=g).item() for _ in range(200)}
    assert nucleus == {0, 1}


def test_no_weight_decay_on_norms_biases_embeddings():
    model = tiny(tie_embeddings=True)
    decay, no_decay = parameter_groups(model)
    assert "weight_decay" not in decay and no_decay["weight_decay"] == 0.0
    decayed = {id(p) for p in decay["params"]}
    assert id(model.wte.weight) not in decayed and id(model.wpe.weight) not in decayed
    assert id(model.blocks[0].norm_attn.weight) not in decayed and id(model.blocks[0].attn.qkv.bias) not in decayed
    assert id(model.blocks[0].attn.qkv.weight) in decayed
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    decay, no_decay = parameter_groups(model, decay_embeddings=True)  # nanoGPT's rule: every matrix
    decayed = {id(p) for p in decay["params"]}
    assert id(model.wte.weight) in decayed and id(model.wpe.weight) in decayed
    assert id(model.blocks[0].norm_attn.weight) not in decayed


def test_warmup_cosine_schedule():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine(opt, total_steps=110, warmup_steps=10, min_lr_ratio=0.1)
    lrs = []
    for _ in range(110):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.55, abs=0.01)
    assert lrs[-1] == pytest.approx(0.1, abs=0.01)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
