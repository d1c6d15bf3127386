"""The one exception type for user mistakes (bad config, missing files), printed as one line."""


class ConfigError(Exception):
    """A user mistake: the message names the bad key or file and the fix."""
