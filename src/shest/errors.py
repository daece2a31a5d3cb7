"""Exceptions that the CLI turns into a one-line message and a non-zero exit code.

Every message names the value that failed and what the user can do about it.
"""

from __future__ import annotations


class ShestError(Exception):
    """Base class for errors that stop a run with a clear message (exit code 1)."""

    exit_code = 1


class InputError(ShestError):
    """Invalid user input: a missing file, a malformed table, an out-of-range parameter."""


class SlideError(ShestError):
    """A slide that cannot be opened or read (missing, corrupt, unsupported format)."""


class MppError(ShestError):
    """Pixel size (µm/px) that is missing or outside the plausible range."""


class CheckpointError(ShestError):
    """Model weights that are missing, unreadable or do not match the expected shapes."""


class EmptyResultError(ShestError):
    """A stage found nothing to work on (for example no nuclei) and cannot continue.

    Its exit code, 3, lets a workflow manager tell a slide without cells, which it
    may skip, from a failure.
    """

    exit_code = 3
