"""`lightning-llm export ... --format gguf`: the file read back by an independent reader, transformers' GGUF loader
(its own dequantizer, tensor processors and tokenizer builder), gives our logits within a tolerance per type, our
greedy tokens, and our tokenizer's ids; what llama.cpp cannot express is refused in one line.

Checkpoints: a real run's (our format, our SentencePiece BPE tokenizer) with random weights (std 0.3, so that every
greedy token is a clear choice), as GPT-2 style and as Llama style with grouped-query attention."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lightning_llm.cli.main import main
from lightning_llm.errors import ConfigError

from .conftest import TINY, compose_config

pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from lightning_llm.interop.gguf import compare_with_transformers, export_gguf  # noqa: E402

LLAMA = dict(n_kv_head=1, activation="silu", gated=True, norm="rmsnorm", positions="rope", bias=False,
             attn_bias=False, qkv_bias=False, tie_embeddings=False)  # fmt: skip
#: the largest |logit difference| from ours (logits of about +-10 here), per --outtype; f32 is exact up to float
#: rounding, f16 and bf16 round every weight, q8_0 stores blocks of 32 weights as int8 with one f16 scale
TOLERANCE = {"f32": 1e-4, "f16": 1e-2, "bf16": 1e-1, "q8_0": 2e-1}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> dict[str, Path]:
    from lightning_llm.models import get_family
    from lightning_llm.recipe import train

    run = tmp_path_factory.mktemp("gguf-run")
    train(compose_config([*TINY, "model.block_size=64", "trainer.max_steps=2", "~callbacks.sample"], run, cache_dir))
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    out = {}
    torch.manual_seed(0)
    for name, changes in (("gpt2-style", {}), ("llama-style", LLAMA)):
        model = get_family("gpt").build({**checkpoint["model_config"], **changes})
        state = {f"model.{k}": torch.randn(v.shape) * 0.3 for k, v in model.state_dict().items()}
        out[name] = run / f"{name}.ckpt"
        torch.save({**checkpoint, "model_config": model.config.to_dict(), "state_dict": state}, out[name])
    return out


def ours(path: Path):
    from lightning_llm.checkpoints import load_pretrained, model_from_pretrained

    pretrained = load_pretrained(path)
    return model_from_pretrained(pretrained), pretrained.tokenizer


@pytest.mark.parametrize("outtype", ["f32", "f16", "bf16", "q8_0"])
@pytest.mark.parametrize("name", ["llama-style", "gpt2-style"])
def test_transformers_reads_our_logits_tokens_and_text(name, outtype, checkpoints, tmp_path, capsys):
    out = tmp_path / f"{name}.gguf"
    assert main(["export", str(checkpoints[name]), str(out), "--format", "gguf", "--outtype", outtype]) == 0
    arch = "llama" if name == "llama-style" else "gpt2"
    assert f"llama.cpp architecture {arch}" in capsys.readouterr().out
    model, tokenizer = ours(checkpoints[name])
    check = compare_with_transformers(model, tokenizer, out)
    assert check["same_token_ids"] and check["max_logit_diff"] < TOLERANCE[outtype], check["max_logit_diff"]
    prompt = torch.tensor([tokenizer.sequence_start + tokenizer.encode("The for statement")])
    theirs = check["hf_model"].generate(prompt, max_new_tokens=16, do_sample=False, pad_token_id=0, eos_token_id=None)
    assert torch.equal(model.generate(prompt, 16, temperature=0), theirs)
    # the same text, but for runs of byte tokens that are no valid UTF-8 (random weights pick lone bytes): there
    # SentencePiece replaces each bad byte and tokenizers' ByteFallback the whole run
    hf_tokenizer, new = check["hf_tokenizer"], theirs[0, prompt.size(1) :].tolist()
    words = [t for t, piece in zip(new, hf_tokenizer.convert_ids_to_tokens(new), strict=True) if "<0x" not in piece]
    assert hf_tokenizer.decode(words) == tokenizer.decode(words)


def test_the_file_holds_the_tokenizer_and_the_chat_template(checkpoints, tmp_path):
    """A GGUF reader gets the vocabulary, bos/eos, the <s> framing and a Hugging Face tokenizer's chat template."""
    import gguf

    from lightning_llm.tokenizers import HFTokenizer

    model, tokenizer = ours(checkpoints["llama-style"])
    plain = export_gguf(model, tokenizer, tmp_path / "plain.gguf", "f32")
    assert (plain.tokenizer, plain.chat_template) == ("llama", False)
    fields = gguf.GGUFReader(plain.path).fields
    assert fields["tokenizer.ggml.bos_token_id"].contents() == tokenizer.bos_id
    assert fields["tokenizer.ggml.eos_token_id"].contents() == tokenizer.eos_id
    assert fields["tokenizer.ggml.add_bos_token"].contents() is True
    assert len(fields["tokenizer.ggml.tokens"].contents()) == model.config.vocab_size

    folder = tmp_path / "hf"  # a GPT-2 style Hugging Face folder: byte-level BPE with merges and a chat template
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=300, n_positions=64, n_embd=32, n_layer=2,
                                                              n_head=4))  # fmt: skip
    hf.save_pretrained(folder)
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["The for statement iterates over a sequence."] * 20, vocab_size=300,
                            special_tokens=["<|endoftext|>"])  # fmt: skip
    bpe.save(str(folder / "tokenizer.json"))
    template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    config = {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>", "chat_template": template}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    assert main(["export", str(folder), str(tmp_path / "hf.gguf"), "--format", "gguf", "--outtype", "f32",
                 "--verify"]) == 0  # fmt: skip
    fields = gguf.GGUFReader(tmp_path / "hf.gguf").fields
    assert fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert fields["tokenizer.chat_template"].contents() == template
    assert len(fields["tokenizer.ggml.merges"].contents()) > 10
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="hf.gguf")
    text = "The for statement iterates."
    assert theirs(text)["input_ids"] == HFTokenizer.from_pretrained(folder).encode(text)


