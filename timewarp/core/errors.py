"""Errors that stop a whole stage (unusable input); per-item problems become rejects instead."""


class UsageError(Exception):
    """The stage's input as a whole is unusable: printed as one line, exit status 2."""


class ItemError(Exception):
    """One item (video, annotation) is bad: becomes a reject with this message as its reason."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class DiskFullError(UsageError):
    """No space left where outputs go: every later item would fail too, so the whole run stops."""
