"""Built-in training recipes (models and datasets); imported by worker processes only, never by the agent."""

from __future__ import annotations


class RecipeError(Exception):
    """A recipe cannot run with this config or data (retrying will not help)."""


class SourceNotAllowed(RecipeError):
    """A dataset source outside what this machine allows (dataset_dirs, the farm's dataset hosts)."""


class DataError(Exception):
    """Data could not be fetched or verified (retrying may help: network, missing file)."""


__all__ = ["DataError", "RecipeError", "SourceNotAllowed"]
