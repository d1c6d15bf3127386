"""The server under load (`python -m bench.serve`): tokens/s and p50/p95 latency at 1, 8 and 32 concurrent clients,
each against the same requests sent one at a time (1 client), and at 32 clients against a server that decodes one
request at a time (`max_batch_size=1`: the same queue, no batching).

The server is `lightning-llm serve` in its own process (as users run it; one torch thread: on a shared 2-core machine
two threads made single steps 8x slower) with a GPT-2-shaped model of random weights
(6 layers x 256, context 256, vocabulary 4096: a SentencePiece tokenizer trained on the embedded corpus, cached);
the clients are the official `openai` client's async API in this process. Each request: a passage of the embedded
corpus (8 to 40 tokens), 32 new tokens, greedy; 32 requests per row. Prints a markdown table; `--quick` shrinks
it to check the script.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import machine

LAYERS, WIDTH, CONTEXT, VOCAB = 6, 256, 256, 4096


def write_checkpoint(folder: Path) -> Path:
    """A checkpoint in our format: the model's family and config, random weights, a trained tokenizer."""
    import torch

    from lightning_llm.data.corpus import pydoc_topics
    from lightning_llm.models import get_family
    from lightning_llm.tokenizers.trained import train_or_load_tokenizer

    texts = [row["text"] for row in pydoc_topics()]
    tokenizer, _, _ = train_or_load_tokenizer(texts, "bpe", [], "bench.serve:pydoc_topics", folder / "cache", VOCAB)
    config = {"vocab_size": tokenizer.vocab_size, "block_size": CONTEXT, "n_layer": LAYERS, "n_head": 8,
              "n_embd": WIDTH, "dropout": 0.0}  # fmt: skip
    torch.manual_seed(0)
    model = get_family("gpt").build(config)
    path = folder / "bench.ckpt"
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"model_family": "gpt", "model_config": model.config.to_dict(), "state_dict": state,
                "tokenizer": tokenizer.to_bytes()}, path)  # fmt: skip
    return path


def prompts(n: int) -> list[str]:
    """`n` passages of the embedded corpus, of 6 to 30 words."""
    from lightning_llm.data.corpus import pydoc_topics

    words = " ".join(row["text"] for row in pydoc_topics()).split()
    out, at = [], 0
    for i in range(n):
        size = 6 + (i * 7) % 25
        out.append(" ".join(words[at : at + size]))
        at += size
    return out


class Server:
    """`lightning-llm serve` in a process of its own, on a free port."""

    def __init__(self, checkpoint: Path, max_batch_size: int) -> None:
        command = [sys.executable, "-m", "lightning_llm", "serve", f"model.pretrained={checkpoint}", "port=0",
                   f"max_batch_size={max_batch_size}", "model_name=bench", "log_level=warning",
                   "num_threads=1"]  # fmt: skip
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        line = self.process.stderr.readline()
        if " at " not in line:
            self.process.kill()
            raise RuntimeError(f"the server did not start: {line}{self.process.stderr.read()}")
        self.url = line.split(" at ")[1].split("/v1")[0] + "/v1"

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


async def load(url: str, requests: list[str], clients: int, new_tokens: int) -> dict[str, float]:
    """Send `requests` with `clients` in flight at a time; tokens/s over the whole and latency percentiles."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600)
    gate = asyncio.Semaphore(clients)
    latencies: list[float] = []
    tokens = 0

    async def one(prompt: str) -> None:
        nonlocal tokens
        async with gate:
            started = time.perf_counter()
            reply = await client.completions.create(model="bench", prompt=prompt, max_tokens=new_tokens,
                                                    temperature=0)  # fmt: skip
            latencies.append(time.perf_counter() - started)
            tokens += reply.usage.completion_tokens

    started = time.perf_counter()
    await asyncio.gather(*(one(p) for p in requests))
    wall = time.perf_counter() - started
    await client.close()
    cuts = statistics.quantiles(latencies, n=20)
    return {"tokens/s": tokens / wall, "p50": statistics.median(latencies), "p95": cuts[18], "tokens": tokens}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few requests and tokens: check the script runs")
    args = parser.parse_args(argv)
    n, new_tokens = (8, 8) if args.quick else (32, 32)
    requests = prompts(n)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = write_checkpoint(Path(tmp))
        for batch in (32, 1):
            server = Server(checkpoint, batch)
            try:
                asyncio.run(load(server.url, requests[:2], 2, 2))  # warm up
                for clients in (1, 8, 32) if batch > 1 else (32,):
                    rows.append((clients, batch, asyncio.run(load(server.url, requests, clients, new_tokens))))
            finally:
                server.close()
    base = rows[0][2]["tokens/s"]
    print(f"{n} requests of {new_tokens} new tokens; {machine()}\n")
    print("| clients | max_batch_size | tokens/s | vs 1 client | p50 latency | p95 latency |")
    print("|---:|---:|---:|---:|---:|---:|")
    for clients, batch, r in rows:
        print(f"| {clients} | {batch} | {r['tokens/s']:,.0f} | {r['tokens/s'] / base:.2f} | {r['p50']:.2f} s "
              f"| {r['p95']:.2f} s |")  # fmt: skip


if __name__ == "__main__":
    main()
