"""Exceptions that carry what a user needs to fix the problem."""

from __future__ import annotations


class PrivquantError(Exception):
    """Base class for errors privquant raises on bad input."""


class DatasetError(PrivquantError):
    """A dataset file is missing, truncated or corrupt.

    The message always names the file, what was expected and how to get it.
    """

    def __init__(self, path: object, problem: str, how_to_get: str | None = None) -> None:
        self.path = str(path)
        self.problem = problem
        self.how_to_get = how_to_get
        msg = f"{self.path}: {problem}"
        if how_to_get:
            msg += f"\n  How to get it: {how_to_get}"
        super().__init__(msg)


class ConfigError(PrivquantError, ValueError):
    """A configuration value is invalid; the message names the field and allowed values."""
