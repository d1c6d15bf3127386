"""`write_inspection`: attention maps, head scores, the logit lens, token attributions and linear probes of one
model on a few prompts, as PNGs, CSV tables and an index.html that opens offline."""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lightning_llm.errors import ConfigError
from lightning_llm.inspect.attention import AttentionMap, head_summary, record_attention
from lightning_llm.inspect.attribution import attribute, attribution_html
from lightning_llm.inspect.lens import lens_rows, logit_lens, next_token_rank
from lightning_llm.inspect.markup import Raw, image, page, paragraph, table, write_csv
from lightning_llm.inspect.plots import attention_figure, lens_figure, probe_figure
from lightning_llm.inspect.probes import layer_representations, probe_layers
from lightning_llm.inspect.prompts import decoder_inputs, encode_prompt, forward, token_labels, token_text
from lightning_llm.models import LanguageModel
from lightning_llm.models.scoring import NotApplicable
from lightning_llm.tokenizers import Tokenizer

LENS_COLUMNS = 16  # positions the page's top-k table shows (the last ones); the CSV has them all


def resolve_target(
    model: LanguageModel, tokenizer: Tokenizer, target: str | None, target_class: int | None
) -> int | None:
    """The token id (`target`: text of one token; " word" also matches a SentencePiece "▁word") or class to
    explain; None: the model's own top choice. Mistakes are ConfigErrors."""
    if target_class is not None:
        if model.task_head is None:
            raise ConfigError("a target class needs a classifier (a model with a task head): give a target token")
        if not 0 <= target_class < model.task_head.out_features:
            raise ConfigError(f"target class {target_class} is not one of this model's {model.task_head.out_features}")
        return target_class
    if target is None:
        return None
    if model.task_head is not None:
        raise ConfigError("this model classifies: give a class index (--target-class), not a target token")
    for text in (target, target.lstrip()):  # SentencePiece marks the word start itself
        ids = tokenizer.encode(text)
        if len(ids) == 1 and ids[0] < model.config.vocab_size:
            return ids[0]
    pieces = token_labels(tokenizer, tokenizer.encode(target))
    raise ConfigError(f"target {target!r} is {len(pieces)} tokens {pieces}: give text that is one token")


def _labels_for(m: AttentionMap, encoder: list[str], decoder: list[str]) -> tuple[list[str], list[str]]:
    if m.name.startswith("decoder"):
        return decoder, encoder if m.cross else decoder
    return encoder, encoder


def _attention_part(
    model: LanguageModel, tokenizer: Tokenizer, n: int, ids: torch.Tensor, labels: list[str], out: Path
) -> tuple[str, list[AttentionMap]]:
    decoder_ids = decoder_inputs(model, ids, tokenizer) if model.architecture == "encoder-decoder" else None
    with torch.no_grad(), record_attention(model) as maps:
        forward(model, ids, decoder_ids)
    keys = [f"[prefix {j}]" for j in range(model.prefix_length)] + labels
    decoder = token_labels(tokenizer, decoder_ids[0].tolist()) if decoder_ids is not None else []
    parts = []
    for m in maps:
        queries, columns = _labels_for(m, keys, decoder)
        path = out / f"prompt{n}_attention_{m.name.replace(' ', '_')}.png"
        parts.append(image(attention_figure(m.probs[0], queries, columns, f"prompt {n}: {m.name}", path), m.name))
    return "".join(parts), maps


def _lens_part(model: LanguageModel, tokenizer: Tokenizer, n: int, ids: list[int], labels: list[str], out: Path) -> str:
    lens = logit_lens(model, torch.tensor([ids], device=model.input_embeddings().weight.device))
    rows = lens_rows(lens, labels, lambda i: token_text(tokenizer, i))
    flat = [[r["layer"], r["position"], r["token"], *(x for pair in r["top"] for x in pair)] for r in rows]
    k = len(rows[0]["top"])
    headers = ["layer", "position", "token", *(f"{what}{j}" for j in range(1, k + 1) for what in ("top", "p"))]
    write_csv(out / f"prompt{n}_logit_lens.csv", headers, flat)
    shown = range(max(0, len(ids) - LENS_COLUMNS), len(ids))

    def cell(layer_index: int, position: int) -> Raw:
        top = rows[layer_index * len(ids) + position]["top"]
        return Raw("<br>".join(f"{html.escape(repr(token))} {p:.2g}" for token, p in top))

    grid = [[layer, *(cell(li, t) for t in shown)] for li, layer in enumerate(lens.layers)]
    parts = [
        paragraph(f"Top-{k} next tokens per layer (rows) at each position (columns: the token read there)."),
        table(["layer", *(f"{t}: {labels[t]!r}" for t in shown)], grid),
    ]
    if len(ids) > 1:
        rank, probability = next_token_rank(lens, ids)
        path = lens_figure(probability, rank, lens.layers, labels[1:], out / f"prompt{n}_logit_lens.png")
        parts.append(image(path, "logit lens: the true next token per layer"))
    return "".join(parts)


