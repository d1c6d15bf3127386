"""Logger factories for conf/logger where Lightning's own classes need a little help."""

from __future__ import annotations

import netrc
import os
import socket
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger


def _wandb_api_key_present() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(urlparse(_wandb_base_url()).hostname or "") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def _wandb_base_url() -> str:
    return os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")


def _wandb_reachable(timeout: float = 2.0) -> bool:
    url = urlparse(_wandb_base_url())
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def wandb_online() -> bool:
    """Whether W&B can sync now: not forced offline, an API key present and the server reachable."""
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        return False
    return _wandb_api_key_present() and _wandb_reachable()


def wandb_logger(offline: bool | None = None, **kwargs: Any) -> WandbLogger:
    """A WandbLogger that goes offline by itself with no API key or no network: it never prompts or hangs."""
    if offline is None:
        offline = not wandb_online()
    return WandbLogger(offline=offline, **kwargs)
