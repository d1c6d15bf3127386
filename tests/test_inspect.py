"""lightning_llm.inspect on tiny random models: the numbers (attention, logit lens, attributions, probes), the
report, and the `inspect` command."""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lightning_llm.errors import ConfigError
from lightning_llm.inspect import (
    attribute,
    fit_probe,
    head_summary,
    induction_scores,
    layer_representations,
    logit_lens,
    probe_layers,
    record_attention,
    repeated_tokens,
    write_inspection,
)
from lightning_llm.inspect.attention import AttentionMap, attention_modules
from lightning_llm.inspect.attribution import from_embeddings, score_function
from lightning_llm.models import BERT, GPT, T5
from lightning_llm.models.blocks import attention_bias
from lightning_llm.models.scoring import NotApplicable
from lightning_llm.tokenizers import CharTokenizer

from .browser import open_page

TOKENIZER = CharTokenizer(["<pad>", "<unk>", "<s>", "</s>", *"abcdefghijklmnopqrstuvwxyz .,"])
SHAPE = dict(vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=32)
LLAMA = dict(positions="rope", norm="rmsnorm", gated=True, activation="silu", n_kv_head=1, bias=False)


def gpt(**overrides: object) -> GPT:
    torch.manual_seed(0)
    return GPT(**SHAPE, **overrides).eval()


@pytest.fixture(params=["learned", "llama"])
def decoder(request: pytest.FixtureRequest) -> GPT:
    """A GPT-2 style and a Llama style (RoPE, RMSNorm, SwiGLU, one key/value head for two query heads) GPT."""
    return gpt(**(LLAMA if request.param == "llama" else {}))


def ids_of(*texts: str) -> torch.Tensor:
    return torch.tensor([[TOKENIZER.bos_id, *TOKENIZER.encode(t)] for t in texts])


