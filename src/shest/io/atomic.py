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
    block succeeds, every temporary file is checked and then renamed into place. When
    it raises, all of them are deleted and no final file is created or replaced.

    The checks run before the first rename. Every temporary file must exist and
    contain data (unless :meth:`path` was given ``allow_empty=True``), and no final
    path may be a folder. If a check fails, every temporary file is deleted, no final
    file is touched, and ``OSError`` names the files at fault. If a rename fails
    later, the temporary files not yet renamed are deleted and ``OSError`` names the
    final files already replaced.

    NOTE: each rename is atomic for its own file, not for the group. A rename that
    fails after the checks (for example after a permission change) leaves the earlier
    files of the group replaced, and the error lists them. A crash between two
    renames leaves them replaced with no error at all.

    Examples
    --------
    >>> with OutputSet() as out:  # doctest: +SKIP
    ...     table.to_csv(out.path("s1.csv"))
    ...     figure.savefig(out.path("s1.png"))
    """

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path, bool]] = []

    def path(self, final: str | os.PathLike, allow_empty: bool = False) -> Path:
        """Return a temporary path beside ``final``, renamed to ``final`` when the group succeeds.

        Parameters
        ----------
        final
            Final path of the file.
        allow_empty
            Accept an empty file. By default an empty temporary file means that its
            writer wrote nothing, and the whole group fails.
        """
        final = Path(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp_name = tempfile.mkstemp(
            prefix=f".{final.stem}.", suffix=f".tmp{''.join(final.suffixes)}", dir=final.parent
        )
        os.close(handle)
        tmp = Path(tmp_name)
        self._pending.append((tmp, final, allow_empty))
        return tmp

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        pending, self._pending = self._pending, []
        if exc_type is not None:
            _remove([tmp for tmp, _, _ in pending])
            return
        problems = [problem for entry in pending if (problem := _check_temporary(*entry))]
        if problems:
            _remove([tmp for tmp, _, _ in pending])
            raise OSError(f"The output group was not written and no final file was touched: {'; '.join(problems)}.")
        replaced: list[Path] = []
        for index, (tmp, final, _) in enumerate(pending):
            try:
                _set_default_mode(tmp)
                os.replace(tmp, final)
            except OSError as error:
                _remove([tmp for tmp, _, _ in pending[index:]])
                done = ", ".join(str(path) for path in replaced) or "none"
                raise OSError(
                    f"Failed to rename {tmp} to {final}: {error}. The remaining temporary files of its output "
                    f"group were deleted. Final files already replaced: {done}."
                ) from error
            replaced.append(final)


def _check_temporary(tmp: Path, final: Path, allow_empty: bool) -> str | None:
    """Return why ``tmp`` cannot replace ``final``, or None when it can."""
    if not tmp.is_file():
        return f"{final} was never written (its temporary file {tmp.name} was deleted)"
    if not allow_empty and tmp.stat().st_size == 0:
        return f"{final} would be empty (its writer wrote nothing)"
    if final.is_dir():
        return f"{final} is a folder (move it away or choose another output folder)"
    return None


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
