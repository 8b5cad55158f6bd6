"""Errors a user can act on. The CLI prints them as one line and exits with status 2."""


class DualOptimError(Exception):
    """Base class of every error whose message tells the user what to fix."""


class ConfigError(DualOptimError, ValueError):
    """An invalid option, name, path or forget set."""


class DataNotFoundError(DualOptimError, FileNotFoundError):
    """A dataset or checkpoint is missing; the message says how to provide it."""


class DivergenceError(DualOptimError, FloatingPointError):
    """A loss became NaN/inf during training or unlearning (the message names step and phase)."""


class StoreError(DualOptimError):
    """The results database cannot be used: locked too long, corrupt, not a database, or not creatable."""


class DualOptimWarning(UserWarning):
    """Something the user should know that does not stop the command; the CLI prints it as one line."""
