"""Errors a user should see as one line (no traceback), each with its exit code."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LightningLLMError(Exception):
    """Base of the errors the commands print as `error: <message>`."""

    exit_code = 1


class ConfigError(LightningLLMError):
    """A user mistake: the message names the bad key or file and the fix."""

    exit_code = 2


class TrainingDiverged(LightningLLMError):
    """The loss or the weights became NaN or infinite; no checkpoint with them is written."""

    exit_code = 3


class EvalIncomplete(LightningLLMError):
    """Requested evaluation tasks could not run (their results say why); `eval.on_error=skip` accepts that."""

    exit_code = 4


class RunInterrupted(LightningLLMError):
    """The run was stopped by a signal; a checkpoint was written when it had trained. Exit code 128 + signal
    (143 for SIGTERM, 130 for Ctrl-C), as shells report it."""

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signal_number


def user_error_in(err: BaseException | None) -> LightningLLMError | None:
    """The user-facing error behind `err`, also when Hydra's instantiate or Lightning wrapped it."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, LightningLLMError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def nearest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to a misspelt `name` (difflib), or None when nothing is close."""
    candidates = list(candidates)
    initials = "".join(part[:1] for part in name.lower().split("_") if part)
    by_initials = [
        c
        for c in candidates
        if c.lower() == initials or name.lower() == "".join(part[:1] for part in c.lower().split("_") if part)
    ]
    if len(initials) > 1 and by_initials:  # learning_rate -> lr
        return by_initials[0]
    found = difflib.get_close_matches(name, candidates, n=1, cutoff=0.5)
    if found:
        return found[0]
    lowered = {c.lower(): c for c in candidates}
    prefix = [c for low, c in lowered.items() if low.startswith(name.lower()[:3])]
    return prefix[0] if len(prefix) == 1 else None


def unknown_key(key: str, known: Iterable[str], where: str = "") -> ConfigError:
    """`<key> is not an option[ of <where>]: did you mean <nearest>?` with the known keys when nothing is near."""
    known = sorted(known)
    parent, _, leaf = key.rpartition(".")
    guess = nearest(leaf, known)
    place = f" of {where}" if where else ""
    if guess is not None:
        fix = f"did you mean {parent + '.' if parent else ''}{guess}?"
    else:
        fix = f"known keys are {', '.join(known)}"
    return ConfigError(f"{key} is not an option{place}: {fix}")
