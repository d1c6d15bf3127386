"""Commands: `train.py` (Hydra) and `python -m lightning_llm <verb>` share one error handler (cli.handler)."""
