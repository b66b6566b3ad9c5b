"""The one exception type for mistakes a user can make (bad config, missing checkpoint, ...)."""

from __future__ import annotations


class PinnkanError(Exception):
    """A user-facing error: the CLI prints its message as one line and exits non-zero."""


class FieldError(PinnkanError):
    """A bad value of one argument, named as the library spells it (`field`, e.g. `damping`);
    a front end renames it to its own key (`renamed("optim.damping")`) where it reports it."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}{detail}")
        self.field, self.detail = field, detail

    def renamed(self, key: str) -> FieldError:
        """The same error under the front end's name for the field."""
        return FieldError(key, self.detail)
