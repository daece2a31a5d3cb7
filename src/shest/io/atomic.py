"""Atomic output: write under a temporary name, rename into place only on success.

A stage that fails half-way therefore leaves no truncated file under a final name
that a rerun, ``-resume`` or a user could mistake for a result.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    The temporary file keeps the final suffix (``.h5ad``, ``.png``, ``.gz``) so that
    libraries choosing a format from the file name behave the same. On an exception
    the temporary file is removed and ``path`` is left untouched.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(
        prefix=f".{final.stem}.", suffix=f".tmp{''.join(final.suffixes)}", dir=final.parent
    )
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _set_default_mode(tmp)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _set_default_mode(path: Path) -> None:
    """Give a finished temporary file the mode a plain ``open()`` would (mkstemp makes it 0600)."""
    if not path.exists():
        return
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


class OutputSet:
    """A group of output files that appear together or not at all.

    Use :meth:`path` to get a temporary name for each final file. When the ``with``
    block succeeds every temporary file is renamed into place; when it raises, all
    of them are deleted and no final file is created or replaced.

    Examples
    --------
    >>> with OutputSet() as out:  # doctest: +SKIP
    ...     table.to_csv(out.path("s1.csv"))
    ...     figure.savefig(out.path("s1.png"))
    """

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []

    def path(self, final: str | os.PathLike) -> Path:
        final = Path(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp_name = tempfile.mkstemp(
            prefix=f".{final.stem}.", suffix=f".tmp{''.join(final.suffixes)}", dir=final.parent
        )
        os.close(handle)
        tmp = Path(tmp_name)
        self._pending.append((tmp, final))
        return tmp

    @property
    def final_paths(self) -> list[Path]:
        return [final for _, final in self._pending]

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            for tmp, final in self._pending:
                _set_default_mode(tmp)
                os.replace(tmp, final)
        else:
            for tmp, _ in self._pending:
                tmp.unlink(missing_ok=True)
        self._pending.clear()
