"""Errors that end a run, each with its documented exit code (docs/architecture.md#exit-codes)."""


class DispatchError(Exception):
    exit_code = 1


class UsageError(DispatchError):
    """A bad option, input or configuration value: exit 2."""

    exit_code = 2


class TrackerError(DispatchError):
    """The tracker cannot be read or written (missing/corrupt store, lock timeout): exit 3."""

    exit_code = 3


class SettlementPending(TrackerError):
    """The settlement is recorded, but not yet where people read it (remote mode: a result ref not
    yet folded into the branch). Nothing to give back: a later run finishes it. Exit 3."""
