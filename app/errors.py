"""Domain exceptions; the CLI prints them as one line, the web layer maps them to HTTP."""

from __future__ import annotations


# Not an AifarmError: it never reaches a user; the run that gets it stops, as a newer attempt owns the task.
class Fenced(Exception):
    """A write named a task's generation (or coordinator) that is no longer current, so it was refused."""


class AifarmError(Exception):
    """Base of every error the product reports to a user without a traceback."""

    exit_code = 1


class ConfigError(AifarmError):
    """A setting has a value that cannot be used."""

    exit_code = 2


class DatabaseUrlError(AifarmError):
    """The database URL is malformed or names an unsupported backend."""

    exit_code = 2


class DatabaseUnavailable(AifarmError):
    """The database server cannot be reached or refused the login."""

    exit_code = 3


class DatabaseDamaged(DatabaseUnavailable):
    """The embedded database file is damaged (truncated, overwritten, corrupt)."""


class SchemaError(AifarmError):
    """The database schema is missing, too old or too new for this version."""

    exit_code = 4


class ValidationError(AifarmError):
    """Input was rejected; `fields` maps each bad field to what is wrong with it."""

    exit_code = 2

    def __init__(self, message: str, fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.fields = dict(fields or {})


class NotFound(AifarmError):
    """The named object does not exist."""

    exit_code = 5


class Conflict(AifarmError):
    """The request cannot be applied to the object in its current state."""

    exit_code = 6
