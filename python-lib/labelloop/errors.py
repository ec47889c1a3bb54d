"""Exceptions the CLI and the API turn into one clear line / a JSON error."""

from __future__ import annotations


class LabelloopError(Exception):
    """A user-facing error: the message says what was wrong and how to fix it."""

    status = 400


class DescriptorError(LabelloopError):
    """A plugin descriptor or project.json is malformed or violates its schema."""

    def __init__(self, path: str, reason: str, pointer: str | None = None, line: int | None = None):
        self.path = str(path)
        self.pointer = pointer
        self.line = line
        self.reason = reason
        where = self.path
        if line is not None:
            where += f", line {line}"
        if pointer is not None:
            where += f", at {pointer or '/'}"
        super().__init__(f"{where}: {reason}")


class ConfigError(LabelloopError):
    """A component's config (params) does not validate."""


class NotFoundError(LabelloopError):
    """An unknown dataset, folder, model, recipe, component, webapp or item."""

    status = 404


class ConflictError(LabelloopError):
    """The request conflicts with the current state (exists already, locked, ...)."""

    status = 409


class UntrustedModelError(LabelloopError):
    """A saved model file holds types that are not trusted, or is not a skops file."""
