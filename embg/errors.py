"""Errors a user can act on. The CLIs print them as one line and exit with status 2."""

from __future__ import annotations


class EmbgError(Exception):
    """A problem with the user's input or environment: printed as one line, exit status 2."""

    exit_code = 2


class CheckpointError(EmbgError):
    """The checkpoint is missing, malformed or not an EmbeddingGemma we can export exactly."""


class ExportError(EmbgError):
    """Conversion or quantization did not produce what was planned."""
