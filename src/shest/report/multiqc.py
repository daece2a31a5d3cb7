"""MultiQC custom-content tables (``*_mqc.tsv``) with their YAML header.

MultiQC reads the ``#``-prefixed YAML block at the top of a file whose name ends in
``_mqc.tsv`` and renders the table below it as a report section; see
https://docs.seqera.io/multiqc/custom_content.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from shest.io.atomic import atomic_path


def write_mqc_table(
    path: str | os.PathLike,
    section_id: str,
    section_name: str,
    description: str,
    rows: Mapping[str, Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    headers: Mapping[str, Mapping[str, Any]] | None = None,
    plot_type: str = "table",
    pconfig: Mapping[str, Any] | None = None,
) -> None:
    """Write a MultiQC custom-content table atomically.

    Parameters
    ----------
    rows
        One entry per sample (the first column), mapping column name to value.
    columns
        Column order; defaults to the keys of the first row.
    headers
        MultiQC per-column settings (``title``, ``description``, ``format``,
        ``suffix``, ``min``, ``max``, ``scale``).
    plot_type
        ``table`` or ``bargraph``; other MultiQC plot types work as long as the rows
        have the shape that type expects.
    """
    if columns is None:
        columns = list(next(iter(rows.values()), {}).keys())
    header: dict[str, Any] = {
        "id": section_id,
        "section_name": section_name,
        "description": description,
        "plot_type": plot_type,
    }
    config = {"id": f"{section_id}_plot", "title": f"SHEST: {section_name}"}
    config.update(pconfig or {})
    header["pconfig"] = config
    if headers:
        header["headers"] = {key: dict(value) for key, value in headers.items()}
    yaml_text = yaml.safe_dump(header, sort_keys=False, allow_unicode=True, width=1000)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as handle:
        for line in yaml_text.splitlines():
            handle.write(f"# {line}\n")
        handle.write("\t".join(["Sample", *columns]) + "\n")
        for sample, values in rows.items():
            cells = [_format_cell(values.get(column)) for column in columns]
            handle.write("\t".join([str(sample), *cells]) + "\n")


def _format_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.6g}"
    return str(value).replace("\t", " ").replace("\n", " ")
