"""CodeCarbon in a process of its own, so that no thread of the training process runs a subprocess.

CodeCarbon's tracker probes the machine with subprocesses (`lscpu`, py-cpuinfo) and measures from a timer
thread. Run on a thread of the training process, that probe deadlocked a run after training: the DataLoader
workers forked while the thread sat in `Popen`, inherited the write end of Popen's error pipe, and Popen waited
for an EOF that never came while the main thread waited for the thread (issue 27). Here the tracker lives in a
child process (`python -m lightning_llm.training.energy`), started by the main thread, which only writes
command lines to it and reads one JSON line back: no thread, no lock and no wait on an EOF in the training
process. CodeCarbon measures the whole machine (its machine mode), so which process hosts it does not matter.

The child starts with the run (`start_meter`, while torch and Lightning import), probes the hardware then, and
starts measuring when told (`EnergyMeter.start`, with training); it exits when stopped, or by itself within a
second of its parent's death.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import subprocess
import sys
import time
from typing import IO, Any

log = logging.getLogger("lightning_llm.training.energy")

#: how long the parent waits for the child's figures after `stop` before it gives up on them (never hangs)
STOP_TIMEOUT_S = 30.0


class EnergyMeter:
    """A CodeCarbon tracker in a child process: `start()` with training, `stop()` returns its figures (or None,
    with one warning line saying why)."""

    def __init__(self, country_iso_code: str, measure_power_secs: float) -> None:
        self.settings = (country_iso_code, float(measure_power_secs))
        self._process: subprocess.Popen[str] | None = subprocess.Popen(
            [sys.executable, "-m", "lightning_llm.training.energy", country_iso_code, str(measure_power_secs)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            close_fds=True,
        )

    def start(self) -> None:
        """Start measuring (the hardware probe ran when the process started)."""
        self._send("start")

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> dict[str, Any] | None:
        """Stop measuring: {"energy_kwh", "co2_kg", "energy_cpu_kwh", "energy_gpu_kwh", "energy_ram_kwh"}, or None
        when CodeCarbon failed (one warning)."""
        process, self._process = self._process, None
        if process is None:
            return None
        reply: dict[str, Any] = {"error": f"no answer within {timeout:.0f} s"}
        try:
            process.stdin.write("stop\n")
            process.stdin.flush()
            line = _read_line(process.stdout, timeout)
            if line:
                reply = json.loads(line)
        except BrokenPipeError:
            pass  # the process is gone: said below
        except (OSError, ValueError) as err:
            reply = {"error": f"{type(err).__name__}: {err}"}
        finally:
            _end(process)
        if "error" in reply and process.returncode not in (0, None):
            reply = {"error": f"its process ended with exit code {process.returncode}"}
        if "error" in reply:
            log.warning("codecarbon failed (%s): no energy or CO2 numbers for this run", reply["error"])
            return None
        return reply

    def close(self) -> None:
        """End the child without its figures (a run that never trained)."""
        process, self._process = self._process, None
        if process is not None:
            _end(process)

    def _send(self, command: str) -> None:
        if self._process is not None:
            with contextlib.suppress(OSError):  # a dead child answers `stop` with nothing: reported there
                self._process.stdin.write(command + "\n")
                self._process.stdin.flush()


def _read_line(stream: IO[str], timeout: float) -> str:
    """One line from a pipe, or "" after `timeout` seconds (a wedged child never blocks the run)."""
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline() if ready else ""


def _end(process: subprocess.Popen[str]) -> None:
    for stream in (process.stdin, process.stdout):
        with contextlib.suppress(OSError):
            stream.close()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


_early: EnergyMeter | None = None


def start_meter(country_iso_code: str, measure_power_secs: float) -> None:
    """Start the meter's process now (once per process), so its hardware probe runs while the run starts up."""
    global _early
    if _early is None:
        _early = EnergyMeter(country_iso_code, measure_power_secs)


