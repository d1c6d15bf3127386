"""Look inside a trained model: attention maps and head scores, the logit lens, token attributions (Captum) and
linear probes, written as one offline report by `write_inspection`."""

from lightning_llm.inspect.attention import (
    AttentionMap,
    HeadScore,
    attention_probs,
    head_summary,
    induction_scores,
    record_attention,
    repeated_tokens,
)
from lightning_llm.inspect.attribution import Attribution, attribute, attribution_html, from_embeddings
from lightning_llm.inspect.lens import LogitLens, logit_lens, next_token_rank, record_residuals, top_tokens
from lightning_llm.inspect.probes import ProbeResult, fit_probe, layer_representations, probe_layers, stdlib_module_task
from lightning_llm.inspect.prompts import encode_prompt, token_labels
from lightning_llm.inspect.report import resolve_target, write_inspection

__all__ = [
    "AttentionMap",
    "Attribution",
    "HeadScore",
    "LogitLens",
    "ProbeResult",
    "attention_probs",
    "attribute",
    "attribution_html",
    "encode_prompt",
    "fit_probe",
    "from_embeddings",
    "head_summary",
    "induction_scores",
    "layer_representations",
    "logit_lens",
    "next_token_rank",
    "probe_layers",
    "record_attention",
    "record_residuals",
    "repeated_tokens",
    "resolve_target",
    "stdlib_module_task",
    "token_labels",
    "top_tokens",
    "write_inspection",
]
