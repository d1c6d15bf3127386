"""Interoperability with Hugging Face: import pretrained checkpoints, export ours (the families' converters
say how names and configs map; this package reads and writes the folders)."""

from lightning_llm.interop.hf import ImportInfo, export_hf, load_hf_model

__all__ = ["ImportInfo", "export_hf", "load_hf_model"]
