"""User-facing errors: one line that names the key or file and what would be valid."""

from __future__ import annotations


class DistillabError(ValueError):
    """A mistake in configuration or input. Entry points print it as one line and exit non-zero."""
