"""data.packing: documents packed with document masks read as if alone; one document per row; clear refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_llm.data.sampling import DocumentRows
from lightning_llm.errors import ConfigError
from lightning_llm.models.bert import BERT
from lightning_llm.models.gpt import GPT
from lightning_llm.objectives import IGNORE_INDEX, CausalLM, MaskedLM, ObjectiveContext
from lightning_llm.objectives.packing import document_layout
from lightning_llm.recipe import train
from lightning_llm.recipe.checks import check_config

EOS = 3
TINY_MODEL = dict(vocab_size=50, block_size=64, n_layer=2, n_head=4, n_embd=32)


class StubTokenizer:
    pad_id, unk_id, bos_id, eos_id, vocab_size = 0, 1, 2, EOS, 50

    def token_to_id(self, token: str) -> int:
        return 4


class LearnedPrefix(nn.Module):
    """Three trainable vectors in front of every sequence (what prompt tuning attaches)."""

    length = 3

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.vectors = nn.Parameter(torch.randn(self.length, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.vectors.expand(x.size(0), -1, -1), x), dim=1)


def documents(*lengths: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.cat((torch.randint(5, 50, (n - 1,), generator=generator), torch.tensor([EOS]))) for n in lengths]


def test_document_layout_restarts_ids_and_positions_after_each_eos():
    row = torch.tensor([[7, 8, EOS, 9, EOS, 5, 6, 7]])
    ids, positions = document_layout(row, EOS)
    assert ids.tolist() == [[0, 0, 0, 1, 1, 2, 2, 2]]
    assert positions.tolist() == [[0, 1, 2, 0, 1, 0, 1, 2]]


MODELS = {
    "gpt-learned": lambda: GPT(**TINY_MODEL),
    "gpt-rope-gqa": lambda: GPT(**TINY_MODEL, positions="rope", n_kv_head=2, norm="rmsnorm", gated=True),
    "gpt-prefix": lambda: GPT(**TINY_MODEL),
    "bert": lambda: BERT(**TINY_MODEL),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_a_document_packed_beside_others_reads_as_if_alone(name):
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    if name.endswith("prefix"):
        model.attach_prefix(LearnedPrefix(model.config.n_embd))
    before, doc, after = documents(9, 12, 15)
    row = torch.cat((before, doc, after))[None]
    ids, positions = document_layout(row, EOS)
    span = slice(len(before), len(before) + len(doc))
    with torch.no_grad():
        alone = model.encode(doc[None])
        packed = model.encode(row, document_ids=ids, position_ids=positions)
        concatenated = model.encode(row)
        other_neighbours = torch.cat((documents(4, seed=1)[0], doc, documents(20, seed=2)[0]))[None]
        ids2, positions2 = document_layout(other_neighbours, EOS)
        packed2 = model.encode(other_neighbours, document_ids=ids2, position_ids=positions2)
    torch.testing.assert_close(packed[0, span], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed2[0, 4 : 4 + len(doc)], alone[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(concatenated[0, span], alone[0], atol=1e-3)  # without the masks it would differ


def test_causal_loss_never_predicts_across_a_boundary():
    objective = CausalLM()
    objective.configure(ObjectiveContext(tokenizer=StubTokenizer(), packing="doc_mask"))
    block = torch.cat(documents(5, 7, 9))[:17]
    batch = objective.collate([block, block])
    inputs, labels = batch["input_ids"], batch["labels"]
    crossing = inputs == EOS  # an eos input's next token starts another document
    assert crossing.any() and (labels[crossing] == IGNORE_INDEX).all()
    assert (labels[~crossing] != IGNORE_INDEX).all()
    torch.testing.assert_close(batch["document_ids"], document_layout(inputs, EOS)[0])


def test_padded_rows_hold_one_document_each_and_lose_no_token():
    docs = documents(5, 40, 3, 18)
    stream = torch.cat(docs)
    rows = DocumentRows(stream, EOS, length=17, stride=16)  # the causal layout: windows overlap by one token
    pieces = [rows[i] for i in range(len(rows))]
    assert all((piece[:-1] != EOS).all() for piece in pieces)  # an eos only ever ends a row
    assert all(len(piece) <= 17 for piece in pieces)
    assert [len(piece) for piece in pieces] == [5, 17, 17, 8, 3, 17, 2]
    labels = [t for piece in pieces for t in piece[1:].tolist()]  # every token but each document's first, once
    assert labels == [t for d in docs for t in d[1:].tolist()]

    objective = CausalLM()
    objective.configure(ObjectiveContext(tokenizer=StubTokenizer(), packing="pad"))
    batch = objective.collate(pieces[:3])
    assert batch["input_ids"].size(1) == max(len(p) for p in pieces[:3]) - 1
    short = len(pieces[0]) - 1
    assert (batch["labels"][0, short:] == IGNORE_INDEX).all() and (batch["labels"][0, :short] != IGNORE_INDEX).all()


def test_masked_lm_pads_with_an_attention_mask():
    objective = MaskedLM()
    objective.configure(ObjectiveContext(tokenizer=StubTokenizer(), packing="pad"))
    batch = objective.collate(documents(4, 9))
    assert batch["attention_mask"].tolist()[0] == [1] * 6 + [0] * 5
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()


@pytest.mark.parametrize(
    ("overrides", "packing"),
    [((), "doc_mask"), ((), "pad"), (("model=bert", "objective=mlm"), "doc_mask")],
)
def test_training_runs_with_each_packing(make_cfg, overrides, packing):
    results = train(make_cfg(*overrides, f"data.packing={packing}", "trainer.max_steps=30", "~callbacks.sample"))
    start, end = results["val_start"]["val/loss"], results["metrics"]["val/loss"]
    assert end < start
    concat_blocks = results["data"]["tokens"]["train"] // make_cfg().data.block_size
    if packing == "pad":  # one short document per row: more rows than packed blocks
        assert results["data"]["blocks"]["train"] > concat_blocks


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("model=t5", "objective=span", "data.packing=doc_mask"), "data.packing='doc_mask' does not fit"),
        (("data.packing=ragged",), "use one of ['concat', 'doc_mask', 'pad']"),
    ],
)
def test_packing_that_cannot_apply_is_refused_before_loading(make_cfg, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_config(make_cfg(*overrides))


def test_random_windows_need_a_packed_stream(make_cfg):
    with pytest.raises(ConfigError, match="data.windows=random reads a packed stream"):
        check_config(make_cfg("data.packing=pad", "data.windows=random"))


def test_families_without_document_masks_are_refused(make_cfg, monkeypatch):
    monkeypatch.setattr(GPT, "document_masks", False)
    with pytest.raises(ConfigError, match="family 'gpt' does not"):
        check_config(make_cfg("data.packing=doc_mask"))