def test_what_llama_cpp_cannot_express_is_refused_in_one_line(checkpoints, tmp_path, capsys):
    from lightning_llm.models import get_family

    model, tokenizer = ours(checkpoints["gpt2-style"])
    bert = get_family("bert").build({"vocab_size": 512, "block_size": 32, "n_layer": 1, "n_head": 2, "n_embd": 32})
    with pytest.raises(ConfigError, match="is an encoder: export a Hugging Face folder instead"):
        export_gguf(bert, tokenizer, tmp_path / "bert.gguf")
    exact_gelu = get_family("gpt").build({**model.config.to_dict(), "activation": "gelu"})
    with pytest.raises(ConfigError, match="GELU with the tanh approximation"):
        export_gguf(exact_gelu, tokenizer, tmp_path / "gelu.gguf")
    biased = get_family("gpt").build({**model.config.to_dict(), **LLAMA, "bias": True})
    with pytest.raises(ConfigError, match="with biases"):
        export_gguf(biased, tokenizer, tmp_path / "biased.gguf")
    with pytest.raises(ConfigError, match="no tokenizer"):
        export_gguf(model, None, tmp_path / "none.gguf")
    assert not list(tmp_path.glob("*.gguf"))
    (tmp_path / "taken.gguf").write_text("")
    assert main(["export", str(checkpoints["gpt2-style"]), str(tmp_path / "taken.gguf"), "--format", "gguf"]) == 2
    assert capsys.readouterr().err.strip().endswith("exists: choose a new file name (nothing is overwritten)")


@pytest.mark.slow
def test_llama_cpp_runs_the_file(checkpoints, tmp_path):
    """llama.cpp itself (llama-cpp-python) on the f32 file: its logits of a prompt and its greedy tokens."""
    llama_cpp = pytest.importorskip("llama_cpp")
    for name in ("llama-style", "gpt2-style"):
        model, tokenizer = ours(checkpoints[name])
        path = export_gguf(model, tokenizer, tmp_path / f"{name}.gguf", "f32").path
        runner = llama_cpp.Llama(str(path), n_ctx=64, logits_all=True, verbose=False, n_threads=1)
        ids = tokenizer.sequence_start + tokenizer.encode("The for statement")
        assert runner.tokenize(b"The for statement", add_bos=True) == ids
        runner.eval(ids)
        theirs = torch.tensor(runner.scores[: len(ids)])
        assert (theirs - model(torch.tensor([ids]))[0]).abs().max() < 1e-2, name
        greedy = [t for _, t in zip(range(12), runner.generate(ids, temp=0.0, reset=True), strict=False)]
        assert greedy == model.generate(torch.tensor([ids]), 12, temperature=0)[0, len(ids) :].tolist(), name
