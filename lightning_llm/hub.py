"""Whether the Hugging Face Hub can be reached: the offline switches, then one bounded probe per process.

Offline, a hub name fails at once with one line instead of `datasets`' five retries per task.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
from urllib.parse import urlparse

_TRUE = {"1", "on", "yes", "true"}
OFFLINE_SWITCHES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def hub_offline(switches: tuple[str, ...] = OFFLINE_SWITCHES) -> bool:
    """Whether an environment switch says to stay offline."""
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in switches)


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub's host accepts a TCP connection; DNS included, bounded by `timeout` (never hangs);
    asked once per process."""
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    ok = threading.Event()

    def probe() -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            ok.set()
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return ok.is_set()


def hub_available() -> bool:
    """Not switched offline and reachable."""
    return not hub_offline() and hub_reachable()


def dataset_revision(name: str) -> str | None:
    """The commit a Hub dataset's main branch is at (what a streamed read of it gets), or None where the Hub
    gives no answer (offline, unreachable, gated without a token)."""
    if not hub_available():
        return None
    from huggingface_hub import HfApi

    try:
        return HfApi().dataset_info(name, timeout=10).sha
    except Exception:  # huggingface_hub raises many kinds (HTTP, auth, validation): each means no answer
        return None
