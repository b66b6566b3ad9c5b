"""The one exception type for mistakes a user can make (bad config, missing checkpoint, ...)."""


class PinnkanError(Exception):
    """A user-facing error: the CLI prints its message as one line and exits non-zero."""
