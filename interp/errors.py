"""Errors that the CLI reports as one line with exit code 2 (kept free of heavy imports)."""


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded; the message is one line naming the cause."""
