"""`lightning-llm dashboard`: the W&B workspace built from a real run's logged keys (every panel names a key the
run logs or a setting of its config), offline written to a file, and saved (directly, or from that file with
--push) through W&B's API replaced by a fake that records what would be sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_llm.cli.main import main

from .conftest import TINY, compose_config

pytest.importorskip("wandb_workspaces")

from lightning_llm.report.dashboards import RunKeys, build_workspace, panel_keys, read_keys, spec_of  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    from lightning_llm.recipe import train

    folder = tmp_path_factory.mktemp("dashboard-run")
    train(compose_config([*TINY, "trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.log_every_n_steps=1",
                          "~callbacks.sample", "optimizer.lr=3e-3"], folder, cache_dir))  # fmt: skip
    return folder


def logged(key: str, keys: RunKeys) -> bool:
    """Whether a key a panel names is one the runs log (a metric, its summary, or a config setting)."""
    if key.startswith("config:"):
        section, _, rest = key.removeprefix("config:").partition(".value")
        return f"{section}{rest}" in keys.config
    return key.removeprefix("summary:") in keys.metrics


def test_every_panel_names_a_key_the_run_logs(run):
    header = (run / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    keys = read_keys([run])
    assert keys.metrics == set(header) - {"step", "epoch"}
    spec = spec_of(build_workspace(keys, "me", "lightning-llm", "ours"))["spec"]
    named = panel_keys(spec)
    assert {"train/loss", "val/loss", "train/tokens", "train/grad_norm", "compute/mfu"} <= named
    assert "config:optimizer.value.lr" in named and "summary:val/loss" in named, "the sweep section"
    assert all(logged(k, keys) for k in named), sorted(k for k in named if not logged(k, keys))
    sections = [s["name"] for s in spec["section"]["panelBankConfig"]["sections"]]
    assert sections == ["Loss", "Learning rate and gradients", "Throughput, MFU and cost", "Sweep"]
    assert spec["section"]["runSets"][0]["grouping"], "runs grouped by their W&B group"


def test_sections_follow_what_runs_log():
    """Eval tables, the privacy budget, preference metrics and a sweep's swept settings, when runs log them."""
    keys = RunKeys(
        metrics={"train/loss", "val/loss", "privacy/epsilon", "train/rewards/chosen", "train/rewards/margins",
                 "val/logps/rejected", "eval/results", "eval/summary/average"},
        config={"optimizer.lr", "scheduler.warmup_steps"},
        swept=["optimizer.lr", "scheduler.warmup_steps"],
    )  # fmt: skip
    spec = spec_of(build_workspace(keys, "me", "p", "ours"))["spec"]
    sections = {s["name"]: s["panels"] for s in spec["section"]["panelBankConfig"]["sections"]}
    assert set(sections) == {"Loss", "Privacy", "Preference", "Evaluation", "Sweep"}
    assert [p["config"]["metrics"] for p in sections["Preference"]] == [
        ["train/rewards/chosen", "train/rewards/margins"],
        ["val/logps/rejected"],
    ]
    columns = [c["accessor"] for c in sections["Sweep"][0]["config"]["columns"]]
    assert columns == ["config:optimizer.value.lr", "config:scheduler.value.warmup_steps", "summary:val/loss"]
    assert "eval/results" in json.dumps(sections["Evaluation"])
    assert all(logged(k, keys) for k in panel_keys(spec))


class FakeService:
    """W&B's GraphQL service as wandb-workspaces calls it: records each mutation's variables."""

    app_url = "https://wandb.example"

    def __init__(self, sent: list[dict]) -> None:
        self.sent = sent

    def execute_graphql(self, query: str, variables: dict) -> dict:
        assert "upsertView" in query
        self.sent.append(variables)
        return {"upsertView": {"view": {"id": "view-1", "name": "nw-abc-v"}, "inserted": True}}


def fake_api(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    import wandb

    sent: list[dict] = []

    class Api:
        def __init__(self, *args, **kwargs) -> None:
            self._service_api = FakeService(sent)

    monkeypatch.setattr(wandb, "Api", Api)
    return sent


def test_offline_it_writes_the_spec_and_push_saves_it(run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "dash.json"
    args = ["dashboard", "--entity", "me", "--project", "lightning-llm", "--run", str(run)]
    assert main([*args, "--out", str(out)]) == 0
    said = capsys.readouterr().err
    assert f"lightning-llm dashboard --push {out}" in said and "4 sections" in said
    written = json.loads(out.read_text())
    assert (written["entity"], written["project"]) == ("me", "lightning-llm")

    sent = fake_api(monkeypatch)
    assert main(["dashboard", "--push", str(out)]) == 0
    assert "https://wandb.example/me/lightning-llm?nw=" in capsys.readouterr().out
    (pushed,) = sent
    assert (pushed["entityName"], pushed["projectName"], pushed["type"]) == ("me", "lightning-llm", "project-view")
    assert panel_keys(json.loads(pushed["spec"])) == panel_keys(written["spec"]), "the file's panels, unchanged"

    monkeypatch.setattr("lightning_llm.training.loggers.wandb_online", lambda: True)
    assert main(args) == 0  # online: saved at once
    assert len(sent) == 2 and panel_keys(json.loads(sent[1]["spec"])) == panel_keys(written["spec"])


def test_mistakes_are_one_line(tmp_path, capsys):
    assert main(["dashboard", "--project", "p", "--run", str(tmp_path)]) == 2
    assert "give --entity" in capsys.readouterr().err
    assert main(["dashboard", "--entity", "e", "--project", "p", "--run", str(tmp_path / "nowhere")]) == 2
    assert "is no folder" in capsys.readouterr().err
    assert main(["dashboard", "--entity", "e", "--project", "p", "--run", str(tmp_path)]) == 2
    assert "log no metrics" in capsys.readouterr().err
