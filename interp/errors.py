"""Errors that the CLI reports as one line with exit code 2 (kept free of heavy imports)."""


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded; the message is one line naming the cause."""


class ConfigError(ValueError):
    """A run or sweep config file that cannot be read or does not describe a valid run."""
