"""No thread of a training process runs a subprocess (CodeCarbon lives in a child process), and a stalled run
dumps its threads' stacks (the stall watchdog)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from lightning_llm.models import GPT
from lightning_llm.objectives.clm import CausalLM
from lightning_llm.training import energy, watchdog
from lightning_llm.training.compute import ComputeMonitor
from lightning_llm.training.module import LanguageModelModule

pytest.importorskip("codecarbon")
VOCAB, BLOCK, BATCH = 64, 16, 4


class Rows(pl.LightningDataModule):
    """Fixed random rows, loaded by `workers` forked DataLoader workers."""

    def __init__(self, workers: int = 0) -> None:
        super().__init__()
        self.block_size, self.batch_size, self.workers = BLOCK, BATCH, workers
        rows = torch.randint(0, VOCAB, (64, BLOCK + 1), generator=torch.Generator().manual_seed(0))
        self.items = [{"input_ids": r[:-1], "labels": r[1:]} for r in rows]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.items, batch_size=BATCH, num_workers=self.workers)


def tiny_module() -> LanguageModelModule:
    model = GPT(vocab_size=VOCAB, block_size=BLOCK, n_layer=1, n_head=2, n_embd=16)
    return LanguageModelModule(model=model, objective=CausalLM(), optimizer=partial(torch.optim.AdamW, lr=1e-3))


def fit(callbacks: list[pl.Callback], tmp_path: Path, steps: int, workers: int = 0) -> None:
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_steps=steps, logger=False, callbacks=callbacks, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, limit_val_batches=0, default_root_dir=str(tmp_path),
    )  # fmt: skip
    trainer.fit(tiny_module(), datamodule=Rows(workers))


class Threads(pl.Callback):
    """The names of the threads alive whenever a batch starts (the DataLoader workers fork around then)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def on_train_batch_start(self, *args: object) -> None:
        self.seen |= {t.name for t in threading.enumerate()}

    def on_train_end(self, *args: object) -> None:
        self.seen |= {t.name for t in threading.enumerate()}


def test_no_thread_runs_beside_forked_dataloader_workers(tmp_path):
    """The hang of issue 27: CodeCarbon's start ran `lscpu` on a thread while DataLoader workers forked. With
    energy measured, the training process has no thread of ours while workers fork (the meter is a child
    process; torch's DataLoader has its own queue feeder thread), and the energy numbers still arrive."""
    threads, monitor = Threads(), ComputeMonitor(measure_power_secs=1, cache_dir=str(tmp_path))
    before = {t.name for t in threading.enumerate()}  # what earlier tests in this process left running
    fit([monitor, threads], tmp_path, steps=6, workers=2)
    assert threads.seen - before <= {"QueueFeederThread"}
    assert monitor.compute["energy_kwh"] > 0
    parts = sum(monitor.compute[f"energy_{p}_kwh"] for p in ("cpu", "gpu", "ram"))
    assert monitor.compute["energy_kwh"] == pytest.approx(parts)


def serve_in_thread(tracker_factory, commands: bytes, alive=lambda: True) -> dict:
    """Run the child's loop in this process over pipes: `commands` written at once, the JSON reply read back."""
    read_cmd, write_cmd = os.pipe()
    read_reply, write_reply = os.pipe()
    os.write(write_cmd, commands)
    with os.fdopen(write_reply, "w") as replies:
        energy.serve(read_cmd, replies, tracker_factory, alive)
    os.close(read_cmd)
    os.close(write_cmd)
    with os.fdopen(read_reply) as reply:
        text = reply.read()
    return json.loads(text) if text else {}


class FakeTracker:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.final_emissions_data = SimpleNamespace(energy_consumed=3.0, cpu_energy=1.0, gpu_energy=0.0, ram_energy=2.0)

    def start(self) -> None:
        self.calls.append("start")

    def stop(self) -> float:
        self.calls.append("stop")
        return 0.5


def test_meter_obeys_commands_that_arrive_together():
    """`start` and `stop` in one read (a buffered line reader would wait for the second forever)."""
    tracker = FakeTracker()
    reply = serve_in_thread(lambda: tracker, b"start\nstop\n")
    assert tracker.calls == ["start", "stop"]
    assert reply == {
        "energy_kwh": 3.0,
        "co2_kg": 0.5,
        "energy_cpu_kwh": 1.0,
        "energy_gpu_kwh": 0.0,
        "energy_ram_kwh": 2.0,
    }


def test_meter_reports_a_tracker_that_fails():
    def broken() -> None:
        raise RuntimeError("no hardware data")

    assert serve_in_thread(broken, b"start\nstop\n") == {"error": "RuntimeError: no hardware data"}


