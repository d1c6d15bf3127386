"""Metric computations (torchmetrics, sacrebleu) and the one-line definition reported with each metric."""

from __future__ import annotations

import math

import sacrebleu
import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from torchmetrics.text import ROUGEScore

METRIC_DEFINITIONS: dict[str, str] = {
    "acc": "share of items whose choice with the highest log-likelihood (summed over its tokens) is the gold one",
    "acc_norm": "acc after dividing each choice's log-likelihood by the choice's length in characters "
    "(lm-evaluation-harness acc_norm)",
    "f1": "macro-averaged F1 over the classes (torchmetrics MulticlassF1Score, average='macro')",
    "bleu": "corpus BLEU, 0-100 (sacrebleu defaults: 13a tokenizer, exponential smoothing) of the stripped "
    "generations against the references",
    "rouge1": "ROUGE-1 F-measure, 0-1 (torchmetrics ROUGEScore; best over the references)",
    "rouge2": "ROUGE-2 F-measure, 0-1 (torchmetrics ROUGEScore; best over the references)",
    "rougeL": "ROUGE-L (longest common subsequence) F-measure, 0-1 (torchmetrics ROUGEScore; best over the references)",
    "token_perplexity": "exp(total negative log-likelihood / tokens scored); depends on the tokenizer",
    "word_perplexity": "exp(total negative log-likelihood / whitespace-separated words)",
    "byte_perplexity": "exp(total negative log-likelihood / UTF-8 bytes)",
    "bits_per_byte": "total negative log-likelihood in nats / ln 2 / UTF-8 bytes; compares across tokenizers",
    "pct_stereotype": "share of pairs where sent_more (the more stereotyping sentence) gets the higher "
    "log-likelihood; 0.5 = no preference",
    "likelihood_diff": "mean absolute difference of the two sentences' log-likelihoods (nats)",
    "extraction_rate": "share of sampled training sequences whose true suffix greedy decoding from the prefix "
    "reproduces token for token",
    "token_match": "mean share of suffix tokens that greedy decoding reproduces at their position",
}


def choice_metrics(
    lls: list[list[float]], choice_lengths: list[list[int]], golds: list[int], names: list[str]
) -> tuple[dict[str, float], list[int]]:
    """acc / acc_norm / f1 from per-choice log-likelihoods; also returns the (unnormalised) predictions."""
    preds = [max(range(len(ll)), key=ll.__getitem__) for ll in lls]
    norm_preds = [
        max(range(len(ll)), key=lambda i, ll=ll, n=n: ll[i] / n[i]) for ll, n in zip(lls, choice_lengths, strict=True)
    ]
    return classification_metrics(preds, golds, max(map(len, lls)), names, norm_preds), preds


def classification_metrics(
    preds: list[int], golds: list[int], num_classes: int, names: list[str], norm_preds: list[int] | None = None
) -> dict[str, float]:
    """acc (micro accuracy), acc_norm (accuracy of `norm_preds`) and f1 (macro F1) as torchmetrics computes them."""
    num_classes = max(2, num_classes)
    target = torch.tensor(golds)
    computed = {
        "acc": lambda: MulticlassAccuracy(num_classes, average="micro")(torch.tensor(preds), target),
        "acc_norm": lambda: MulticlassAccuracy(num_classes, average="micro")(torch.tensor(norm_preds), target),
        "f1": lambda: MulticlassF1Score(num_classes, average="macro")(torch.tensor(preds), target),
    }
    return {name: round(float(computed[name]()), 6) for name in names}


def bleu(hypotheses: list[str], references: list[list[str]]) -> float:
    """Corpus BLEU (sacrebleu); items may have different numbers of references."""
    streams = [[refs[i] if i < len(refs) else None for refs in references] for i in range(max(map(len, references)))]
    return sacrebleu.corpus_bleu(hypotheses, streams).score


def rouge(hypotheses: list[str], references: list[list[str]], keys: list[str]) -> dict[str, float]:
    """ROUGE F-measures (torchmetrics), the best over each item's references."""
    if not keys:
        return {}
    scores = ROUGEScore(rouge_keys=tuple(keys))(hypotheses, references)
    return {key: float(scores[f"{key}_fmeasure"]) for key in keys}


def generation_metrics(hypotheses: list[str], references: list[list[str]], names: list[str]) -> dict[str, float]:
    """The requested BLEU / ROUGE metrics of generations against references."""
    out = {"bleu": bleu(hypotheses, references)} if "bleu" in names else {}
    out.update(rouge(hypotheses, references, [n for n in names if n.startswith("rouge")]))
    return {name: round(out[name], 6) for name in names}


def perplexity_metrics(nll: float, tokens: int, words: int, n_bytes: int) -> dict[str, float]:
    """Perplexities per token, word and byte, and bits per byte, from a total negative log-likelihood (nats)."""
    return {
        "token_perplexity": round(math.exp(nll / tokens), 6),
        "word_perplexity": round(math.exp(nll / words), 6),
        "byte_perplexity": round(math.exp(nll / n_bytes), 6),
        "bits_per_byte": round(nll / math.log(2) / n_bytes, 6),
    }
