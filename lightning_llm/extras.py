"""Optional features and the extra that installs each (pyproject.toml's [project.optional-dependencies]): the one
place where a missing package becomes one line naming the extra, `pip install 'lightning-llm[<extra>]'`.

`pip install lightning-llm` installs what training, fine-tuning and evaluation need; `[all]` adds every feature
below (`make install` installs `[dev]`, which includes `[all]`).
"""

from __future__ import annotations

import importlib.util

from lightning_llm.errors import ConfigError

#: import name -> (the package's name as users know it, the extra that installs it)
OPTIONAL = {
    "opacus": ("Opacus", "privacy"),
    "captum": ("Captum", "inspect"),
    "codecarbon": ("CodeCarbon", "energy"),
    "litdata": ("LitData", "shards"),
    "ray": ("Ray Data", "ray"),
    "lm_eval": ("lm-evaluation-harness", "harness"),
    "bitsandbytes": ("bitsandbytes", "quant"),
    "fastapi": ("FastAPI", "serve"),
    "uvicorn": ("uvicorn", "serve"),
    "gguf": ("gguf", "gguf"),
    "wandb_workspaces": ("wandb-workspaces", "dashboards"),
}
#: what to run after the extra where pip cannot install the package with it: LitData declares torchvision, which
#: would replace the pinned torch, so its extra holds its other needs and LitData itself comes without them
AFTERWARDS = {"litdata": "pip install --no-deps litdata==0.2.76"}


def install_command(module: str) -> str:
    """The command that installs the optional package `module` (its import name)."""
    command = f"pip install 'lightning-llm[{OPTIONAL[module][1]}]'"
    return f"{command} && {AFTERWARDS[module]}" if module in AFTERWARDS else command


def require(module: str, feature: str) -> None:
    """A one-line ConfigError when `feature` (as the user asked for it, e.g. `privacy=dp`) needs the optional
    package `module` and it is not installed."""
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{feature} needs {OPTIONAL[module][0]}: {install_command(module)}")