def test_meter_stops_its_tracker_when_the_parent_is_gone():
    tracker, checks = FakeTracker(), iter([True, True, False])
    assert serve_in_thread(lambda: tracker, b"start\n", alive=lambda: next(checks)) == {}
    assert tracker.calls == ["start", "stop"]


def test_a_dead_meter_is_one_warning_and_never_a_wait(monkeypatch, caplog):
    meter = energy.EnergyMeter("USA", 1)
    meter._process.kill()  # the child crashed
    meter._process.wait()
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="lightning_llm"):
        assert meter.stop(timeout=5) is None
    assert time.monotonic() - started < 5
    assert [r.getMessage() for r in caplog.records if "codecarbon" in r.getMessage()] == [
        "codecarbon failed (its process ended with exit code -9): no energy or CO2 numbers for this run"
    ]


def test_the_meter_started_with_the_run_is_the_one_training_uses(make_cfg, monkeypatch):
    """train.py starts the meter's process first thing (its hardware probe runs while torch imports); the
    monitor then tells that one to start instead of starting another."""
    from lightning_llm.recipe.startup import energy_settings, start_early_work

    monkeypatch.setattr(energy, "_early", None)
    default = make_cfg(tiny=False)  # as `python train.py` composes it (the tiny test config turns energy off)
    assert energy_settings(default) is not None
    for off in ("callbacks.compute.track_energy=false", "callbacks=none", "train=false", "estimate=true"):
        assert energy_settings(make_cfg(off, tiny=False)) is None, off
    monkeypatch.setenv("RANK", "1")  # the monitor measures on rank 0 only
    assert energy_settings(default) is None
    monkeypatch.delenv("RANK")
    start_early_work(make_cfg())
    assert energy._early is None
    start_early_work(default)
    early = energy._early
    assert early is not None and energy.take_meter("USA", 15) is early and energy._early is None
    other = energy.take_meter("FRA", 15)  # other settings: a new meter
    assert other is not early
    for meter in (early, other):
        meter.close()


def test_the_meter_does_its_slow_work_before_training_starts(monkeypatch):
    """CodeCarbon 3 probes the machine at a tracker's first start() and imports its geography module (requests) at
    its first stop(); the meter's tracker does both when built (while the run starts up), so that `start` and
    `stop`, sent when training starts and ends, only start and stop measuring."""
    from codecarbon.core.resource_tracker import ResourceTracker

    probes: list[str] = []
    probe = ResourceTracker.set_CPU_GPU_ram_tracking
    monkeypatch.setattr(ResourceTracker, "set_CPU_GPU_ram_tracking", lambda self: probes.append("probe") or probe(self))
    tracker = energy._new_tracker("USA", 15)
    assert probes == ["probe"]
    imported = set(sys.modules)
    tracker.start()
    try:
        assert probes == ["probe"]
    finally:
        tracker.stop()
    assert set(sys.modules) - imported == set()


# -- the stall watchdog -----------------------------------------------------------------------------------------
def test_watchdog_dumps_every_stack_when_nothing_happens(tmp_path):
    log = tmp_path / "train.log"
    watchdog.arm(0.5, log_file=log)
    try:
        time.sleep(1.2)
    finally:
        watchdog.disarm()
    text = log.read_text()
    assert "Timeout (0:00:00.500000)!" in text and "most recent call first" in text
    assert "test_watchdog_dumps_every_stack_when_nothing_happens" in text


def test_watchdog_stays_quiet_while_there_is_progress(tmp_path):
    log = tmp_path / "train.log"
    watchdog.arm(2.0, log_file=log)
    try:
        for _ in range(35):
            time.sleep(0.1)
            watchdog.progress()
    finally:
        watchdog.disarm()
    assert log.read_text() == ""


class HangsAtTheEnd(pl.Callback):
    def on_train_end(self, *args: object) -> None:
        time.sleep(2.5)  # as the joined CodeCarbon thread did


def test_a_stall_after_training_is_dumped_to_the_log(tmp_path):
    log = tmp_path / "train.log"
    try:
        fit([watchdog.StallWatchdog(stall_seconds=1.5, log_file=str(log)), HangsAtTheEnd()], tmp_path, steps=3)
    finally:
        watchdog.disarm()
    assert "in on_train_end" in log.read_text()


@pytest.mark.slow  # a fresh interpreter importing Lightning: ~10 s
def test_watchdog_can_end_a_stalled_process(tmp_path):
    code = (
        "import time\nfrom lightning_llm.training import watchdog\n"
        f"watchdog.arm(0.5, exit=True, log_file={str(tmp_path / 'log')!r})\ntime.sleep(30)\n"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert done.returncode == 1 and time.monotonic() - started < 20
    assert "most recent call first" in (tmp_path / "log").read_text()
