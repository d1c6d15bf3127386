"""Interoperability with Hugging Face: import pretrained checkpoints, export ours, use their tokenizers."""

from lightning_llm.interop.hf import ImportInfo, export_hf, load_hf_model
from lightning_llm.interop.tokenizer import HFTokenizer, export_tokenizer, load_tokenizer_bytes

__all__ = ["HFTokenizer", "ImportInfo", "export_hf", "export_tokenizer", "load_hf_model", "load_tokenizer_bytes"]
