"""Using a trained model: generate and chat from any checkpoint, greedy output equal to transformers', the
tokenizer's own BOS convention, quantized weights, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from lightning_llm.cli.main import main
from lightning_llm.errors import ConfigError
from lightning_llm.finetune import QLoRA
from lightning_llm.finetune.quantize import quantize_model, weight_bytes
from lightning_llm.inference import TextGenerator, chat_template, load_for_inference
from lightning_llm.models import GPT
from lightning_llm.models.scoring import GenerationSettings

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
GREEDY = GenerationSettings(max_new_tokens=12, temperature=0.0)


def tool(*args: str, cwd, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lightning_llm", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )


def randomized(model: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model.eval()


HF_DECODERS = {
    "gpt2": lambda: transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=4)
    ),
    "llama-gqa": lambda: transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=97,
            hidden_size=32,
            intermediate_size=56,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            tie_word_embeddings=False,
        )
    ),
}


@pytest.mark.parametrize("name", HF_DECODERS)
def test_greedy_output_equals_transformers_generate(name, tmp_path):
    from lightning_llm.interop import load_hf_model

    hf = randomized(HF_DECODERS[name]())
    hf.save_pretrained(tmp_path)
    ours, _ = load_hf_model(tmp_path)
    prompts = torch.tensor([[5, 17, 33, 2, 8, 41], [0, 0, 0, 9, 60, 12]])
    mask = torch.tensor([[1] * 6, [0, 0, 0, 1, 1, 1]])
    expected = hf.generate(
        input_ids=prompts, attention_mask=mask, max_new_tokens=20, do_sample=False, pad_token_id=0, eos_token_id=None
    )
    for use_cache in (True, False):
        got = ours.generate(prompts, 20, attention_mask=mask, temperature=0, use_cache=use_cache)
        assert torch.equal(got, expected), (name, use_cache)


def test_generate_and_chat_from_a_run_folder(tmp_path, base_checkpoints, capsys, monkeypatch):
    """In this process through the verbs' handler (test_tool_errors_are_one_line crosses the process boundary)."""
    import io

    run = base_checkpoints["gpt"].parent.parent
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompts.txt").write_text("The for statement\nA dictionary is\nExceptions\n")
    common = [f"model.pretrained={run}", "temperature=0"]
    assert main(["generate", *common, "prompts_file=prompts.txt", "max_new_tokens=8", "output=gen.jsonl"]) == 0
    records = [json.loads(line) for line in (tmp_path / "gen.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in records] == ["The for statement", "A dictionary is", "Exceptions"]
    assert all(r["new_tokens"] > 0 and r["tokens_per_s"] > 0 and r["settings"]["temperature"] == 0 for r in records)
    capsys.readouterr()
    assert main(["generate", *common, "prompt=A dictionary is", "max_new_tokens=8"]) == 0
    one = capsys.readouterr().out
    assert one.startswith("A dictionary is" + records[1]["output"]), one
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n/reset\nhello\n/quit\n"))
    assert main(["chat", *common, "max_new_tokens=6"]) == 0
    chat = capsys.readouterr()
    assert chat.err.count("no chat template in the checkpoint") == 1
    answers = [line for line in chat.out.split("you> ") if line.startswith("assistant> ")]
    assert len(answers) == 2 and answers[0] == answers[1], "after /reset the same question gets the same answer"


def test_tool_errors_are_one_line(tmp_path, base_checkpoints, capsys, monkeypatch):
    run = base_checkpoints["gpt"].parent.parent
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    result = tool("generate", f"model.pretrained={tmp_path / 'junk.ckpt'}", "prompt=x", cwd=tmp_path)
    lines = result.stderr.strip().splitlines()  # at the process boundary: exit code 2, the error line last
    assert result.returncode == 2 and lines[-1].startswith("error: cannot read model.pretrained="), result.stderr
    monkeypatch.chdir(tmp_path)
    cases = {
        ("generate", f"model.pretrained={run}", "prompt=" + "word " * 200): "the model's context is 32",
        ("generate", f"model.pretrained={run}", "prompt=x", "quantize=int3"): "quantize='int3' is unknown",
        ("generate", f"model.pretrained={run}", "max_tokens=3"): "did you mean max_new_tokens?",
        ("chat", f"model.pretrained={base_checkpoints['bert'].parent.parent}"): "chat needs a decoder",
    }
    for args, needle in cases.items():  # the same handler in this process (faster than a process each)
        code = main(list(args))
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and lines[-1].startswith("error: ") and needle in lines[-1], lines


def test_t5_maps_and_bert_fills_masks(base_checkpoints):
    for family in ("t5", "bert"):
        model, tokenizer = load_for_inference(str(base_checkpoints[family]))
        out = TextGenerator(model, tokenizer).complete(["Return the <mask> of a list"], GREEDY)
        assert out[0].output and isinstance(out[0].output, str)
        if family == "bert":
            assert "<mask>" not in out[0].output


@pytest.mark.parametrize("scheme", ["int8", "nf4"])
def test_quantized_generation_is_smaller_and_close(scheme, base_checkpoints):
    model, tokenizer = load_for_inference(str(base_checkpoints["gpt"]))
    ids = torch.tensor([tokenizer.encode("The for statement in Python")])
    reference, full_bytes = model(ids), weight_bytes(model)
    quantize_model(model, scheme)
    assert weight_bytes(model) < full_bytes
    logits = model(ids)
    agree = (logits.argmax(-1) == reference.argmax(-1)).float().mean().item()
    assert agree > 0.5, agree
    assert TextGenerator(model, tokenizer).complete(["The"], GREEDY)[0].new_tokens > 0


def test_qlora_with_an_8_bit_base_trains_and_merges():
    import bitsandbytes as bnb

    torch.manual_seed(0)
    model = GPT(vocab_size=60, block_size=16, n_layer=2, n_head=2, n_embd=32)
    method = QLoRA(rank=4, bits=8)
    method.apply(model)
    assert any(isinstance(m, bnb.nn.Linear8bitLt) for m in model.modules())
    ids = torch.randint(4, 60, (4, 12))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(8):
        loss = torch.nn.functional.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
        loss.backward(), optimizer.step(), optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    before = model.eval()(ids)
    merged = method.merge(model)
    assert not any(isinstance(m, bnb.nn.Linear8bitLt) for m in merged.modules())
    torch.testing.assert_close(merged(ids), before, atol=2e-2, rtol=0)


def test_bos_follows_the_tokenizer_and_chat_templates_render_as_transformers(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    from lightning_llm.tokenizers import HFTokenizer

    vocab = {"<s>": 0, "</s>": 1, "<unk>": 2, "hello": 3, "world": 4, "<|im_start|>": 5, "<|im_end|>": 6}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    for adds in (False, True):
        folder = tmp_path / f"bos-{adds}"
        folder.mkdir()
        if adds:  # Llama-style: the post-processor puts <s> first
            tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
        tok.save(str(folder / "tokenizer.json"))
        config = {
            "bos_token": "<|im_start|>" if not adds else "<s>",
            "eos_token": "<|im_end|>",
            "unk_token": "<unk>",
            "chat_template": template,
        }
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
        ours = HFTokenizer.from_pretrained(folder)
        assert ours.adds_bos is adds and ours.sequence_start == ([0] if adds else [])
        assert HFTokenizer.from_bytes(ours.to_bytes()).chat_template == template
        theirs = transformers.PreTrainedTokenizerFast(
            tokenizer_file=str(folder / "tokenizer.json"), chat_template=template
        )
        messages = [{"role": "user", "content": "hello world"}]
        expected = theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert chat_template(ours.chat_template, None).render(messages, {}) == expected
    (tmp_path / "bos-False" / "tokenizer_config.json").write_text(json.dumps({**config, "add_bos_token": True}))
    assert HFTokenizer.from_pretrained(tmp_path / "bos-False").adds_bos is True, "add_bos_token overrides"


def test_export_keeps_the_chat_template(tmp_path):
    from lightning_llm.tokenizers import HFTokenizer
    from lightning_llm.tokenizers.export import export_tokenizer

    folder = tmp_path / "src"
    folder.mkdir()
    from tokenizers import Tokenizer, models

    Tokenizer(models.WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>")).save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages[0]['content'] }}"}))
    export_tokenizer(HFTokenizer.from_pretrained(folder), tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())
    assert saved["chat_template"] == "{{ messages[0]['content'] }}"


def test_help_lists_the_keys(tmp_path):
    result = tool("generate", "--help", cwd=tmp_path)
    assert result.returncode == 0 and "--prompts-file FILE" in result.stdout and "repetition_penalty" in result.stdout


def test_a_missing_quantization_backend_is_one_line(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a)
    )
    with pytest.raises(ConfigError, match="quantize=int8 needs bitsandbytes"):
        quantize_model(GPT(vocab_size=20, block_size=8, n_layer=1, n_head=1, n_embd=8), "int8")