def _attribution_part(
    model: LanguageModel,
    tokenizer: Tokenizer,
    n: int,
    ids: torch.Tensor,
    labels: list[str],
    target: int | None,
    out: Path,
) -> str:
    result = attribute(model, ids, target, baseline_id=tokenizer.pad_id)
    target = result.target
    what = f"class {target}" if model.task_head is not None else f"token {token_text(tokenizer, target)!r} ({target})"
    write_csv(
        out / f"prompt{n}_attributions.csv",
        ["position", "token", "input_x_gradient", "integrated_gradients"],
        [
            [t, lab, float(a), float(b)]
            for t, (lab, a, b) in enumerate(
                zip(labels, result.input_x_gradient, result.integrated_gradients, strict=True)
            )
        ],
    )
    baseline = "zero embeddings" if tokenizer.pad_id is None else "the pad token everywhere"
    summary = (
        f"Explaining the logit of {what}: f(input) = {result.output:.4g}, f(baseline: {baseline}) = "
        f"{result.baseline_output:.4g}, sum of integrated gradients = {float(result.integrated_gradients.sum()):.4g}, "
        f"convergence delta = {result.delta:.2e}. Red raises the logit, blue lowers it."
    )
    return (
        paragraph(summary)
        + "<h4>gradient x input</h4>"
        + attribution_html(labels, result.input_x_gradient)
        + "<h4>integrated gradients</h4>"
        + attribution_html(labels, result.integrated_gradients)
    )


def _model_part(model: LanguageModel) -> str:
    config = model.config
    headers = ["family", "architecture", "parameters", "layers", "heads (kv)", "width", "context", "task head"]
    row = [
        model.family,
        model.architecture,
        model.num_parameters(),
        " + ".join(str(len(stack)) for stack in model.layer_stacks()),
        f"{config.n_head} ({config.n_kv_head})",
        config.n_embd,
        model.context_length,
        "yes" if model.task_head is not None else "no",
    ]
    return table(headers, [row])


def _or_note(title: str, build: Callable[..., str], *args: Any) -> list[str]:
    """A sub-section: what `build(*args)` makes, or a note saying why it does not apply to this model."""
    try:
        body = build(*args)
    except NotApplicable as reason:
        body = paragraph(f"Does not apply: {reason}", note=True)
    return [f"<h3>{html.escape(title)}</h3>", body]


def _probe_part(model: LanguageModel, tokenizer: Tokenizer, texts: list[str], labels: list[str], out: Path) -> str:
    names, features = layer_representations(model, tokenizer, texts)
    result = probe_layers(names, features, labels)
    rows = [
        [layer, acc, train] for layer, acc, train in zip(names, result.accuracy, result.train_accuracy, strict=True)
    ]
    write_csv(out / "probes.csv", ["layer", "test_accuracy", "train_accuracy"], rows)
    return (
        paragraph(
            f"Classes {', '.join(result.classes)}; {result.n_train} train and {result.n_test} test rows; "
            f"majority-class test accuracy {result.majority:.3f}. Features: each layer's residual stream averaged "
            "over the real tokens; a logistic regression per layer."
        )
        + image(probe_figure(result, out / "probes.png"), "probe accuracy per layer")
        + table(["layer", "test accuracy", "train accuracy"], rows)
    )


def write_inspection(
    model: LanguageModel,
    tokenizer: Tokenizer,
    prompts: list[str],
    out_dir: str | Path,
    target: str | None = None,
    target_class: int | None = None,
    probe_data: tuple[list[str], list[str]] | None = None,
    seed: int = 0,
) -> Path:
    """Inspect `model` on `prompts` into `out_dir`: attention heatmaps per layer, head scores, the logit lens
    (decoders), attributions of `target` (one token of text) or `target_class` (a task head; default: the model's
    own top choice), and linear probes on `probe_data` (texts, labels) if given. Returns the index.html path."""
    if not prompts:
        raise ConfigError("no prompt to inspect: give at least one")
    out = Path(out_dir)
    model.eval()
    device = model.input_embeddings().weight.device
    encoded = [encode_prompt(model, tokenizer, prompt) for prompt in prompts]
    target_id = resolve_target(model, tokenizer, target, target_class)
    out.mkdir(parents=True, exist_ok=True)
    sections = [("Model", _model_part(model))]
    maps_per_prompt = []
    for n, (prompt, ids) in enumerate(zip(prompts, encoded, strict=True)):
        labels, batch = token_labels(tokenizer, ids), torch.tensor([ids], device=device)
        attention, maps = _attention_part(model, tokenizer, n, batch, labels, out)
        maps_per_prompt.append(maps)
        parts = [paragraph(f"{len(ids)} tokens: {' | '.join(labels)}"), "<h3>Attention</h3>", attention]
        parts += _or_note("Logit lens", _lens_part, model, tokenizer, n, ids, labels, out)
        parts += _or_note("Attributions", _attribution_part, model, tokenizer, n, batch, labels, target_id, out)
        sections.append((f"Prompt {n}: {prompt[:60]!r}", "".join(parts)))
    heads = head_summary(model, maps_per_prompt, tokenizer, seed)
    headers = ["layer", "head", "entropy", "first token", "previous token", "induction"]
    rows = [[h.layer, h.head, h.entropy, h.first_token, h.previous_token, h.induction] for h in heads]
    write_csv(out / "heads.csv", headers, rows)
    note = (
        "Averages over the prompts' query positions. Entropy in nats; first token: mean attention on position 0 "
        "(an attention sink); previous token: mean attention on position "
        "i-1; induction: on a random token sequence repeated twice, mean attention on the token after the "
        "current token's previous occurrence (decoder-only models; n/a elsewhere)."
    )
    sections.append(("Heads", paragraph(note) + table(headers, rows)))
    if probe_data is not None:
        sections.append(("Linear probes", _probe_part(model, tokenizer, *probe_data, out)))
    index = out / "index.html"
    index.write_text(page(f"Inside a {model.family} model", sections), encoding="utf-8")
    return index