def take_meter(country_iso_code: str, measure_power_secs: float) -> EnergyMeter:
    """The meter started early when its settings match, else a new one (a started meter is used once)."""
    global _early
    meter, _early = _early, None
    if meter is not None and meter.settings == (country_iso_code, float(measure_power_secs)):
        return meter
    if meter is not None:
        meter.close()
    return EnergyMeter(country_iso_code, measure_power_secs)


# -- the child process ------------------------------------------------------------------------------------------
def _new_tracker(country_iso_code: str, measure_power_secs: float) -> Any:
    from codecarbon import OfflineEmissionsTracker

    logging.getLogger("codecarbon").setLevel(logging.ERROR)  # before its own log_level applies
    tracker = OfflineEmissionsTracker(
        country_iso_code=country_iso_code,
        save_to_file=False,
        log_level="error",
        measure_power_secs=measure_power_secs,
    )
    # CodeCarbon 3 probes the hardware at its first start() (1.4 s of CPU and a py-cpuinfo subprocess), which
    # would compete with training's first steps on a small machine, and its first stop() imports its geography
    # and emissions modules (with requests: 0.3 s the run would wait for at its end): both now, while the parent
    # starts up
    tracker.get_detected_hardware()
    import codecarbon.core.emissions  # noqa: F401
    import codecarbon.external.geography  # noqa: F401

    return tracker


def figures(tracker: Any, emissions: float | None) -> dict[str, Any]:
    """What the parent gets from a stopped tracker: energy in kWh (total and by part) and CO2 in kg."""
    data = getattr(tracker, "final_emissions_data", None)
    if emissions is None or data is None:
        return {"error": "codecarbon reported no emissions data"}
    out = {"energy_kwh": float(data.energy_consumed), "co2_kg": float(emissions)}
    for part in ("cpu", "gpu", "ram"):
        out[f"energy_{part}_kwh"] = float(getattr(data, f"{part}_energy", 0.0) or 0.0)
    return out


def serve(commands: int, replies: IO[str], make_tracker: Any, parent_alive: Any) -> None:
    """The child's loop: build the tracker (the hardware probe), then obey `start` and `stop` read from the file
    descriptor `commands`; the reply to `stop` is one JSON line. Ends when stopped, when its input closes or when
    the parent is gone."""
    tracker, error = None, None
    try:
        tracker = make_tracker()
    except Exception as err:  # reported to the parent on `stop`
        error = f"{type(err).__name__}: {err}"
    started, pending = False, b""
    while parent_alive():
        if b"\n" not in pending:
            ready, _, _ = select.select([commands], [], [], 1.0)
            if not ready:
                continue
            chunk = os.read(commands, 4096)
            pending += chunk if chunk else b"stop-without-reply\n"  # the input closed
            continue
        line, pending = pending.split(b"\n", 1)
        command = line.decode().strip()
        if command == "start" and tracker is not None and not started:
            try:
                tracker.start()
                started = True
            except Exception as err:
                tracker, error = None, f"{type(err).__name__}: {err}"
        elif command == "stop":
            reply = {"error": error} if tracker is None else _stopped(tracker, started)
            replies.write(json.dumps(reply) + "\n")
            replies.flush()
            return
        elif command == "stop-without-reply":
            break
    if tracker is not None and started:
        with contextlib.suppress(Exception):
            tracker.stop()


def _stopped(tracker: Any, started: bool) -> dict[str, Any]:
    if not started:
        return {"error": "stopped before it started"}
    try:
        return figures(tracker, tracker.stop())
    except Exception as err:
        return {"error": f"{type(err).__name__}: {err}"}


def _main(argv: list[str]) -> None:
    country, seconds = argv[0], float(argv[1])
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # only our JSON line goes to the parent
    parent = os.getppid()
    started = time.monotonic()
    serve(sys.stdin.fileno(), replies, lambda: _new_tracker(country, seconds), lambda: os.getppid() == parent)
    log.debug("energy meter ran %.1f s", time.monotonic() - started)
    os._exit(0)  # the reply is written and the tracker stopped: no interpreter teardown (0.3 s the parent waits for)


if __name__ == "__main__":
    _main(sys.argv[1:])
