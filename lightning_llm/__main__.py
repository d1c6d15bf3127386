"""`python -m lightning_llm <verb>`, the same as the installed `lightning-llm <verb>` (lightning_llm.cli.main)."""

from lightning_llm.cli.main import cli

cli()
