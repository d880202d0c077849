"""The exception types for bad user input."""


class ConfigError(ValueError):
    """A setting has a value the framework cannot use.

    The message names the setting (as typed on the command line) and what is allowed, so
    `run.py` can print it as a single line instead of a traceback.
    """


class Diverged(ConfigError):
    """Training produced a non-finite loss or weights: a learning rate or step size too large."""


def check(condition: bool, key: str, allowed: str, got: object) -> None:
    """Raise `ConfigError` for setting `key` unless `condition` holds."""
    if not condition:
        raise ConfigError(f"{key} must be {allowed}; got {got!r}")
