"""The one error handler and exit-code convention of every command (train.py and `python -m lightning_llm`).

0 success; 2 a user mistake (one `error:` line on stderr, first, naming the key or file and the fix); 3 training
diverged; 130 interrupted; anything else keeps its traceback (a bug to report).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Callable
from typing import NoReturn

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


def exit_now(code: int) -> NoReturn:
    """End a finished command with `code`: the exit handlers run (logging, W&B, CodeCarbon) and the streams are
    flushed, then the interpreter's teardown (about 1.5 s of freeing torch and Lightning modules) is skipped.
    While a non-daemon thread is still working this is an ordinary `sys.exit`, which waits for it."""
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