def test_eval_can_score_a_quantized_copy(make_cfg, base_checkpoints, tmp_path):
    from lightning_llm.eval import evaluate

    model, tokenizer = load_for_inference(str(base_checkpoints["gpt"]))
    suite = {
        "tasks": {
            "ppl": {
                "_target_": "lightning_llm.eval.tasks.PerplexityTask",
                "path": "embedded:pydoc_topics",
                "holdout_fraction": 0.05,
                "limit": 3,
            }
        },
        "progress": False,
        "on_error": "raise",
        "cache_dir": str(tmp_path / "cache"),
    }
    full = evaluate(suite, model, tokenizer, tmp_path, seed=0)["tasks"]["ppl"]["metrics"]["bits_per_byte"]
    int8 = evaluate({**suite, "quantize": "int8"}, model, tokenizer, tmp_path, seed=0)
    assert int8["quantize"] == "int8" and not any("SCB" in k for k in model.state_dict()), "the model is untouched"
    assert abs(int8["tasks"]["ppl"]["metrics"]["bits_per_byte"] - full) < 0.05 * full


@pytest.mark.parametrize("method", ["adapter", pytest.param("prompt", marks=pytest.mark.slow)])
def test_adapter_and_prompt_checkpoints_generate(method, tmp_path, cache_dir, base_checkpoints):
    """Methods that cannot fold into plain weights are rebuilt as such for generation (and refused by export)."""
    from lightning_llm.recipe import train

    from .conftest import TINY, compose_config

    args = [
        *TINY,
        f"model.pretrained={base_checkpoints['gpt']}",
        f"finetune={method}",
        "trainer.max_steps=3",
        "~callbacks.sample",
        "forgetting.enabled=false",
        "validate_before_fit=false",
    ]
    train(compose_config(args, tmp_path / "run", cache_dir))
    model, tokenizer = load_for_inference(str(tmp_path / "run"))
    assert (model.prefix is not None) == (method == "prompt")
    assert TextGenerator(model, tokenizer).complete(["The"], GREEDY)[0].new_tokens > 0
    refused = tool("export", str(tmp_path / "run"), str(tmp_path / "hf"), cwd=tmp_path)
    assert refused.returncode == 2 and f"finetune={method} keeps modules of its own" in refused.stderr


def test_bitsandbytes_hub_kernel_warning_is_not_printed():
    """bitsandbytes warns at import that it could not fetch a Hub kernel (offline): every quantize= call said it."""
    pytest.importorskip("bitsandbytes")
    code = "from lightning_llm.log import quiet_known_noise\nquiet_known_noise()\nimport bitsandbytes\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "kernels-community" not in done.stderr + done.stdout
