"""The command line: multirun over seeds, W&B offline without a key, and one command surface (`lightning-llm
<verb>`: help without torch, the same checkpoint key everywhere, prompts never parsed as overrides)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from lightning_llm.training.loggers import wandb_logger, wandb_online

from .conftest import ROOT, TINY, run_cli

pytestmark = pytest.mark.integration

QUICK = [
    *TINY,
    "trainer.max_steps=3",
    "trainer.val_check_interval=3",
    "trainer.limit_val_batches=1",
    "~callbacks.sample",
]


@pytest.mark.slow  # multirun itself: test_experiments.py::test_grid_multirun_with_summary
def test_multirun_over_seeds(tmp_path, cache_dir):
    result = run_cli("-m", "seed=1,2", *QUICK, f"paths.cache_dir={cache_dir}", "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [json.loads((tmp_path / "sweep" / str(i) / "results.json").read_text()) for i in (0, 1)]
    assert [r["seed"] for r in runs] == [1, 2]
    assert runs[0]["metrics"]["train/loss"] != runs[1]["metrics"]["train/loss"]
    assert "outputs:" in result.stdout


def test_wandb_goes_offline_without_a_key(tmp_path, cache_dir, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert not wandb_online()
    assert wandb_logger(save_dir=str(tmp_path))._offline
    env = {"HOME": str(tmp_path), "WANDB_MODE": "", "WANDB_API_KEY": ""}
    result = run_cli(*QUICK, "logger=wandb", f"paths.cache_dir={cache_dir}", "hydra.run.dir=run", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    offline_runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert offline_runs, "W&B wrote an offline run"
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "completed"


# -- one command surface (issue 28, items 3 and 4) ---------------------------------------------------------------
VERBS = ("train", "eval", "generate", "chat", "inspect", "export", "merge", "report", "serve", "dashboard", "score")
FREE_TEXT = ["f(x)", "x = 1", "it's", "[list]", "${oops}", "a, b", "key=value", 'say "hi"']


def test_lightning_llm_is_installed_for_every_verb():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    from lightning_llm.cli.main import VERBS as declared

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"lightning-llm": "lightning_llm.cli.main:cli"} and tuple(declared) == VERBS
    command = Path(sys.executable).parent / "lightning-llm"
    assert command.exists(), "pip install -e . (make install) installs the lightning-llm command"
    result = subprocess.run([str(command), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and all(verb in result.stdout for verb in VERBS), result.stdout


def test_help_of_every_verb_imports_no_torch():
    """--help stays instant because no verb's help imports torch (a timing bound here would only measure load)."""
    code = (
        "import contextlib, io, sys\n"
        "from lightning_llm.cli.main import main\n"
        "out = {}\n"
        "for verb in [None, *sys.argv[1:]]:\n"
        "    text = io.StringIO()\n"
        "    with contextlib.redirect_stdout(text):\n"
        "        try: main([verb, '--help'] if verb else ['--help'])\n"
        "        except SystemExit as e: assert e.code == 0, (verb, e.code)\n"
        "    out[verb or ''] = text.getvalue()\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "import json; print(json.dumps(out))\n"
    )
    result = subprocess.run([sys.executable, "-c", code, *VERBS], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    helps = json.loads(result.stdout)
    assert all(verb in helps[""] for verb in VERBS)
    for verb in ("train", "eval"):  # Hydra's help: the groups and every key
        assert "model: bert, bert-base, gpt" in helps[verb] and "max_steps" in helps[verb]
    for verb in ("generate", "chat"):
        assert "temperature" in helps[verb] and "model.pretrained" in helps[verb] and "--stop" in helps[verb]
    for verb in ("generate", "inspect"):
        assert "--prompt TEXT" in helps[verb] and "--prompts-file FILE" in helps[verb]
    for verb in ("inspect", "export", "merge"):
        assert "model.pretrained=CHECKPOINT" in helps[verb]


def hydra_job(*args: str) -> str:
    result = subprocess.run([sys.executable, *args, "--cfg", "job"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_train_verb_composes_what_train_py_composes():
    overrides = ["model=llama-nano", "model.n_layer=3", "trainer.max_steps=7"]
    script = hydra_job(str(ROOT / "train.py"), *overrides)
    assert "n_layer: 3" in script and "max_steps: 7" in script
    assert hydra_job("-m", "lightning_llm", "train", *overrides) == script
    evaluation = hydra_job("-m", "lightning_llm", "eval", "model.pretrained=logs/runs/base")
    assert "train: false" in evaluation and "pretrained: logs/runs/base" in evaluation


class FakeGenerator:
    """Records what the command asks of a model (the parsing is what is tested here, not generation)."""

    def __init__(self) -> None:
        self.model = SimpleNamespace(architecture="decoder")
        self.tokenizer = SimpleNamespace(chat_template=None)
        self.calls: list[tuple[list[str], list[str]]] = []

    def complete(self, prompts, settings, seed=0, stream=None):
        self.calls.append((list(prompts), list(settings.until)))
        return [SimpleNamespace(prompt=p, output="!", new_tokens=1, seconds=0.1, tokens_per_s=10.0) for p in prompts]


def test_free_text_is_never_parsed_as_an_override(tmp_path, monkeypatch, capsys):
    from lightning_llm.cli.main import main

    fake = FakeGenerator()
    monkeypatch.setattr("lightning_llm.cli.generate.open_generator", lambda cfg: fake)
    (tmp_path / "prompts.txt").write_text("from file (1)\nit's = [2]\n")
    common = ["model.pretrained=somewhere", "temperature=0"]
    for text in FREE_TEXT:
        assert main(["generate", *common, f"prompt={text}"]) == 0, capsys.readouterr().err
        assert main(["generate", "--prompt", text, *common, "--stop", text]) == 0, capsys.readouterr().err
    assert main(["generate", *common, "--prompt", "a", f"--prompts-file={tmp_path / 'prompts.txt'}"]) == 0
    expected = [c for text in FREE_TEXT for c in (([text], []), ([text], [text]))]
    assert fake.calls == [*expected, (["a", "from file (1)", "it's = [2]"], [])]

    monkeypatch.setattr("sys.stdin", io.StringIO("it's (me)\n/quit\n"))
    assert main(["chat", "--system", "You're ${x}, [always]", *common, "--stop", "User:"]) == 0
    (rendered,), until = fake.calls[-1]
    assert "You're ${x}, [always]" in rendered and "it's (me)" in rendered and "User:" in until
    capsys.readouterr()
    assert main(["generate", *common]) == 2
    assert capsys.readouterr().err.startswith("error: no prompt: give --prompt TEXT")


@pytest.mark.parametrize("verb", ["inspect", "export", "merge", "generate"])
def test_every_verb_takes_the_checkpoint_as_model_pretrained(verb, tmp_path, capsys):
    from lightning_llm.cli.main import main

    missing = tmp_path / "no_such_run"
    words = {
        "inspect": ["--prompt", "x"],
        "export": [str(tmp_path / "hf")],
        "merge": [str(tmp_path / "merged.ckpt")],
        "generate": ["--prompt", "x"],
    }[verb]
    assert main([verb, f"model.pretrained={missing}", *words]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "model.pretrained" in error and str(missing) in error, error
