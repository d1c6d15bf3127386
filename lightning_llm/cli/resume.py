"""`resume=auto hydra.run.dir=<run>` continues a run with the run's own config.

The command line is rewritten before Hydra composes: the run's latest composed config (`<run>/.hydra/config.yaml`,
or its latest `resume-<n>/` part) is the primary config and the new overrides go on top (the recipe records them in
the new `resume-<n>/`). The run's config groups are its own: a group option other than the run's is refused in one
line (override keys instead); the run's own option, as a repeated command line gives it, is dropped. A first start
(`resume=auto` where no run has written its config yet) composes from the command line as usual.

A resume attempt that fails before it writes a checkpoint leaves the run's record as it was (recipe.outputs.RunRecord).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from omegaconf import OmegaConf

from lightning_llm.conf import CONFIG_DIR
from lightning_llm.errors import ConfigError

CONFIG_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")
_GROUP = re.compile(r"[A-Za-z_][\w-]*")


def _override(word: str) -> tuple[str, str] | None:
    """`key=value` -> (key without +/++/~, value); None for a flag or a word without `=`."""
    if word.startswith("-") or "=" not in word:
        return None
    key, value = word.split("=", 1)
    return key.lstrip("+~"), value


def _is_group(key: str) -> bool:
    """Whether `key` names one of our config groups (Hydra's own groups are not the run's)."""
    return not key.startswith("hydra") and _GROUP.fullmatch(key) is not None and (CONFIG_DIR / key).is_dir()


def _last_value(argv: list[str], key: str) -> str | None:
    values = [kv[1] for kv in map(_override, argv) if kv is not None and kv[0] == key]
    return values[-1] if values else None


def config_parts(run: Path) -> list[Path]:
    """The folders holding the run's composed configs, first part first (`.hydra`, then `resume-1`, ...)."""
    first = run / ".hydra"
    if not (first / "config.yaml").is_file():
        return []
    resumed = [p for p in first.glob("resume-*") if p.name[7:].isdigit() and (p / "config.yaml").is_file()]
    return [first, *sorted(resumed, key=lambda p: int(p.name[7:]))]


def recorded_overrides(run: Path) -> list[str]:
    """Every override the run's parts were composed with, in order."""
    found: list[str] = []
    for part in config_parts(run):
        path = part / "overrides.yaml"
        if path.is_file():
            found += [str(o) for o in OmegaConf.load(path) or []]
    return found


def run_choices(run: Path) -> dict[str, str]:
    """The run's config group options: its results.json's (when it wrote one), with the group options its
    recorded command lines gave."""
    choices: dict[str, str] = {}
    results = run / "results.json"
    if results.is_file():
        recorded = json.loads(results.read_text()).get("choices") or {}
        choices = {str(g): str(o) for g, o in recorded.items() if o is not None and _is_group(str(g))}
    for word in recorded_overrides(run):
        kv = _override(word)
        if kv is not None and _is_group(kv[0]):
            choices[kv[0]] = kv[1]
    return choices


def resume_argv(argv: list[str]) -> list[str]:
    """The command line Hydra composes for `argv` (Hydra's arguments): unchanged unless it resumes a run folder
    that holds a composed config; then that config, the run's group choices (so results.json and the checks name
    them) and the new overrides. `resume=auto` needs the folder (`hydra.run.dir`); under `-m` each job's command
    line is its config, as it was."""
    if _last_value(argv, "resume") != "auto" or {"-m", "--multirun"} & set(argv):
        return argv
    if any(a.split("=", 1)[0] in CONFIG_FLAGS for a in argv):  # the config is named (a rerun, or a DDP child)
        return argv
    run_dir = _last_value(argv, "hydra.run.dir")
    if run_dir is None:
        raise ConfigError(
            "resume=auto continues a run folder: name it with hydra.run.dir=<run> (e.g. logs/runs/<date>_<time>)"
        )
    run = Path(run_dir).expanduser().absolute()
    parts = config_parts(run)
    if not parts:  # nothing to continue yet: a first start, composed from the command line
        return argv
    choices, recorded = run_choices(run), set(recorded_overrides(run))
    kept = []
    for word in argv:
        kv = _override(word)
        if kv is not None and _is_group(kv[0]):
            group, option = kv
            if choices.get(group) != option:
                own = f" ({group}={choices[group]})" if group in choices else ""
                raise ConfigError(
                    f"{group}={option}: resume=auto continues {run_dir} with its own config{own}, whose groups "
                    f"cannot change: override keys ({group}.<key>=...), or start a new run (model.pretrained=<run> "
                    "starts from its weights)"
                )
            continue  # the run's own option: its config already holds it
        if word.startswith("~") and word in recorded:
            continue  # already deleted from the run's config
        kept.append("+" + word if word.startswith("+") and not word.startswith("++") else word)  # `++`: set or add
    labels = [f"+hydra.runtime.choices.{g}={o}" for g, o in sorted(choices.items())]
    return ["--config-path", str(parts[-1]), "--config-name", "config", *labels, *kept]
