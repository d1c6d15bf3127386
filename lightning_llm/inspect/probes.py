"""Linear probes: what each layer's representation (its residual stream, averaged over the real tokens) makes
linearly decodable. One multinomial logistic regression per layer (plain torch, L-BFGS), a fixed train/test
split, accuracy per layer against the majority-class baseline."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lightning_llm.inspect.lens import record_residuals
from lightning_llm.inspect.prompts import frame
from lightning_llm.models import LanguageModel
from lightning_llm.tokenizers import Tokenizer, pad_rows


@dataclass
class ProbeResult:
    """Test accuracy of a probe per layer ("embeddings", "layer 0", ...)."""

    layers: list[str]
    accuracy: list[float]
    train_accuracy: list[float]
    majority: float  # the test accuracy of always answering the most frequent training class
    classes: list[str]
    n_train: int
    n_test: int


def stdlib_module_task(n_classes: int = 4, per_class: int = 100, seed: int = 0) -> tuple[list[str], list[str]]:
    """The embedded docstring -> module task: docstrings of the `n_classes` modules with the most documented
    functions, `per_class` of each (a seeded sample). Returns (texts, labels)."""
    from lightning_llm.data.corpus import stdlib_functions

    rows = list(stdlib_functions())
    modules = [m for m, _ in Counter(r["module"] for r in rows).most_common(n_classes)]
    generator = torch.Generator().manual_seed(seed)
    texts, labels = [], []
    for module in modules:
        docs = [r["docstring"] for r in rows if r["module"] == module]
        for i in torch.randperm(len(docs), generator=generator)[:per_class].tolist():
            texts.append(docs[i])
            labels.append(module)
    return texts, labels


@torch.no_grad()
def layer_representations(
    model: LanguageModel, tokenizer: Tokenizer, texts: list[str], batch_size: int = 32
) -> tuple[list[str], torch.Tensor]:
    """Each layer's residual stream (first layer stack: the encoder of an encoder-decoder) averaged over each
    text's real tokens, texts cut to the model's context. Returns (layer names, (layers, texts, n_embd))."""
    device = model.input_embeddings().weight.device
    names: list[str] = []
    batches = []
    for i in range(0, len(texts), batch_size):
        encoded = tokenizer.encode_batch(texts[i : i + batch_size])
        rows = [frame(model, tokenizer, ids)[: model.context_length] or [tokenizer.eos_id] for ids in encoded]
        ids = pad_rows(rows, tokenizer.pad_id or 0).to(device)
        mask = (torch.arange(ids.size(1)) < torch.tensor([len(r) for r in rows])[:, None]).to(device)
        with record_residuals(model) as streams:
            model.encode(ids, mask.long())
        weights = mask.float()[None, :, :, None] / mask.sum(1).view(1, -1, 1, 1)
        hidden = torch.stack([h[:, model.prefix_length :] for _, h in streams]).float()
        batches.append((hidden * weights).sum(2).cpu())
        names = [name for name, _ in streams]
    return names, torch.cat(batches, dim=1)


def fit_probe(
    features: torch.Tensor, labels: torch.Tensor, train: torch.Tensor, weight_decay: float = 1e-3, steps: int = 100
) -> tuple[torch.Tensor, torch.Tensor]:
    """A logistic regression on standardised features (rows `train`), L-BFGS with L2 `weight_decay`.
    Returns the predicted class of every row and the fitted weight matrix (features + bias, classes)."""
    x = features.double()
    mean, std = x[train].mean(0), x[train].std(0).clamp_min(1e-6)
    x = torch.cat(((x - mean) / std, torch.ones(len(x), 1, dtype=x.dtype)), dim=1)
    n_classes = int(labels.max()) + 1
    weight = torch.zeros(x.size(1), n_classes, dtype=x.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x[train] @ weight, labels[train]) + weight_decay * weight[:-1].square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return (x @ weight).argmax(-1), weight.detach()


def probe_layers(
    layers: list[str], features: torch.Tensor, labels: list[str], test_fraction: float = 0.3, seed: int = 0
) -> ProbeResult:
    """A probe per layer of `features` (layers, n, dim) on a seeded train/test split of the n labelled rows."""
    classes = sorted(set(labels))
    y = torch.tensor([classes.index(label) for label in labels])
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = max(1, round(test_fraction * len(y)))
    test, train = order[:n_test], order[n_test:]
    accuracy, train_accuracy = [], []
    for layer in features:
        predicted, _ = fit_probe(layer, y, train)
        accuracy.append(float((predicted[test] == y[test]).float().mean()))
        train_accuracy.append(float((predicted[train] == y[train]).float().mean()))
    majority_class = Counter(y[train].tolist()).most_common(1)[0][0]
    majority = float((y[test] == majority_class).float().mean())
    return ProbeResult(layers, accuracy, train_accuracy, majority, classes, len(train), n_test)
