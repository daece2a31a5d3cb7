"""Notes on metrics that a slide leaves undefined, kept for the tables, ``uns`` and the log."""

from __future__ import annotations

import logging

import pandas as pd

log = logging.getLogger(__name__)


class Notes:
    """Ordered record of why an analysis or metric was not computed on a slide.

    Each note is logged as a warning when added, so the log and the written
    ``niche_notes`` table carry the same sentences.
    """

    def __init__(self, sample: str) -> None:
        self.sample = sample
        self._items: list[tuple[str, str]] = []

    def add(self, analysis: str, message: str) -> str:
        """Record ``message`` for ``analysis`` (e.g. ``enrichment``) and return it."""
        self._items.append((analysis, message))
        log.warning("%s: %s: %s", self.sample, analysis, message)
        return message

    def for_analysis(self, analysis: str) -> list[str]:
        """Return the messages recorded for one analysis, in order."""
        return [message for name, message in self._items if name == analysis]

    def joined(self, analysis: str) -> str:
        """Return the messages of one analysis joined into one line ('' when none)."""
        return " ".join(self.for_analysis(analysis))

    def table(self) -> pd.DataFrame:
        """Return the notes as a table with columns ``analysis`` and ``note``."""
        return pd.DataFrame(self._items, columns=["analysis", "note"])

    def __len__(self) -> int:
        return len(self._items)
