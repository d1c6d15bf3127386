"""The one error handler and exit-code convention of every command (train.py and `python -m lightning_llm`).

0 success; 2 a user mistake (one `error:` line on stderr, first, naming the key or file and the fix); 3 training
diverged; 130 interrupted; anything else keeps its traceback (a bug to report).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from lightning_llm.errors import LightningLLMError, user_error_in


def fail(err: LightningLLMError) -> int:
    """Print a user-facing error as one line and return its exit code."""
    sys.stdout.flush()
    print(f"error: {err}", file=sys.stderr, flush=True)
    return err.exit_code


def run_command(command: Callable[[], object]) -> int:
    """Run a command; a user-facing error becomes one line and its exit code."""
    try:
        command()
    except Exception as err:
        user_error = user_error_in(err)
        if user_error is None:
            raise
        return fail(user_error)
    return 0
