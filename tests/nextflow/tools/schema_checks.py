"""JSON-schema checks of an nf-core-style pipeline, without Nextflow (needs only `jsonschema`).

Usage:
    schema_checks.py PIPELINE_DIR [--profile default|test|test_full ...]
        Both schemas are valid draft 2020-12; every samplesheet column has an errorMessage;
        the params of `nextflow config` (offline shim) and nextflow_schema.json agree for
        the default, `test` and `test_full` profiles; assets/samplesheet*.csv are valid.
    schema_checks.py samplesheet SHEET SCHEMA [--base DIR]
        Validate one samplesheet the way nf-schema does before a run starts.

nf-schema keywords that jsonschema does not know are checked here as nf-schema defines
them: `exists` (the file or folder of a path-format value must exist) and
`uniqueEntries` (no two rows share the values of the listed columns). Relative paths
are resolved against --base (the pipeline's --slide_dir), else the current directory.
CSV cells are converted the way nf-schema converts them: empty cells are left out and
numbers become numbers where the column's type expects one.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import sys
from pathlib import Path

from jsonschema import Draft202012Validator, ValidationError, validators

PATH_FORMATS = {"file-path", "directory-path", "path"}
PROFILES = ([], ["-profile", "test"], ["-profile", "test_full"])


def _resolve(value: str, base: Path | None) -> Path:
    path = Path(value)
    return path if path.is_absolute() or base is None else base / path


def make_validator(schema: dict, base: Path | None):
    """Return a draft 2020-12 validator class that also checks `exists` and `uniqueEntries`."""

    def exists(validator, expected, instance, schema_node):
        if not expected or not isinstance(instance, str) or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", instance):
            return
        path = _resolve(instance, base)
        fmt = schema_node.get("format")
        if fmt == "file-path":
            found = path.is_file()
        elif fmt == "directory-path":
            found = path.is_dir()
        else:
            found = path.exists()
        if not found:
            yield ValidationError(f"the file or directory '{instance}' does not exist ({path})")

    def unique_entries(validator, columns, instance, schema_node):
        if not isinstance(instance, list):
            return
        seen: dict[tuple, int] = {}
        for row_number, row in enumerate(instance, start=1):
            if not isinstance(row, dict):
                continue
            key = tuple(row.get(column) for column in columns)
            if key in seen:
                yield ValidationError(
                    f"row {row_number} repeats {dict(zip(columns, key))} of row {seen[key]}: values of {columns} must be unique"
                )
            else:
                seen[key] = row_number

    extended = validators.extend(Draft202012Validator, {"exists": exists, "uniqueEntries": unique_entries})
    return extended(schema)


def read_samplesheet(sheet: Path, schema: dict) -> list[dict]:
    """Read a CSV samplesheet into the list of row objects that nf-schema validates."""
    properties = schema.get("items", {}).get("properties", {})
    rows = []
    with sheet.open(newline="", encoding="utf-8") as handle:
        for raw in csv.DictReader(handle):
            row = {}
            for column, value in raw.items():
                if column is None or value is None or value.strip() == "":
                    continue
                value = value.strip()
                kinds = properties.get(column, {}).get("type", "string")
                kinds = kinds if isinstance(kinds, list) else [kinds]
                if "integer" in kinds and re.fullmatch(r"[-+]?\d+", value):
                    row[column] = int(value)
                elif "number" in kinds and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", value):
                    row[column] = float(value)
                elif "boolean" in kinds and value.lower() in ("true", "false"):
                    row[column] = value.lower() == "true"
                else:
                    row[column] = value
            rows.append(row)
    return rows


def samplesheet_errors(sheet: Path, schema: dict, base: Path | None) -> list[str]:
    """Return one message per problem of a samplesheet, with the errorMessage of its column."""
    rows = read_samplesheet(sheet, schema)
    if not rows:
        return [f"{sheet.name}: no rows"]
    messages = []
    for error in make_validator(schema, base).iter_errors(rows):
        column_schema = error.schema if isinstance(error.schema, dict) else {}
        hint = column_schema.get("errorMessage")
        row = f"row {error.path[0] + 1}" if error.path else "samplesheet"
        column = f" column '{error.path[1]}'" if len(error.path) > 1 else ""
        messages.append(f"{sheet.name}: {row}{column}: {error.message}" + (f" ({hint})" if hint else ""))
    return messages


def flat_params_schema(pschema: dict) -> dict:
    """Merge the nf-schema `$defs` groups of nextflow_schema.json into one object schema."""
    props = {k: v for group in pschema.get("$defs", {}).values() for k, v in group.get("properties", {}).items()}
    props.update(pschema.get("properties", {}))
    required = [r for group in pschema.get("$defs", {}).values() for r in group.get("required", [])]
    return {"type": "object", "properties": props, "required": required}


def config_params(root: Path, profile: list[str]) -> dict:
    shim = Path(__file__).with_name("nextflow")
    out = subprocess.run([str(shim), "config", *profile, "-o", "json", str(root)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout).get("params", {})


def check_pipeline(root: Path, profiles: list[str] | None = None) -> list[str]:
    errors = []
    pschema = json.loads((root / "nextflow_schema.json").read_text())
    ischema = json.loads((root / "assets" / "schema_input.json").read_text())
    for name, schema in [("nextflow_schema.json", pschema), ("assets/schema_input.json", ischema)]:
        try:
            Draft202012Validator.check_schema(schema)
        except Exception as exc:  # jsonschema raises SchemaError with a message
            errors.append(f"{name}: not a valid draft 2020-12 schema: {getattr(exc, 'message', exc)}")
    if errors:
        return errors

    for column, column_schema in ischema.get("items", {}).get("properties", {}).items():
        if "errorMessage" not in column_schema:
            errors.append(f"assets/schema_input.json: column '{column}' has no errorMessage")

    flat = flat_params_schema(pschema)
    props = flat["properties"]
    test_params = {}
    selected = [p for p in PROFILES if profiles is None or (p[-1] if p else "default") in profiles]
    for profile in selected:
        name = profile[-1] if profile else "default"
        params = config_params(root, profile)
        if name == "test":
            test_params = params
        extra = sorted(set(params) - set(props))
        missing = sorted(set(props) - set(params))
        if extra:
            errors.append(f"params in config but not in schema ({name}): {extra}")
        if missing:
            errors.append(f"params in schema but not in config ({name}): {missing}")
        # A test profile must give every required parameter except --outdir, which
        # nf-core test profiles leave to the command line.
        for error in Draft202012Validator(flat).iter_errors({k: v for k, v in params.items() if v is not None}):
            if error.validator == "required" and (not profile or "'outdir'" in error.message):
                continue
            errors.append(f"config params ({name}): {error.json_path}: {error.message}")
        if not profile:
            for key, spec in props.items():
                if "default" in spec and key in params and params[key] != spec["default"]:
                    errors.append(f"default of '{key}' differs: schema {spec['default']!r}, config {params[key]!r}")

    if "test" not in [p[-1] for p in selected if p]:
        test_params = config_params(root, ["-profile", "test"])
    base = Path(test_params["slide_dir"]) if test_params.get("slide_dir") else None
    sheets = sorted((root / "assets").glob("samplesheet*.csv"))
    if not sheets:
        errors.append("no example samplesheet assets/samplesheet*.csv")
    if base is not None and not base.is_dir():
        print(f"NOTE: test data folder {base} not found; samplesheet files are not checked for existence")
        base = None
        ischema = json.loads(json.dumps(ischema).replace('"exists": true', '"exists": false'))
    for sheet in sheets:
        errors.extend(samplesheet_errors(sheet, ischema, base))
    return errors


def main(argv: list[str]) -> int:
    if argv and argv[0] == "samplesheet":
        parser = argparse.ArgumentParser(prog="schema_checks.py samplesheet")
        parser.add_argument("sheet", type=Path)
        parser.add_argument("schema", type=Path)
        parser.add_argument("--base", type=Path, default=None)
        args = parser.parse_args(argv[1:])
        errors = samplesheet_errors(args.sheet, json.loads(args.schema.read_text()), args.base)
        print("\n".join(errors) or f"{args.sheet.name}: valid")
        return 1 if errors else 0
    parser = argparse.ArgumentParser(prog="schema_checks.py")
    parser.add_argument("root", type=Path, nargs="?", default=Path("."))
    parser.add_argument("--profile", action="append", choices=["default", "test", "test_full"],
                        help="check only these profiles (default: all three)")
    args = parser.parse_args(argv)
    errors = check_pipeline(args.root, args.profile)
    print("\n".join(errors) or "schema checks: OK")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