def rotate(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """RoPE written out: channel i and i + d/2 of position p turn by p / base^(2i/d)."""
    t, d = x.size(-2), x.size(-1)
    angle = torch.arange(t)[:, None] / base ** (torch.arange(0, d, 2) / d)[None, :]
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return torch.cat((x1 * angle.cos() - x2 * angle.sin(), x1 * angle.sin() + x2 * angle.cos()), dim=-1)


def manual_attention(attn: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """softmax(q k^T / sqrt(d) + mask) head by head from the qkv weights, and the module output it implies."""
    b, t, _ = x.shape
    nh, nkv, d = attn.n_head, attn.n_kv_head, attn.head_dim
    qkv = F.linear(x, attn.qkv.weight, attn.qkv.bias)
    q = qkv[..., : nh * d].reshape(b, t, nh, d)
    k = qkv[..., nh * d : (nh + nkv) * d].reshape(b, t, nkv, d)
    v = qkv[..., (nh + nkv) * d :].reshape(b, t, nkv, d)
    probs, heads = [], []
    for h in range(nh):
        g = h // (nh // nkv)
        qh, kh = q[:, :, h], k[:, :, g]
        if attn.rope is not None:
            qh, kh = rotate(qh), rotate(kh)
        scores = qh @ kh.transpose(-1, -2) / math.sqrt(d)
        if mask is None:
            scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
        else:
            scores = scores + mask[:, 0]
        p = scores.softmax(-1)
        probs.append(p)
        heads.append(p @ v[:, :, g])
    return torch.stack(probs, 1), attn.proj(torch.cat(heads, dim=-1))


def calls_of_attention(model: torch.nn.Module) -> tuple[list, object]:
    """Every attention module call's (module, inputs, output), in execution order, and the hook handles."""
    calls, handles = [], []
    for _, module in attention_modules(model):

        def hook(mod: torch.nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
            inputs = dict(zip(("x", "attn_mask", "memory"), args, strict=False)) | kwargs
            calls.append((mod, inputs, output))

        handles.append(module.register_forward_hook(hook, with_kwargs=True))
    return calls, handles


def check_reproduces_outputs(maps: list[AttentionMap], calls: list) -> None:
    """Each recorded map, times the values and through the output projection, is what the module returned."""
    assert len(maps) == len(calls) > 0
    for m, (attn, inputs, output) in zip(maps, calls, strict=True):
        torch.testing.assert_close(m.probs.sum(-1), torch.ones(m.probs.shape[:-1]), atol=1e-5, rtol=0)
        source = inputs["memory"] if attn.cross else inputs["x"]
        kv_dim = attn.n_kv_head * attn.head_dim
        v = (attn.kv(source) if attn.cross else attn.qkv(source))[..., -kv_dim:]
        v = v.view(*v.shape[:2], attn.n_kv_head, attn.head_dim).transpose(1, 2)
        v = v.repeat_interleave(attn.n_head // attn.n_kv_head, dim=1)
        y = (m.probs @ v).transpose(1, 2).reshape(*inputs["x"].shape[:2], -1)
        torch.testing.assert_close(attn.proj(y), output, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("padded", [False, True])
@torch.no_grad()
def test_attention_equals_manual_softmax_and_reproduces_the_block(decoder: GPT, padded: bool) -> None:
    ids = ids_of("hello world", "the cat sat")
    mask = torch.ones_like(ids)
    if padded:
        mask[1, -3:] = 0
    calls, handles = calls_of_attention(decoder)
    with record_attention(decoder) as maps:
        decoder(ids, mask if padded else None)
    for handle in handles:
        handle.remove()
    check_reproduces_outputs(maps, calls)
    for m, (attn, inputs, _) in zip(maps, calls, strict=True):
        expected_mask = attention_bias(mask, causal=True, q_len=ids.size(1), k_len=ids.size(1)) if padded else None
        probs, _ = manual_attention(attn, inputs["x"], expected_mask)
        torch.testing.assert_close(m.probs, probs, atol=1e-6, rtol=1e-5)
        assert m.causal and float(m.probs.triu(1).abs().max()) == 0.0
        if padded:
            assert float(m.probs[1, :, :, -3:].max()) == 0.0  # no query looks at padding


@torch.no_grad()
def test_attention_of_encoders_and_encoder_decoders_reproduces_their_blocks() -> None:
    torch.manual_seed(0)
    bert, t5 = BERT(**SHAPE).eval(), T5(**SHAPE).eval()
    ids, mask = ids_of("hello world", "the cat sat"), torch.ones(2, 12, dtype=torch.long)
    mask[1, -3:] = 0
    for model, run in ((bert, lambda: bert(ids, mask)), (t5, lambda: t5(ids, ids[:, :5], mask))):
        calls, handles = calls_of_attention(model)
        with record_attention(model) as maps:
            run()
        for handle in handles:
            handle.remove()
        check_reproduces_outputs(maps, calls)
        assert float(maps[0].probs[1, :, :, -3:].max()) == 0.0  # padded keys get nothing
    assert not maps[0].causal and [m.name for m in maps][:4] == [
        "encoder 0",
        "encoder 1",
        "decoder 0",
        "decoder 0 cross",
    ]


@pytest.mark.parametrize("method", ["lora", "adapter"])
@torch.no_grad()
def test_attention_is_recorded_under_fine_tuning_wrappers(method: str) -> None:
    """LoRA wraps the projections, adapters wrap the attention module: the maps still reproduce its output."""
    from lightning_llm.finetune import METHODS

    model = gpt(**LLAMA)
    METHODS[method]().apply(model)
    for p in model.parameters():  # LoRA's B starts at zero: move it so the update counts
        p.add_(0.05 * torch.randn_like(p))
    calls, handles = calls_of_attention(model)
    with record_attention(model) as maps:
        model(ids_of("hello world"))
    for handle in handles:
        handle.remove()
    check_reproduces_outputs(maps, calls)


def test_head_scores_measure_what_they_say() -> None:
    t, length = 9, 4  # [bos] r r with |r| = 4
    previous = torch.zeros(1, 1, t, t)
    previous[0, 0, 0, 0] = 1.0
    previous[0, 0, torch.arange(1, t), torch.arange(t - 1)] = 1.0
    induction = previous.clone()
    queries = torch.arange(t - length, t)
    induction[0, 0, queries] = 0.0
    induction[0, 0, queries, queries - length + 1] = 1.0
    assert float(induction_scores(induction, length)[0]) == 1.0
    assert float(induction_scores(previous, length)[0]) == 0.0
    rows = head_summary(gpt(), [[AttentionMap("layer 0", False, True, previous)]], TOKENIZER)
    assert rows[0].previous_token == 1.0 and rows[0].entropy == 0.0 and rows[0].first_token == pytest.approx(2 / t)
    assert [(r.layer, r.head) for r in rows] == [("layer 0", 0), ("layer 1", 0), ("layer 1", 1)]
    assert rows[-1].entropy is None and 0.0 < rows[-1].induction < 1.0  # the model's own induction pass
    ids, length = repeated_tokens(gpt(), TOKENIZER, length=20)
    assert ids.shape == (4, 1 + 2 * 15) and length == 15  # shortened to fit the 32-token context
    assert torch.equal(ids[:, 1:16], ids[:, 16:]) and int(ids[:, 1:].min()) > TOKENIZER.eos_id


@torch.no_grad()
def test_logit_lens_ends_at_the_models_own_logits(decoder: GPT) -> None:
    ids = ids_of("hello world")
    lens = logit_lens(decoder, ids)
    assert lens.layers == ["embeddings", "layer 0", "layer 1"]
    torch.testing.assert_close(lens.logprobs[-1], decoder(ids)[0].log_softmax(-1), atol=1e-6, rtol=1e-6)
    with pytest.raises(NotApplicable):
        logit_lens(BERT(**SHAPE), ids)


@torch.no_grad()
def test_a_prompt_tuning_prefix_is_seen_by_attention_and_cut_from_the_lens() -> None:
    from lightning_llm.finetune import METHODS

    model, ids = gpt(), ids_of("hello")
    METHODS["prompt"](num_virtual_tokens=3).apply(model)
    with record_attention(model) as maps:
        logits = model(ids)
    assert maps[0].probs.shape == (1, 2, 6 + 3, 6 + 3)
    torch.testing.assert_close(logit_lens(model, ids).logprobs[-1], logits[0].log_softmax(-1), atol=1e-6, rtol=1e-6)


def sharpened(model: torch.nn.Module) -> torch.nn.Module:
    """Embeddings (and a task head) with std 0.3, so the explained logit moves by order one between baseline and
    input."""
    torch.nn.init.normal_(model.input_embeddings().weight, std=0.3)
    if model.task_head is not None:
        torch.nn.init.normal_(model.task_head.weight, std=0.3)
    return model


@pytest.mark.parametrize(
    ("kind", "baseline_id"),
    [("gpt", None), ("gpt", 0), ("llama", 0), ("gpt classifier", 0), ("bert classifier", None), ("t5", 0)],
)
def test_integrated_gradients_are_complete(kind: str, baseline_id: int | None) -> None:
    """Sum of attributions = f(input) - f(baseline), from zero embeddings or the pad token's everywhere."""
    torch.manual_seed(0)
    if kind == "t5":
        model = T5(**SHAPE)
    elif kind.startswith("bert"):
        model = BERT(**SHAPE)
    else:
        model = GPT(**SHAPE, **(LLAMA if kind == "llama" else {}))
    if kind.endswith("classifier"):
        model.attach_task_head(3)
    model = sharpened(model).eval()
    target = 1 if kind.endswith("classifier") else 7
    result = attribute(model, ids_of("hello world"), target=target, baseline_id=baseline_id)
    gap = result.output - result.baseline_output
    total = float(result.integrated_gradients.sum())
    print(f"{kind}, baseline {baseline_id}: f(x) - f(b) = {gap:.4f}, sum IG = {total:.4f}, delta = {result.delta:.1e}")
    assert abs(gap) > 1e-3
    assert abs(total - gap) < 1e-5 + 1e-3 * abs(gap)
    assert abs(result.delta) < 1e-5 + 1e-3 * abs(gap)
    assert result.input_x_gradient.shape == result.integrated_gradients.shape == (12,)


def test_attributions_match_a_hand_written_integral() -> None:
    """Integrated gradients against a 400-step midpoint sum of autograd gradients, token by token; gradient x
    input against autograd at the input."""
    model, ids = sharpened(gpt()), ids_of("hello world")
    result = attribute(model, ids, target=7)
    embeds = model.wte(ids).detach()
    alphas = ((torch.arange(400) + 0.5) / 400)[:, None, None]
    with from_embeddings(model, ids, score_function(model, 7)) as f:
        path = (alphas * embeds).requires_grad_()
        (grads,) = torch.autograd.grad(f(path).sum(), path)
        point = embeds.clone().requires_grad_()
        (grad,) = torch.autograd.grad(f(point).sum(), point)
    torch.testing.assert_close(result.integrated_gradients, (grads.mean(0) * embeds[0]).sum(-1), atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(result.input_x_gradient, (grad * embeds)[0].sum(-1), atol=1e-6, rtol=1e-5)
    assert result.target == 7 and result.integrated_gradients.abs().min() > 0


def test_attributions_do_not_apply_to_a_bare_encoder() -> None:
    with pytest.raises(NotApplicable):
        attribute(BERT(**SHAPE).eval(), ids_of("hello"))


def test_probe_finds_a_planted_direction() -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 2
    direction = torch.randn(16, generator=generator)
    features = torch.randn(200, 16, generator=generator) + 8.0 * labels[:, None] * direction / direction.norm()
    train = torch.arange(140)
    predicted, _ = fit_probe(features, labels, train)
    assert float((predicted[140:] == labels[140:]).float().mean()) == 1.0
    shuffled = labels[torch.randperm(200, generator=generator)]  # no signal: near chance
    predicted, _ = fit_probe(torch.randn(200, 16, generator=generator), shuffled, train)
    assert float((predicted[140:] == shuffled[140:]).float().mean()) < 0.75


def test_probes_per_layer_read_a_planted_feature_from_the_model() -> None:
    """Class = which half of the alphabet a text is written in: the mean embedding tells them apart."""
    generator = torch.Generator().manual_seed(0)
    texts, labels = [], []
    for i in range(80):
        letters = "abcdefghij" if i % 2 else "klmnopqrst"
        texts.append("".join(letters[j] for j in torch.randint(10, (3 + i % 7,), generator=generator)))
        labels.append("first" if i % 2 else "second")
    layers, features = layer_representations(gpt(), TOKENIZER, texts, batch_size=16)
    assert layers == ["embeddings", "layer 0", "layer 1"] and features.shape == (3, 80, 32)
    result = probe_layers(layers, features, labels)
    assert result.accuracy[0] == 1.0 and min(result.accuracy) >= 0.9 and result.majority <= 0.6


def no_urls(index: Path) -> None:
    page = index.read_text(encoding="utf-8")
    assert not re.search(r"https?://", page)
    for src in re.findall(r'src="([^"]+)"', page):
        assert (index.parent / src).is_file(), src


def test_report_is_an_offline_page(tmp_path: Path) -> None:
    model = gpt()
    probe = (["abcabc", "aabbcc", "cab", "bca", "xyzzy", "zyx", "yyzx", "zzz"], ["abc"] * 4 + ["xyz"] * 4)
    index = write_inspection(model, TOKENIZER, ["hello world"], tmp_path / "out", target="d", probe_data=probe)
    assert index == tmp_path / "out" / "index.html"
    no_urls(index)
    files = {p.name for p in index.parent.iterdir()}
    expected = {"heads.csv", "probes.csv", "probes.png", "prompt0_logit_lens.png", "prompt0_attributions.csv"}
    assert expected | {"prompt0_attention_layer_0.png", "prompt0_attention_layer_1.png"} <= files
    page = index.read_text(encoding="utf-8")
    assert "token &#x27;d&#x27; (" in page and "induction" in page


def test_report_says_what_does_not_apply_to_an_encoder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    index = write_inspection(BERT(**SHAPE), TOKENIZER, ["hi"], tmp_path)
    page = index.read_text(encoding="utf-8")
    assert page.count("Does not apply") == 2  # no logit lens, no attribution target without a task head
    no_urls(index)


def test_mistakes_are_one_line_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="longer than the model's context of 32"):
        write_inspection(gpt(), TOKENIZER, ["a" * 40], tmp_path / "out")
    with pytest.raises(ConfigError, match="give text that is one token"):
        write_inspection(gpt(), TOKENIZER, ["hi"], tmp_path / "out", target="ab")
    with pytest.raises(ConfigError, match="needs a classifier"):
        write_inspection(gpt(), TOKENIZER, ["hi"], tmp_path / "out", target_class=0)
    assert not (tmp_path / "out").exists()


def command_args(checkpoint: Path, out: Path, *prompts: str, **extra: object) -> argparse.Namespace:
    from lightning_llm.cli.inspect import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = [str(checkpoint), *(x for p in prompts for x in ("--prompt", p)), "--out", str(out)]
    return parser.parse_args(argv + [str(x) for k, v in extra.items() for x in (f"--{k}", v)])


def test_inspect_command_reads_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lightning_llm.cli.inspect import run

    model = gpt(**LLAMA)
    checkpoint = tmp_path / "tiny.ckpt"
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save(
        {
            "model_family": "gpt",
            "model_config": model.config.to_dict(),
            "state_dict": state,
            "tokenizer": TOKENIZER.to_bytes(),
        },
        checkpoint,
    )
    run(command_args(checkpoint, tmp_path / "report", "hello", target=" "))
    assert "index.html" in capsys.readouterr().out
    no_urls(tmp_path / "report" / "index.html")
    with pytest.raises(ConfigError, match="longer than the model's context"):
        run(command_args(checkpoint, tmp_path / "other", "x" * 50))
    (tmp_path / "notes.ckpt").write_text("not a checkpoint")
    with pytest.raises(ConfigError):
        run(command_args(tmp_path / "notes.ckpt", tmp_path / "other", "hello"))
    assert not (tmp_path / "other").exists()


def test_inspect_help_does_not_import_torch() -> None:
    code = (
        "import argparse, sys; from lightning_llm.cli.inspect import add_arguments; p = argparse.ArgumentParser(); "
        "add_arguments(p); p.format_help(); assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    index = write_inspection(gpt(), TOKENIZER, ["hello"], tmp_path / "out")
    shot = tmp_path / "shot.png"
    assert open_page(index, shot) == []
    assert shot.is_file() and shot.stat().st_size > 1000
