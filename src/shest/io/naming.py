"""Sample names: the prefix of every output file of a slide."""

from __future__ import annotations

import re
from pathlib import Path

from shest.errors import InputError

SAMPLE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SLIDE_SUFFIXES = (".ome.tiff", ".ome.tif")
# Maximum sample name length. File systems allow 255 bytes per file name, and the longest
# names built from a sample (a temporary name around S.chunk-NNNN.cells.parquet) add
# about 60 characters to it.
MAX_SAMPLE_LENGTH = 128


def sample_name(sample: str | None, slide: Path) -> str:
    """Return a validated sample name, derived from the slide file name when not given.

    Parameters
    ----------
    sample
        The name to check, or ``None`` to derive one from ``slide``.
    slide
        Input file whose name, without its suffix (``.ome.tiff`` counts as one), gives
        the default. Characters other than letters, digits, ``.``, ``_`` and ``-``
        become ``_`` there.

    Raises
    ------
    InputError
        ``sample`` contains other characters, does not start with a letter or digit,
        or is longer than :data:`MAX_SAMPLE_LENGTH` characters.
    """
    if sample is None:
        name = slide.name
        for suffix in SLIDE_SUFFIXES:
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
                break
        else:
            name = slide.stem
        sample = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")[:MAX_SAMPLE_LENGTH].rstrip("._-") or "sample"
    if not SAMPLE_PATTERN.match(sample):
        raise InputError(
            f"Invalid sample name {sample!r}: use letters, digits, '.', '_' and '-' only, "
            "starting with a letter or digit (no spaces or slashes)."
        )
    if len(sample) > MAX_SAMPLE_LENGTH:
        raise InputError(
            f"Sample name {sample[:40]}... is {len(sample)} characters long; give one of at most "
            f"{MAX_SAMPLE_LENGTH} with --sample, because output file names add to it and file systems allow "
            "255 bytes per name."
        )
    return sample
