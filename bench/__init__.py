"""Benchmarks: our GPT vs Hugging Face GPT-2 per training step, and Lightning's per-step overhead.

Run with `make bench` or `python -m bench [--quick] [--threads N]`; see bench/README.md.
"""
