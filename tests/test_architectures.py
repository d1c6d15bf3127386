"""BERT + masked LM and T5 + span corruption beside GPT + causal LM: masks, masking, spans, training."""

from __future__ import annotations

import pytest
import torch

from lightning_llm.models import BERT, GPT, T5
from lightning_llm.objectives import IGNORE_INDEX, MaskedLM, ObjectiveContext, SpanCorruption
from lightning_llm.objectives.span import input_and_target_lengths, random_spans_noise_mask
from lightning_llm.recipe import train
from lightning_llm.tokenizers import CharTokenizer

SMALL = dict(vocab_size=120, block_size=32, n_layer=2, n_head=4, n_embd=32)


def _models():
    torch.manual_seed(0)
    return {
        "gpt": GPT(**SMALL).eval(),
        "llama": GPT(**SMALL, positions="rope", norm="rmsnorm", activation="silu", gated=True, n_kv_head=2).eval(),
        "bert": BERT(**SMALL).eval(),
        "t5": T5(**SMALL).eval(),
    }


def _outputs(name: str, model, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    if name == "t5":
        return model.encode(ids, mask)
    if name == "bert":
        return model.encode(ids, mask)
    return model(ids, mask)


@pytest.mark.parametrize(("name", "bidirectional"), [("gpt", False), ("llama", False), ("bert", True), ("t5", True)])
def test_future_tokens_reach_encoders_only(name, bidirectional):
    model = _models()[name]
    x = torch.randint(5, 120, (2, 16))
    y = x.clone()
    y[:, 10] = (y[:, 10] + 7) % 120
    a, b = _outputs(name, model, x), _outputs(name, model, y)
    assert torch.allclose(a[:, :10], b[:, :10], atol=1e-6) != bidirectional


@pytest.mark.parametrize("name", ["gpt", "llama", "bert", "t5"])
def test_padding_never_changes_real_tokens(name):
    model = _models()[name]
    x = torch.randint(5, 120, (2, 12))
    padded = torch.cat((x, torch.zeros(2, 6, dtype=torch.long)), dim=1)
    mask = torch.cat((torch.ones(2, 12), torch.zeros(2, 6)), dim=1)
    torch.testing.assert_close(_outputs(name, model, padded, mask)[:, :12], _outputs(name, model, x), atol=1e-5, rtol=0)
    if name == "t5":  # the decoder must not see padded encoder positions either
        dec = torch.randint(5, 120, (2, 5))
        torch.testing.assert_close(model(padded, dec, mask), model(x, dec), atol=1e-5, rtol=0)


def test_t5_and_gpt_generate():
    models = _models()
    src = torch.randint(5, 120, (2, 10))
    out = models["t5"].generate(src, 7, temperature=0)
    assert out.shape == (2, 7)
    assert torch.equal(out, models["t5"].generate(src, 7, temperature=0))
    assert models["gpt"].generate(src[:1], 4, temperature=0).shape == (1, 14)


def test_bert_pooled_output():
    bert = _models()["bert"]
    hidden = bert.encode(torch.randint(5, 120, (3, 9)))
    pooled = bert.pool(hidden)
    assert pooled.shape == (3, 32) and pooled.abs().max() <= 1


def test_grouped_query_attention_shrinks_kv_projection():
    full, gqa = GPT(**SMALL), GPT(**SMALL, n_kv_head=1)
    assert gqa.blocks[0].attn.qkv.out_features == 32 + 2 * 8
    assert gqa.num_parameters() < full.num_parameters()


def _tokenizer(specials: tuple[str, ...]) -> CharTokenizer:
    return CharTokenizer(["<pad>", "<unk>", "<s>", "</s>", *specials, *"abcdefghijklmnopqrstuvwxyz .,"])


def test_mlm_masking_statistics():
    torch.manual_seed(0)
    objective = MaskedLM()
    tok = _tokenizer(objective.special_tokens)
    objective.configure(ObjectiveContext(tokenizer=tok))
    blocks = [torch.randint(objective.first_regular_id, tok.vocab_size, (126,)) for _ in range(100)]
    blocks[0][:10] = tok.eos_id  # document separators are never picked
    batch = objective.collate(blocks)
    inputs, labels = batch["input_ids"], batch["labels"]
    assert inputs.shape == (100, 128)
    assert (inputs[:, 0] == tok.bos_id).all() and (inputs[:, -1] == tok.eos_id).all()
    original = torch.cat((torch.full((100, 1), tok.bos_id), torch.stack(blocks), torch.full((100, 1), tok.eos_id)), 1)
    picked = labels != IGNORE_INDEX
    regular = original >= objective.first_regular_id
    assert not (picked & ~regular).any(), "special tokens are never picked"
    assert torch.equal(labels[picked], original[picked])
    share = picked.sum().item() / regular.sum().item()
    assert share == pytest.approx(0.15, abs=0.01)  # 12.5k candidate tokens
    n = picked.sum().item()
    masked = (inputs[picked] == tok.token_to_id("<mask>")).sum().item() / n
    unchanged = (inputs[picked] == original[picked]).sum().item() / n
    assert masked == pytest.approx(0.8, abs=0.03)
    assert unchanged == pytest.approx(0.1 + 0.1 / (tok.vocab_size - objective.first_regular_id), abs=0.03)
    assert 1 - masked - unchanged == pytest.approx(0.1, abs=0.03)  # random replacements
    assert torch.equal(inputs[~picked], original[~picked])


def _reconstruct(inputs: list[int], targets: list[int], sentinels: list[int], eos: int) -> list[int]:
    spans, current = {}, None
    for t in targets[:-1]:
        if t in sentinels:
            current = t
            spans[current] = []
        else:
            spans[current].append(t)
    out = []
    for t in inputs[:-1]:
        out.extend(spans[t] if t in sentinels else [t])
    assert inputs[-1] == eos and targets[-1] == eos
    return out


def test_span_corruption_round_trip_and_lengths():
    torch.manual_seed(0)
    objective = SpanCorruption()
    tok = _tokenizer(objective.special_tokens)
    objective.configure(ObjectiveContext(tokenizer=tok))
    raw_length, stride = objective.block_layout(128)
    assert (raw_length, stride) == (141, 141)
    assert input_and_target_lengths(512, 0.15, 3.0) == (568, 114)  # T5's published numbers
    blocks = [torch.randint(objective.first_regular_id, tok.vocab_size, (raw_length,)) for _ in range(20)]
    batch = objective.collate(blocks)
    assert batch["input_ids"].shape == (20, 128), "packed examples fill the block exactly"
    assert batch["labels"].shape == (20, 29)
    assert torch.equal(batch["decoder_input_ids"][:, 1:], batch["labels"][:, :-1])
    sentinels = [tok.token_to_id(s) for s in objective.special_tokens]
    for block, inputs, labels in zip(blocks, batch["input_ids"], batch["labels"], strict=True):
        assert _reconstruct(inputs.tolist(), labels.tolist(), sentinels, tok.eos_id) == block.tolist()
        assert labels[0].item() == sentinels[0]


def test_noise_mask_density_and_span_length():
    torch.manual_seed(0)
    masks = torch.stack([random_spans_noise_mask(141, 0.15, 3.0) for _ in range(200)])
    assert masks.float().mean().item() == pytest.approx(21 / 141)
    assert not masks[:, 0].any(), "T5 masks start with a non-noise span"
    starts = (masks[:, 1:] & ~masks[:, :-1]).sum().item()
    assert masks.sum().item() / starts == pytest.approx(3.0, rel=0.01)


@pytest.mark.parametrize("pair", [("bert", "mlm"), ("t5", "span")], ids=["bert+mlm", "t5+span"])
def test_pair_trains_and_loss_falls(make_cfg, pair):
    model, objective = pair
    results = train(make_cfg(f"model={model}", f"objective={objective}"))
    start, end = results["val_start"]["val/loss"], results["metrics"]["val/loss"]
    assert end < 0.85 * start, (start, end)
    assert results["metrics"]["val/accuracy"] > results["val_start"]["val/accuracy"]
    assert results["samples"][0]["text"]


def test_tokenizer_reserves_objective_tokens(make_cfg):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = make_cfg("model=t5", "objective=span")
    objective = instantiate(cfg.objective)
    dm = instantiate(cfg.data, objective=objective, tokenizer=OmegaConf.to_container(cfg.tokenizer))
    dm.prepare_data()
    dm.setup("fit")
    ids = [dm.tokenizer.token_to_id(s) for s in objective.special_tokens]
    assert ids == list(range(4, 104))
    assert dm.tokenizer.encode("<extra_id_7>")[-1] == 11  # one piece (after the dummy-prefix space)
