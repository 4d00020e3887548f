"""Errors the user can fix: the emitted script reports them in one message and exits 2."""


class UsageError(Exception):
    """A mistake the user can fix (flag value, data location, checkpoint): exit 2, no traceback."""
