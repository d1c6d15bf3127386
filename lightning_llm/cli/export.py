"""`lightning-llm export model.pretrained=<run or .ckpt> <out>`: one of our checkpoints as a Hugging Face model
folder (config.json, model.safetensors, tokenizer files) that transformers' Auto classes load, or with
`--format gguf` as one GGUF file (llama.cpp, Ollama, LM Studio) for the decoders llama.cpp runs: GPT-2 style
(learned positions) as its `gpt2` architecture, Llama style (RoPE, RMSNorm, SwiGLU) as `llama` (`qwen2` with q/k/v
biases), the tokenizer and chat template inside; `--outtype f32|f16|bf16|q8_0`."""

from __future__ import annotations

import argparse

from lightning_llm.cli.arguments import add_checkpoint_argument, checkpoint_of

#: the largest logit difference --verify accepts from transformers' reading of the GGUF file, per --outtype
GGUF_TOLERANCE = {"f32": 1e-4, "f16": 5e-2, "bf16": 2e-1, "q8_0": 5e-1}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(parser, "a .ckpt file or a run folder (its checkpoints/last.ckpt)")
    parser.add_argument("out", metavar="OUT", help="hf: the folder to write (new or empty); gguf: the file to write")
    parser.add_argument("--format", choices=("hf", "gguf"), default="hf", help="a Hugging Face folder or a GGUF file")
    parser.add_argument("--outtype", choices=("f32", "f16", "bf16", "q8_0"), default="f16",
                        help="gguf: the weights' type (vectors stay f32; q8_0: llama.cpp's 8-bit blocks)")  # fmt: skip
    parser.add_argument("--no-tokenizer", action="store_true", help="hf: write the model only")
    parser.add_argument("--verify", action="store_true", help="load it with transformers and compare logits")


def run(args: argparse.Namespace) -> None:
    from pathlib import Path

    from lightning_llm.checkpoints import is_hf_source, load_pretrained, model_from_pretrained, resolve_checkpoint_path
    from lightning_llm.errors import ConfigError

    out = Path(args.out)
    if args.format == "gguf" and out.exists():
        raise ConfigError(f"{out} exists: choose a new file name (nothing is overwritten)")
    if args.format == "hf" and out.exists() and any(out.iterdir()):
        raise ConfigError(f"out_dir {out} is not empty: choose a new folder (nothing is overwritten)")
    checkpoint, key = checkpoint_of(args.checkpoint)
    gguf_of_hf = args.format == "gguf" and is_hf_source(checkpoint)  # e.g. an imported GPT-2 or Llama folder
    source = checkpoint if gguf_of_hf else resolve_checkpoint_path(checkpoint, key=key)
    pretrained = load_pretrained(source, key=key)
    if pretrained.finetune is not None:
        raise ConfigError(
            f"{source}: finetune={pretrained.finetune.name} keeps modules of its own (no Hugging Face place): export "
            "its base, or fine-tune with lora, full or freeze"
        )
    extra = sorted(k for k in pretrained.state_dict if k.split(".")[0] == "task_head")
    if extra:
        raise ConfigError(f"{source}: weights {extra[0]!r} (a task head) have no Hugging Face place")
    model = model_from_pretrained(pretrained)
    if args.format == "gguf":
        export_gguf_file(model, pretrained.tokenizer, out, args.outtype, args.verify)
        return
    from lightning_llm.interop.hf import export_hf

    written = export_hf(model, out, None if args.no_tokenizer else pretrained.tokenizer)
    print(f"wrote {', '.join(sorted(p.name for p in written.iterdir()))} to {written}")
    if args.verify:
        from lightning_llm.interop.verify import compare_with_transformers

        diff = compare_with_transformers(model, written)
        print(f"transformers loads it: max |logit difference| = {diff:.2e}")
        if diff > 1e-4:
            raise ConfigError(f"the export differs from the checkpoint by {diff:.2e} > 1e-4 in logits")


def export_gguf_file(model, tokenizer, out, outtype: str, verify: bool) -> None:
    """Write the GGUF file, say what is in it, and with `verify` read it back with transformers."""
    from lightning_llm.errors import ConfigError
    from lightning_llm.interop.gguf import compare_with_transformers, export_gguf

    out.parent.mkdir(parents=True, exist_ok=True)
    written = export_gguf(model, tokenizer, out, outtype)
    template = "its chat template" if written.chat_template else "no chat template (the checkpoint has none)"
    print(
        f"wrote {written.path} ({written.bytes / 1e6:.1f} MB): llama.cpp architecture {written.architecture}, "
        f"{written.tensors} tensors in {outtype}, a {written.tokenizer} tokenizer, {template}"
    )
    if verify:
        check = compare_with_transformers(model, tokenizer, written.path)
        diff, tolerance = check["max_logit_diff"], GGUF_TOLERANCE[outtype]
        print(f"transformers reads it: max |logit difference| = {diff:.2e}, same token ids: {check['same_token_ids']}")
        if diff > tolerance or not check["same_token_ids"]:
            raise ConfigError(f"the GGUF file differs from the checkpoint: {diff:.2e} (tolerance {tolerance:.0e})")
