"""Reward functions for GRPO (`objective.rewards`): each a small class named by `_target_` in the config, with a
`weight` (trusted config only: a `_target_` is never read from data).

A reward is called with the batch's prompts, completions and reference answers (the data's response column) and
returns one float per completion. `verifies = True` marks a reward that checks an answer (exact match, unit tests):
validation's `pass@1` is the share of greedy completions that every such reward scores 1.

- `ExactMatch`: the answer extracted from the completion (the first match of `pattern`'s group, e.g. the first
  integer) equals the one extracted from the reference answer.
- `FormatReward`: the completion matches a regular expression (`fullmatch` or `search`).
- `LengthPenalty`: -(characters beyond `target_chars`) / `scale`, at most `max_penalty` below 0.
- `UnitTests`: the completion's code (a fenced block if it has one), then the reference answer's tests, run in a
  separate Python process (`python -I`) whose address space, CPU time and file size are limited with
  `resource.setrlimit` in that child, under a wall-clock timeout: 1 when it exits 0. A guard against runaway
  code, not a security sandbox: run untrusted models' code in a container.
- A reward model trained with objective=reward: `lightning_llm.training.rewards.RewardModelScore`.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile

from lightning_llm.errors import ConfigError


class Reward:
    """One reward function: `__call__(prompts, completions, answers) -> scores`, weighted by `weight`."""

    verifies = False

    def __init__(self, weight: float = 1.0, name: str | None = None) -> None:
        self.weight = float(weight)
        self.name = name or type(self).__name__.lower()

    def __call__(self, prompts: list[str], completions: list[str], answers: list[str]) -> list[float]:
        raise NotImplementedError


def _compile(pattern: str, key: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as err:
        raise ConfigError(f"{key}={pattern!r} is not a regular expression ({err}): fix the pattern") from err


class ExactMatch(Reward):
    """1 when the completion's extracted answer equals the reference's, else 0."""

    verifies = True

    def __init__(self, pattern: str = r"(-?\d+)", weight: float = 1.0, name: str | None = "exact_match") -> None:
        super().__init__(weight, name)
        self.pattern = _compile(pattern, "objective.rewards[].pattern")

    def extract(self, text: str) -> str | None:
        """The first match's first group (the whole match without groups), stripped; None without a match."""
        found = self.pattern.search(text)
        if found is None:
            return None
        return (found.group(1) if found.groups() else found.group(0)).strip()

    def __call__(self, prompts: list[str], completions: list[str], answers: list[str]) -> list[float]:
        scores = []
        for completion, answer in zip(completions, answers, strict=True):
            wanted = self.extract(answer)
            wanted = answer.strip() if wanted is None else wanted
            scores.append(float(self.extract(completion) == wanted))
        return scores


class FormatReward(Reward):
    """1 when the completion matches `pattern` (whole: `fullmatch`, else anywhere), else 0."""

    def __init__(self, pattern: str, fullmatch: bool = True, weight: float = 1.0, name: str | None = "format") -> None:
        super().__init__(weight, name)
        self.pattern, self.fullmatch = _compile(pattern, "objective.rewards[].pattern"), fullmatch

    def __call__(self, prompts: list[str], completions: list[str], answers: list[str]) -> list[float]:
        match = self.pattern.fullmatch if self.fullmatch else self.pattern.search
        return [float(match(completion) is not None) for completion in completions]


class LengthPenalty(Reward):
    """-(characters beyond `target_chars`) / `scale`, floored at -`max_penalty`; 0 within the target."""

    def __init__(
        self,
        target_chars: int = 64,
        scale: float = 64.0,
        max_penalty: float = 1.0,
        weight: float = 1.0,
        name: str | None = "length",
    ) -> None:
        super().__init__(weight, name)
        if target_chars < 0 or scale <= 0 or max_penalty < 0:
            raise ConfigError("objective.rewards[] LengthPenalty: target_chars >= 0, scale > 0, max_penalty >= 0")
        self.target_chars, self.scale, self.max_penalty = target_chars, scale, max_penalty

    def __call__(self, prompts: list[str], completions: list[str], answers: list[str]) -> list[float]:
        return [-min(self.max_penalty, max(0, len(c) - self.target_chars) / self.scale) for c in completions]


#: What the child process runs: its own limits first (the parent sets none), then the program from stdin
_RUNNER = """
import resource, sys
memory, cpu = int(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
source = sys.stdin.read()
exec(compile(source, "<completion>", "exec"), {"__name__": "__main__"})
"""
_FENCED = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)


def run_limited(source: str, timeout_s: float = 5.0, memory_mb: int = 256) -> tuple[bool, str]:
    """Run Python `source` in a child process under the limits; (whether it exited 0, why not)."""
    command = [sys.executable, "-I", "-c", _RUNNER, str(memory_mb << 20), str(max(1, int(timeout_s + 0.999)))]
    with tempfile.TemporaryDirectory(prefix="reward-") as folder:
        try:
            done = subprocess.run(
                command, input=source, capture_output=True, text=True, timeout=timeout_s, cwd=folder, check=False
            )
        except subprocess.TimeoutExpired:
            return False, f"timed out after {timeout_s:g} s"
    if done.returncode == 0:
        return True, ""
    lines = done.stderr.strip().splitlines()
    return False, lines[-1] if lines else f"exit code {done.returncode}"


class UnitTests(Reward):
    """1 when the completion's code passes the reference answer's tests (asserts) in a limited child process."""

    verifies = True

    def __init__(
        self,
        timeout_s: float = 5.0,
        memory_mb: int = 256,
        include_prompt: bool = False,
        weight: float = 1.0,
        name: str | None = "unit_tests",
    ) -> None:
        super().__init__(weight, name)
        if timeout_s <= 0 or memory_mb < 32:
            raise ConfigError("objective.rewards[] UnitTests: timeout_s must be > 0 and memory_mb >= 32")
        self.timeout_s, self.memory_mb, self.include_prompt = timeout_s, memory_mb, include_prompt

    def program(self, prompt: str, completion: str, tests: str) -> str:
        """The code to run: a fenced block of the completion if it has one (else all of it; after the prompt with
        `include_prompt`, for a prompt that opens a function), then the tests."""
        fenced = _FENCED.search(completion)
        code = fenced.group(1) if fenced else (prompt + completion if self.include_prompt else completion)
        return f"{code}\n\n{tests}\n"

    def __call__(self, prompts: list[str], completions: list[str], answers: list[str]) -> list[float]:
        return [
            float(run_limited(self.program(p, c, a), self.timeout_s, self.memory_mb)[0])
            for p, c, a in zip(prompts, completions, answers, strict=True)
        ]
