"""Errors a user should see as one line (no traceback), each with its exit code."""


class LightningLLMError(Exception):
    """Base of the errors `train.py` prints as `error: <message>`."""

    exit_code = 1


class ConfigError(LightningLLMError):
    """A user mistake: the message names the bad key or file and the fix."""

    exit_code = 2


class TrainingDiverged(LightningLLMError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 3
