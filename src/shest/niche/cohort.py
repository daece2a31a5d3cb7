"""Combine the per-slide niche tables of a cohort into one table per metric.

Each per-slide table already has a ``sample`` column (and a ``demo`` column), so a
cohort table is the row-wise concatenation of one metric's tables, sorted by
sample. Niche labels (``N1``, ``N2``, ...) are fitted per slide and do not denote
the same niche on two slides.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from shest.errors import InputError
from shest.io.atomic import OutputSet
from shest.niche.report import write_table

log = logging.getLogger(__name__)

TABLE_PATTERN = re.compile(r"^(?P<sample>.+)\.niche_(?P<metric>[a-z0-9_]+)\.csv$")


def find_tables(inputs: Iterable[Path]) -> dict[str, list[Path]]:
    """Return the per-slide tables found in ``inputs`` (files or folders), grouped by metric.

    Raises
    ------
    InputError
        A path does not exist, a file is not named ``S.niche_<metric>.csv``, or no
        table is found at all.
    """
    found: dict[str, list[Path]] = {}
    seen: set[Path] = set()
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            candidates = sorted(p for p in item.rglob("*.niche_*.csv") if not p.name.startswith("."))
        elif item.is_file():
            if not TABLE_PATTERN.match(item.name):
                raise InputError(
                    f"{item} is not a per-slide niche table: expected a name like S.niche_<metric>.csv "
                    "as written by `shest niche`."
                )
            candidates = [item]
        else:
            raise InputError(f"Input not found: {item}. Give S.niche_<metric>.csv files or folders holding them.")
        for path in candidates:
            match = TABLE_PATTERN.match(path.name)
            resolved = path.resolve()
            if match is None or resolved in seen:
                continue
            seen.add(resolved)
            found.setdefault(match["metric"], []).append(path)
    if not found:
        raise InputError(
            f"No S.niche_<metric>.csv tables found in {', '.join(str(p) for p in inputs)}; run `shest niche` first."
        )
    return found


def combine_tables(tables: dict[str, list[Path]]) -> dict[str, pd.DataFrame]:
    """Concatenate the tables of each metric, sorted by sample (stable within a sample).

    Raises
    ------
    InputError
        A table has no ``sample`` column, or two files hold the same sample for the
        same metric.
    """
    combined: dict[str, pd.DataFrame] = {}
    samples_by_metric: dict[str, set[str]] = {}
    for metric in sorted(tables):
        frames = []
        owner: dict[str, Path] = {}
        for path in tables[metric]:
            try:
                # Only empty cells are missing values: a sample may be called "NA" or "None".
                frame = pd.read_csv(path, dtype={"sample": str}, keep_default_na=False, na_values=[""])
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
                raise InputError(f"Could not read {path} as a CSV table: {exc}") from None
            if "sample" not in frame.columns:
                raise InputError(f"{path} has no 'sample' column; give the tables written by `shest niche`.")
            for sample in frame["sample"].dropna().unique():
                if sample in owner:
                    raise InputError(
                        f"Sample {sample!r} appears in two {metric} tables: {owner[sample]} and {path}. "
                        "Give each slide's tables once."
                    )
                owner[sample] = path
            frames.append(frame)
        table = pd.concat(frames, ignore_index=True, sort=False)
        samples_by_metric[metric] = set(owner)
        table = table.sort_values("sample", kind="stable").reset_index(drop=True)
        if "demo" in table.columns:
            table = table[[c for c in table.columns if c != "demo"] + ["demo"]]
            demo_samples = sorted(table.loc[table["demo"].astype(str).str.lower() == "true", "sample"].unique())
            if demo_samples and metric == "summary":
                log.warning("Demo results (not from the SHEST weights) in the cohort: %s", ", ".join(demo_samples))
        combined[metric] = table
        log.info("%s: %d rows from %d slides", metric, len(table), len(frames))
    _warn_about_missing_tables(samples_by_metric)
    return combined


def _warn_about_missing_tables(samples_by_metric: dict[str, set[str]]) -> None:
    """Log a warning for every metric that lacks the table of a sample that other metrics have."""
    every_sample = set().union(*samples_by_metric.values()) if samples_by_metric else set()
    for metric, samples in sorted(samples_by_metric.items()):
        missing = sorted(every_sample - samples)
        if missing:
            log.warning(
                "No %s table for %s, whose other tables are present; those slides are absent from cohort_%s. "
                "Check that every S.niche_%s.csv was copied.", metric, ", ".join(missing), metric, metric,
            )  # fmt: skip


def write_cohort_tables(combined: dict[str, pd.DataFrame], outdir: Path, name: str = "cohort") -> list[Path]:
    """Write ``<name>_<metric>.csv`` for every metric, all or none."""
    outdir = Path(outdir)
    paths = []
    with OutputSet() as out:
        for metric, table in combined.items():
            final = outdir / f"{name}_{metric}.csv"
            write_table(table, out.path(final))
            paths.append(final)
    return paths
