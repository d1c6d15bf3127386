"""Commands: `lightning-llm <verb>` (cli.main; `python -m lightning_llm <verb>`, and `python train.py` for `train`)
with one error handler and exit-code convention (cli.handler)."""
