"""Import boundaries: light modules stay free of torch, and the library never imports the CLI."""

from __future__ import annotations

import subprocess
import sys


def imported_after(code: str, prefix: str) -> list[str]:
    """Run ``code`` in a fresh interpreter and return the imported modules whose name starts with ``prefix``."""
    script = f"import sys\n{code}\nprint('imported:', *sorted(m for m in sys.modules if m.startswith({prefix!r})))\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return result.stdout.splitlines()[-1].split()[1:]


def test_model_constants_import_no_torch():
    code = "from shest.model.constants import HOPTIMUS0_ID, LUNG_CLASSES, LUNG_COLORS, UNASSIGNED_COLOR, UNASSIGNED_NAME"
    assert imported_after(code, "torch") == []


def test_constant_users_import_no_torch():
    code = "import shest.cli.common, shest.cli.convert_checkpoint, shest.niche.cells, shest.niche.synthetic"
    assert imported_after(code, "torch") == []


def test_model_package_names_still_import():
    import shest.model
    from shest.model import load_model
    from shest.model.network import load_model as network_load_model

    assert load_model is network_load_model


def test_model_package_unknown_name_raises():
    import shest.model

    assert not hasattr(shest.model, "no_such_name")


def test_library_does_not_import_cli():
    # Every module outside shest/cli, found on disk: pkgutil.walk_packages would import shest.cli itself.
    code = (
        "import importlib, pathlib, shest\n"
        "root = pathlib.Path(shest.__file__).parent\n"
        "for path in sorted(root.rglob('*.py')):\n"
        "    parts = path.relative_to(root.parent).with_suffix('').parts\n"
        "    if parts[1] not in ('cli', '__main__'):\n"
        "        importlib.import_module('.'.join(parts[:-1] if parts[-1] == '__init__' else parts))\n"
    )
    assert imported_after(code, "shest.cli") == []
