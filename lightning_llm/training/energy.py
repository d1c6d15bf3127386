"""CodeCarbon's hardware probe, started before torch and Lightning import (this module imports neither).

A tracker's first start probes the machine: py-cpuinfo in a subprocess plus CodeCarbon's CPU power table, about
2 s of CPU. Started with training it took a core from the first steps (100 steps of the baby GPT: 5.7 s against
3.2 s without a tracker); started while the run imports torch and Lightning on one core it costs less (on 2 cores:
start-up 0.9 s longer, the first steps 2 s shorter; bench/README.md). CodeCarbon keeps the result for the process
(`codecarbon.core.hardware_cache`), so the tracker that `ComputeMonitor` starts with training finds it done.
"""

from __future__ import annotations

import contextlib
import logging
import threading

_probe: threading.Thread | None = None


def quiet_codecarbon() -> None:
    """CodeCarbon logs warnings (an unknown CPU model, a default power) before its own log_level applies."""
    logging.getLogger("codecarbon").setLevel(logging.ERROR)


def _probe_hardware() -> None:
    with contextlib.suppress(Exception):  # the tracker then probes again, meets the failure and reports it once
        from codecarbon.core import cpu
        from codecarbon.core.hardware_cache import get_cached_tdp

        quiet_codecarbon()
        get_cached_tdp(cpu)


def start_hardware_probe() -> None:
    """Probe the hardware on a daemon thread now (once per process)."""
    global _probe
    if _probe is None:
        _probe = threading.Thread(target=_probe_hardware, name="codecarbon-probe", daemon=True)
        _probe.start()


def wait_for_hardware_probe() -> None:
    """Wait until a probe started earlier has finished (none started: return at once), so a tracker starting
    now reuses it instead of probing a second time beside it."""
    if _probe is not None:
        _probe.join()
