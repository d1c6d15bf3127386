"""An embedded verifiable task: arithmetic problems generated from a seed (`embedded:arithmetic`), so that SFT and
then GRPO run offline on a fresh clone. Each row is a distinct problem: `question` ("12+7=") and `answer` ("19");
exact match on the answer is the verifiable reward. Training and validation split by row, so held-out prompts are
problems the model never saw."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

from lightning_llm.errors import ConfigError

OPERATIONS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def arithmetic_problems(
    max_operand: int = 19, operations: str = "+", n: int | None = None, seed: int = 0
) -> Iterator[dict[str, str]]:
    """Every `a op b` with operands in [0, max_operand] (or `n` of them), in an order shuffled by `seed`."""
    unknown = [op for op in operations if op not in OPERATIONS]
    if unknown or not operations or max_operand < 1:
        raise ConfigError(f"arithmetic: operations={operations!r} must use {''.join(OPERATIONS)}; max_operand >= 1")
    problems = list(itertools.product(range(max_operand + 1), range(max_operand + 1), operations))
    random.Random(f"arithmetic-{seed}").shuffle(problems)
    for a, b, op in problems[:n]:
        yield {"question": f"{a}{op}{b}=", "answer": str(OPERATIONS[op](a, b)), "source": "arithmetic"}
